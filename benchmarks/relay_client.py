"""live-relay's side of the Janus side-by-side: the same publisher and subscribers as
../shared/janus-side-by-side/janus_client.py, speaking our protocol, printing the same JSON lines.

    python -m benchmarks.relay_client pub --url ws://127.0.0.1:PORT/ws --secret S [--kbps 1500]
    python -m benchmarks.relay_client sub --url ws://127.0.0.1:PORT/ws --count K

The publisher sends janus_client's synthetic 640x480 30 fps VP8 pattern with its encoder pinned at
``--kbps`` (so both servers get the same stream) and prints {"event": "published", "ssrc": N}, then a
stats line a second. Subscribers never decode: frames are counted as the adapter assembles them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from clients.client import LiveClient
from clients.media import MediaSession
from protocol import Role, issue_token

ROOM = "bench"
JANUS_DIR = Path(os.environ.get("JANUS_SIDE_BY_SIDE",
                                Path(__file__).resolve().parents[2] / "shared" / "janus-side-by-side"))


def janus_client() -> ModuleType:
    """janus_client.py from the shared side-by-side folder: its pattern track and bitrate pin."""
    spec = importlib.util.spec_from_file_location("janus_client", JANUS_DIR / "janus_client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_pub(args: argparse.Namespace) -> None:
    jc = janus_client()
    if args.kbps:
        jc.fix_bitrate(args.kbps)
    track = jc.PatternTrack()
    client = LiveClient(args.url, ROOM, issue_token(args.secret, ROOM, "bench-pub", Role.HOST, 3600))
    await client.connect()
    session = await MediaSession.publish(client, [track])
    sender = next(t.sender for t in session.pc.getTransceivers() if t.kind == "video")
    emit({"event": "published", "feed": session.media_id, "ssrc": sender._ssrc})
    while True:
        await asyncio.sleep(1)
        stats: dict[str, Any] = {"t": time.time(), "frames_made": track.n}
        for s in (await session.pc.getStats()).values():
            if s.type == "outbound-rtp":
                stats["bytes_sent"], stats["pkts_sent"] = s.bytesSent, s.packetsSent
        emit(stats)


async def run_sub(args: argparse.Namespace) -> None:
    frames = [0] * args.count
    first: list[float | None] = [None] * args.count
    sessions: list[MediaSession] = []
    start = time.time()

    async def one(i: int) -> None:
        client = LiveClient(args.url, ROOM)
        await client.connect()

        def sink(kind: str, frame: Any, codec: Any) -> None:
            frames[i] += 1
            if first[i] is None:
                first[i] = time.time() - start

        sessions.append(await MediaSession.subscribe(client, kinds=("video",), frame_sink=sink))

    for i in range(args.count):
        await one(i)
        await asyncio.sleep(args.stagger)
    ready = False
    while True:
        await asyncio.sleep(1)
        if not ready and all(f is not None for f in first):
            ready = True
            emit({"event": "ready", "first_frame_s": first})
        packets = sum(st.packets_received for s in sessions for r in s.pc.getReceivers()
                      for st in r._RTCRtpReceiver__remote_streams.values())  # type: ignore[attr-defined]
        emit({"t": time.time(), "frames": frames, "pkts": packets})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["pub", "sub"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", default="")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--stagger", type=float, default=0.2)
    parser.add_argument("--kbps", type=int, default=1500)
    args = parser.parse_args()
    asyncio.run(run_pub(args) if args.mode == "pub" else run_sub(args))


if __name__ == "__main__":
    main()
