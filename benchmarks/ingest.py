"""RTMP ingest figures (issue 26): Debian's ffmpeg pushes x264 baseline (2 s GOP, zerolatency) and AAC over
RTMP to the bridge (`live-relay ingest`), which publishes into a room of a server.

    python -m benchmarks.rtmp_ingest --runs 3

Per run: seconds from the push starting (ffmpeg launched) to the room hearing `publisher_joined`, and to
the first decoded frame at a viewer already waiting for the studio's publication; then 5 viewers joining at
random moments of the stream, subscribe to first decoded frame (the relay's kept keyframe); then the CPU of
the server and the bridge (one process: both run here, as a small deployment would run them side by side)
over 10 s with one viewer that does not decode, against ffmpeg's own (the encoder). Prints each run and the
medians. Not measured here: the latency RTMP adds over the encoder's own (needs timestamps in the picture).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

from cli.apps import run_ingest_bridge
from clients.client import LiveClient
from clients.media import MediaSession
from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import SECRET, running, token
from tests.conftest import free_port
from tests.test_ingest import ffmpeg_push, stop_push_and_bridge


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",))
    out: dict[str, float] = {}
    async with running(config):
        url = f"ws://127.0.0.1:{config.port}/ws"
        listen = f"rtmp://127.0.0.1:{free_port()}/live/stream"
        bridge = asyncio.create_task(run_ingest_bridge(listen, url, "show", token("show", "studio", Role.HOST),
                                                       sessions=1))
        await asyncio.sleep(1.0)  # the listener is up
        push = ffmpeg_push(listen, 40)
        push[push.index("-g") + 1] = "60"  # a keyframe every 2 s, as OBS's default "auto" near it
        async with LiveClient(url, "show") as fan, LiveClient(url, "show") as waiting:
            started = time.monotonic()
            encoder = await asyncio.create_subprocess_exec(*push, stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.DEVNULL)
            try:
                # A viewer already there (subscribed to the studio's publication before it exists: the
                # server holds the request until it does), and the room's announcement.
                early = asyncio.create_task(MediaSession.subscribe(waiting, user="studio", kinds=("video",)))
                joined = await fan.next_event("media", timeout=20)
                out["push_to_joined_s"] = time.monotonic() - started
                viewer = await early
                await asyncio.wait_for((await viewer.wait_track("video", 20)).recv(), 20)
                out["push_to_first_frame_s"] = time.monotonic() - started
                await viewer.close()
                joins = []
                for _ in range(5):
                    await asyncio.sleep(rng.uniform(0, 2.0))
                    async with LiveClient(url, "show") as late:
                        asked = time.monotonic()
                        session = await MediaSession.subscribe(late, publisher=joined["publisher"], kinds=("video",))
                        await asyncio.wait_for((await session.wait_track("video", 20)).recv(), 20)
                        joins.append(time.monotonic() - asked)
                        await session.close()
                out["join_to_first_frame_s"] = statistics.median(joins)
                counted: list[int] = []
                counter = await MediaSession.subscribe(fan, publisher=joined["publisher"],
                                                       frame_sink=lambda kind, frame, codec: counted.append(1))
                await asyncio.sleep(2.0)
                ours, theirs, wall = time.process_time(), _cpu_of(encoder.pid), time.monotonic()
                await asyncio.sleep(10.0)
                elapsed = time.monotonic() - wall
                out["relay_and_bridge_core"] = (time.process_time() - ours) / elapsed
                out["encoder_core"] = (_cpu_of(encoder.pid) - theirs) / elapsed
                out["frames_counted"] = len(counted)
                await counter.close()
            finally:
                await stop_push_and_bridge(encoder, bridge)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    rows = []
    for n in range(args.runs):
        row = asyncio.run(one_run(n))
        rows.append(row)
        print(f"run {n + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key}: median {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
