"""A small UDP forwarder of the test's own that drops a share of the RTP packets going to one client.

The client is pointed at the forwarder instead of the server (its answer SDP's host candidate is
rewritten); the forwarder relays both ways from one socket, so the server sees the forwarder as the
client. Only RTP (not STUN, DTLS or RTCP) is dropped, so connection set-up is not what gets tested.
"""

from __future__ import annotations

import asyncio
import random
import re


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
