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


ROUTER_CLIENT_SIDE = "10.78.0.1"
NATTED_ADDRESS = "10.78.0.2"


class ReachLab:
    """The reach lab: a server namespace and a client namespace, joined directly by a veth pair (the
    client at ``WEAK_ADDRESS``), or with ``nat=True`` through a router namespace that masquerades the client
    (``masquerade random``: random source ports, as carrier NATs do) so the server never sees the client's
    own address; with ``one_to_one=True`` the router is a cloud VM's 1:1 NAT instead (the client namespace is
    the VM: it sends as, and is reached at, ``WEAK_ADDRESS`` on every port). ``firewall()`` lets into the
    server only what a cloud security group would (HTTP, the one UDP port, TURN); ``block_udp()`` drops
    every UDP datagram the client sends out (an office network)."""

    def __init__(self, nat: bool = False, one_to_one: bool = False) -> None:
        tag = uuid.uuid4().hex[:6]
        self.nat = nat or one_to_one
        self.one_to_one = one_to_one
        self.server, self.client, self.router = f"lr-rs-{tag}", f"lr-rc-{tag}", f"lr-rr-{tag}"
        self.server_if = f"lrs{tag}"
        self._names = [self.server, self.client] + ([self.router] if self.nat else [])

    def __enter__(self) -> ReachLab:
        try:
            for ns in self._names:
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            peer = self.router if self.nat else self.client
            _run("ip", "link", "add", self.server_if, "netns", self.server, "type", "veth", "peer", "name",
                 "lr-up", "netns", peer)
            _run("ip", "-n", self.server, "addr", "add", f"{SERVER_ADDRESS}/30", "dev", self.server_if)
            _run("ip", "-n", peer, "addr", "add", f"{WEAK_ADDRESS}/30", "dev", "lr-up")
            _run("ip", "-n", self.server, "link", "set", self.server_if, "up")
            _run("ip", "-n", peer, "link", "set", "lr-up", "up")
            if self.nat:
                _run("ip", "link", "add", "lr-down", "netns", self.router, "type", "veth", "peer", "name",
                     "lr-nic", "netns", self.client)
                _run("ip", "-n", self.router, "addr", "add", f"{ROUTER_CLIENT_SIDE}/30", "dev", "lr-down")
                _run("ip", "-n", self.client, "addr", "add", f"{NATTED_ADDRESS}/30", "dev", "lr-nic")
                _run("ip", "-n", self.router, "link", "set", "lr-down", "up")
                _run("ip", "-n", self.client, "link", "set", "lr-nic", "up")
                _run("ip", "-n", self.client, "route", "add", "default", "via", ROUTER_CLIENT_SIDE)
                _run("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
                _run("ip", "netns", "exec", self.router, "nft", "add table ip nat")
                _run("ip", "netns", "exec", self.router, "nft",
                     "add chain ip nat post { type nat hook postrouting priority 100 ; }")
                if self.one_to_one:  # a cloud VM's NAT: the router's address is the inside host's, every port
                    _run("ip", "netns", "exec", self.router, "nft",
                         f'add rule ip nat post oifname "lr-up" snat to {WEAK_ADDRESS}')
                    _run("ip", "netns", "exec", self.router, "nft",
                         "add chain ip nat pre { type nat hook prerouting priority -100 ; }")
                    _run("ip", "netns", "exec", self.router, "nft",
                         f'add rule ip nat pre iifname "lr-up" dnat to {NATTED_ADDRESS}')
                else:
                    _run("ip", "netns", "exec", self.router, "nft",
                         'add rule ip nat post oifname "lr-up" masquerade random')
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self._names:
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)

    def in_server(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server, *argv]

    def in_client(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.client, *argv]

    def firewall(self, tcp: list[int], udp: list[int]) -> None:
        """The server accepts from outside only these ports (and what answers its own traffic)."""
        nft = ["ip", "netns", "exec", self.server, "nft"]
        _run(*nft, "add table inet reach")
        _run(*nft, "add chain inet reach in { type filter hook input priority 0 ; policy accept ; }")
        _run(*nft, f'add rule inet reach in iifname "{self.server_if}" ct state established,related accept')
        for proto, ports in (("tcp", tcp), ("udp", udp)):
            listed = ", ".join(map(str, ports))
            _run(*nft, f'add rule inet reach in iifname "{self.server_if}" {proto} dport {{ {listed} }} accept')
        _run(*nft, f'add rule inet reach in iifname "{self.server_if}" counter drop')

    def block_udp(self) -> None:
        """The client's network lets no UDP out (only TCP: the page, the WebSocket, TURN over TCP)."""
        nft = ["ip", "netns", "exec", self.client, "nft"]
        _run(*nft, "add table inet office")
        _run(*nft, "add chain inet office out { type filter hook output priority 0 ; policy accept ; }")
        _run(*nft, 'add rule inet office out oifname != "lo" meta l4proto udp counter drop')

    def counters(self, namespace: str) -> str:
        return subprocess.run(["ip", "netns", "exec", namespace, "nft", "list", "ruleset"], capture_output=True,
                              text=True).stdout
