"""Small UDP forwarders of the tests' own: ``LossyForwarder`` drops a share of the RTP packets going to one
client; ``SlowPath`` delays and drops any datagram, both ways (benchmarks/call_setup.py's lab path, and
the handshake repair tests, which drop one chosen DTLS flight).

LossyForwarder:
The client is pointed at the forwarder instead of the server (its answer SDP's host candidate is
rewritten); the forwarder relays both ways from one socket, so the server sees the forwarder as the
client. Only RTP (not STUN, DTLS or RTCP) is dropped, so connection set-up is not what gets tested.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any


class LossyForwarder(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int], loss: float, seed: int = 7) -> None:
        self.server = server
        self.loss = loss
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.forwarded = 0
        self.dropped = 0
        self._random = random.Random(seed)

    @classmethod
    async def start(cls, server: tuple[str, int], loss: float) -> LossyForwarder:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(server, loss), local_addr=("127.0.0.1", 0))
        return protocol

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.server:
            if self.client is None:
                return
            is_rtp = len(data) > 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
            if is_rtp and self._random.random() < self.loss:
                self.dropped += 1
                return
            self.forwarded += 1
            self.transport.sendto(data, self.client)
        else:
            self.client = addr
            self.transport.sendto(data, self.server)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_HOST_CANDIDATE = re.compile(r"(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 )(\d+)( typ host)")


def server_port_in(sdp: str) -> int:
    match = _HOST_CANDIDATE.search(sdp)
    assert match, "no loopback host candidate in the answer"
    return int(match.group(2))


def route_through(sdp: str, port: int) -> str:
    """Point every loopback host candidate of ``sdp`` at ``port``."""
    return _HOST_CANDIDATE.sub(lambda m: f"{m.group(1)}{port}{m.group(3)}", sdp)


class SlowPath(asyncio.DatagramProtocol):
    """One peer and the other behind one socket of the test's own: every datagram held ``one_way``
    seconds, ``loss`` of them dropped at random, and any for which ``drop(data, from_client)`` says so.
    The client is the peer whose SDP was routed here first (``client`` set by the caller); whoever else
    sends is the server."""

    def __init__(self, one_way: float = 0.0, loss: float = 0.0, rng: random.Random | None = None,
                 drop: Callable[[bytes, bool], bool] | None = None) -> None:
        self.one_way, self.loss, self.rng = one_way, loss, rng or random.Random(7)
        self.drop = drop
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    @classmethod
    async def start(cls, **kwargs: Any) -> SlowPath:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(**kwargs), local_addr=("127.0.0.1", 0))
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self.client:
            self.server = addr  # the server may check this path before its answer reached the client
        from_client = addr == self.client
        if self.rng.random() < self.loss or (self.drop is not None and self.drop(data, from_client)):
            self.dropped += 1
            return
        target = self.server if from_client else self.client
        if target is None:
            return
        if self.one_way:
            asyncio.get_running_loop().call_later(self.one_way, self._send, data, target)
        else:
            self._send(data, target)

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, target)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def sdp_filters(path: SlowPath) -> dict[str, Callable[[str], str]]:
    """``MediaSession`` keywords that put a peer connection's media through ``path``: the server reaches the
    client only through it (the offer), and the client the server (the answer)."""

    def offer_through(sdp: str) -> str:
        path.client = ("127.0.0.1", server_port_in(sdp))
        return route_through(sdp, path.port)

    def answer_through(sdp: str) -> str:
        path.server = ("127.0.0.1", server_port_in(sdp))
        return route_through(sdp, path.port)

    return {"offer_filter": offer_through, "answer_filter": answer_through}
