"""The forwarding loop alone: what one incoming packet costs with N down-tracks.

    python -m benchmarks.forward_micro [--subscribers 25] [--frames 300]

N down-tracks of one published track, each with a real pylibsrtp session and its own UDP socket sending
to a loopback socket nobody reads; 300 frames of six ~1.1 KB VP8 packets go through
``PublishedTrack.on_packet``. Prints the time per incoming packet and per copy, then the same with a
no-op output (the Python part alone: rewriting, history, counters).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time

import uvloop
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from relay.tracks import PublishedTrack
from rtc.adapter import SendParameters


class SrtpSocketOutput:
    def __init__(self, transport: asyncio.DatagramTransport, address: tuple[str, int]) -> None:
        policy = Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        self.protect = Session(policy).protect
        self.transport, self.address = transport, address

    ready = True

    def write(self, data: bytes) -> bool:
        self.transport.sendto(self.protect(data), self.address)
        return True


class NoOutput:
    ready = True

    def write(self, data: bytes) -> bool:
        return True


def packets(frames: int) -> list[RtpPacket]:
    out = []
    for f in range(frames):
        for k in range(6):
            p = RtpPacket(payload_type=96, sequence_number=(f * 6 + k) & 0xFFFF, timestamp=f * 3000, ssrc=5)
            p.marker = int(k == 5)
            descriptor = bytes([0x90 if k == 0 else 0x80, 0x80, 0x80 | (f >> 8) & 0x7F, f & 0xFF])
            p.payload = descriptor + bytes([0x10 if f == 0 else 0x11]) + b"\x00" * 1100
            out.append(p)
    return out


async def main(subscribers: int, frames: int) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        track = PublishedTrack("video", "t", "p", lambda *_: None)
        transports = []
        for i in range(subscribers):
            transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                               local_addr=("127.0.0.1", 0))
            transports.append(transport)
            down = track.add_down_track()
            down.bind(SendParameters(1000 + i, 2000 + i, 96, 97, "0", 1, 3),
                      SrtpSocketOutput(transport, sink.getsockname()), lambda *a: None)
        stream = packets(frames)
        started = time.perf_counter()
        for p in stream:
            track.on_packet("VP8", 90000, p)
        elapsed = time.perf_counter() - started
        print(f"{subscribers} down-tracks: {elapsed / len(stream) * 1e6:.1f} µs per incoming packet, "
              f"{elapsed / len(stream) / subscribers * 1e6:.2f} µs per copy (SRTP + sendto included)")
        for down in track.down_tracks:
            down._output = NoOutput()
        started = time.perf_counter()
        for p in packets(frames):
            track.on_packet("VP8", 90000, p)
        elapsed = time.perf_counter() - started
        print(f"Python alone (no SRTP, no socket): {elapsed / len(stream) / subscribers * 1e6:.2f} µs per copy")
        track.close()
        for transport in transports:
            transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=25)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    uvloop.run(main(args.subscribers, args.frames))
