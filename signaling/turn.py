"""TURN for clients on networks that block UDP: coturn (a real, trusted TURN server) and the time-limited
credentials clients get for it.

Credentials follow the TURN REST API scheme coturn implements with ``use-auth-secret``: the username is
``<expiry in Unix seconds>:<user>`` and the password is base64(HMAC-SHA1(shared secret, username)); coturn
checks both and refuses an expired one. The relay mints them per join (``joined.ice_servers``) and per
WHIP/WHEP session (RFC 9725 §4.6 ``Link: <turn:...>; rel="ice-server"``); a client cannot mint them without
the secret.

``Coturn`` runs one beside the relay (``serve --turn``): a config file of its own (listening ports, the
secret, TLS when the relay has a certificate) that lets it relay to this node's own media addresses only
(every other peer address is denied: a TURN server must not become a way into the operator's network).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def turn_credentials(secret: str, user: str, ttl: float, now: float | None = None) -> tuple[str, str]:
    """(username, password) valid for ``ttl`` seconds from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


@dataclass(frozen=True, slots=True)
class TurnService:
    """What clients are told: the TURN URLs (turn:HOST:PORT?transport=udp|tcp, turns:HOST:PORT) and the
    shared secret their credentials are minted with."""

    urls: tuple[str, ...]
    secret: str
    ttl: float = 3600.0

    def ice_servers(self, user: str) -> list[dict[str, Any]]:
        """The ``iceServers`` entry a client passes to its RTCPeerConnection."""
        username, password = turn_credentials(self.secret, user, self.ttl)
        return [{"urls": list(self.urls), "username": username, "credential": password}]

    def link_headers(self, user: str) -> list[str]:
        """RFC 9725 §4.6 ``Link`` header values, one per URL."""
        username, password = turn_credentials(self.secret, user, self.ttl)
        return [f'<{url}>; rel="ice-server"; username="{username}"; credential="{password}"; '
                f'credential-type="password"' for url in self.urls]


def coturn_config(*, listen: list[str], port: int, tls_port: int | None, secret: str, realm: str,
                  relay_to: list[str], cert: str | None = None, key: str | None = None,
                  relay_ports: tuple[int, int] = (49160, 49200)) -> str:
    """A turnserver.conf for a TURN server that serves this relay only."""
    lines = [f"listening-port={port}", "fingerprint", "use-auth-secret", f"static-auth-secret={secret}",
             f"realm={realm}", "no-cli", "no-multicast-peers", "stale-nonce=600", "no-software-attribute",
             f"min-port={relay_ports[0]}", f"max-port={relay_ports[1]}", "log-file=stdout", "simple-log",
             # Relay to this node's media addresses and nothing else.
             "denied-peer-ip=0.0.0.0-255.255.255.255", "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    lines += [f"listening-ip={address}" for address in listen]
    lines += [f"allowed-peer-ip={address}" for address in relay_to]
    if any(a.startswith("127.") for a in relay_to):
        lines.append("allow-loopback-peers")
    if tls_port and cert and key:
        lines += [f"tls-listening-port={tls_port}", f"cert={cert}", f"pkey={key}", "no-tlsv1", "no-tlsv1_1"]
    else:
        lines.append("no-tls")
        lines.append("no-dtls")
    return "\n".join(lines) + "\n"


class Coturn:
    """A coturn process with a config of its own, for the life of the relay."""

    def __init__(self, config_text: str) -> None:
        self.config_text = config_text
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("turnserver") is not None

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Start it and wait until it listens. Raises RuntimeError if it cannot."""
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("coturn is not installed (apt-get install coturn)")
        self._dir = tempfile.TemporaryDirectory(prefix="live-relay-turn-")
        path = Path(self._dir.name) / "turnserver.conf"
        path.write_text(self.config_text)
        path.chmod(0o600)  # it holds the secret
        self._process = await asyncio.create_subprocess_exec(
            binary, "-c", str(path), "--pidfile", str(Path(self._dir.name) / "turn.pid"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            async with asyncio.timeout(ready_timeout):
                await self._wait_listening()
        except TimeoutError:
            await self.stop()
            raise RuntimeError("coturn did not start listening in time") from None
        self._log_task = asyncio.create_task(self._drain(), name="coturn-log")

    async def _wait_listening(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                raise RuntimeError("coturn exited at start")
            text = line.decode(errors="replace")
            if "listener opened on" in text or "Total General servers" in text:
                return

    async def _drain(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            log.debug("coturn: %s", line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
