"""A weak-network lab of the test's own: two network namespaces joined by a veth pair.

The server side (``server``: the relay, the host, the control viewers, all on loopback) and the weak
side (``weak``: one viewer) share a private /30 that exists only inside the two namespaces, so nothing
ever leaves them. Impairments apply to the server side's end of the veth pair, that is to the weak
viewer's link only: random loss with nftables (either way), a bandwidth cap with tbf (towards the
viewer). Delay is not here: this kernel has no netem (see ``tests/delay_forwarder.py``).

    with NetLab() as lab:
        lab.loss(25)            # % of packets towards the weak viewer dropped
        lab.cap(400)            # kbit/s towards the weak viewer
        lab.clear()
        subprocess.run(lab.in_server([...]))

Needs root, ``ip``, ``nft`` and ``tc``.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid

SERVER_ADDRESS = "10.77.0.1"
WEAK_ADDRESS = "10.77.0.2"


def lab_missing() -> str | None:
    import os

    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if not shutil.which(tool):
            return f"needs `{tool}` (apt-get install {package})"
    return None


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, text=True)


class NetLab:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.server = f"lr-srv-{tag}"
        self.weak = f"lr-weak-{tag}"
        self._server_if, self._weak_if = f"lrs{tag}", f"lrw{tag}"  # interface names: at most 15 bytes

    @classmethod
    def attach(cls, server: str, weak: str, server_interface: str) -> NetLab:
        """The lab another process made (a scenario run inside its server namespace)."""
        lab = cls.__new__(cls)
        lab.server, lab.weak, lab._server_if, lab._weak_if = server, weak, server_interface, ""
        return lab

    @property
    def server_interface(self) -> str:
        return self._server_if

    def __enter__(self) -> NetLab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        _run("ip", "netns", "add", self.server)
        _run("ip", "netns", "add", self.weak)
        try:
            for ns in (self.server, self.weak):
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", self._server_if, "netns", self.server, "type", "veth",
                 "peer", "name", self._weak_if, "netns", self.weak)
            _run("ip", "-n", self.server, "addr", "add", f"{SERVER_ADDRESS}/30", "dev", self._server_if)
            _run("ip", "-n", self.weak, "addr", "add", f"{WEAK_ADDRESS}/30", "dev", self._weak_if)
            _run("ip", "-n", self.server, "link", "set", self._server_if, "up")
            _run("ip", "-n", self.weak, "link", "set", self._weak_if, "up")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        for ns in (self.server, self.weak):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)

    def in_server(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server, *argv]

    def in_weak(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.weak, *argv]

    def _nft(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.server, "nft", *args)

    def loss(self, percent: float, upstream: bool = False) -> None:
        """Drop ``percent`` % of the packets towards the weak viewer (and, with ``upstream``, from it), at random."""
        self.clear_loss()
        self._nft("add", "table", "inet", "lab")
        self._nft("add", "chain", "inet", "lab", "out", "{ type filter hook output priority 0; }")
        # numgen is an integer draw: per-mille keeps fractional percentages.
        rule = ["numgen", "random", "mod", "1000", "<", str(round(percent * 10)), "counter", "drop"]
        self._nft("add", "rule", "inet", "lab", "out", "oifname", self._server_if, *rule)
        if upstream:
            self._nft("add", "chain", "inet", "lab", "in", "{ type filter hook input priority 0; }")
            self._nft("add", "rule", "inet", "lab", "in", "iifname", self._server_if, *rule)

    def clear_loss(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.server, "nft", "delete", "table", "inet", "lab"],
                       check=False, capture_output=True)

    def cap(self, kbit: int) -> None:
        """Limit what goes towards the weak viewer to ``kbit`` kbit/s (a 200 ms queue, then drops)."""
        self.uncap()
        _run("ip", "netns", "exec", self.server, "tc", "qdisc", "add", "dev", self._server_if, "root", "tbf",
             "rate", f"{kbit}kbit", "burst", "16kbit", "latency", "200ms")

    def uncap(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.server, "tc", "qdisc", "del", "dev", self._server_if, "root"],
                       check=False, capture_output=True)

    def clear(self) -> None:
        self.clear_loss()
        self.uncap()
