"""RTMP and SRT ingest figures (issue 26): an encoder pushes x264 baseline (2 s GOP, zerolatency) and AAC over
RTMP or SRT to the bridge (`live-relay ingest`), which publishes into a room of a server.

    python -m benchmarks.ingest --runs 3 [--scheme srt]

The encoder is benchmarks.stamped_encoder: each picture carries the time it was made. Per run: seconds from
the push starting (encoder launched) to the room hearing `publisher_joined`, and to the first decoded frame
at a viewer already waiting for the studio's publication; then 5 viewers joining at random moments of the
stream, subscribe to first decoded frame (the relay's kept keyframe); then 10 s of pictures decoded at a
viewer, after its first 3 s (a new viewer starts from the kept GOP, pictures of the past caught up at once):
picture made → decoded there (p50, p95) and, subtracting the encoder's own delay (made → muxed), the latency
the path after the encoder adds; beside it, the same reading for a host publishing the same kind of picture
over WebRTC into the same room (aiortc's H.264 encoder: the baseline a page or WHIP host gets); then the CPU
of the server and the bridge (one process: both run here, as a small deployment would run them side by side)
with the door's server (nginx for RTMP, GStreamer's SRT listener) over 10 s with one viewer that does not
decode, against the encoder's own.
Prints each run and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time

from clients.client import LiveClient
from clients.ingest import IngestBridge
from clients.ingest_doors import RtmpDoor, SrtDoor
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, latency_ms, read_frame
from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import SECRET, running, token
from tests.conftest import free_port


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _receivers_cpu(encoder_pid: int) -> float:
    """CPU seconds of this process's children, the encoder excluded: the door's server (nginx for RTMP,
    GStreamer's SRT listener)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == encoder_pid:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().split(") ", 1)[1]
            if int(rest.split()[1]) == os.getpid():
                total += _cpu_of(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return total


async def _picture_delays(session: MediaSession, seconds: float) -> list[float]:
    """Made → decoded here, in ms, for each picture a viewer decodes in ``seconds``."""
    track = await session.wait_track("video", 20)
    delays: list[float] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        frame = await asyncio.wait_for(track.recv(), 10)
        _, made = read_frame(frame)
        delays.append(latency_ms(made))
    return delays


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


async def _webrtc_baseline(url: str, seconds: float) -> list[float]:
    """The same reading for a host publishing stamped pictures over WebRTC (H.264, aiortc's encoder)."""
    async with LiveClient(url, "show", token("show", "webrtc-host", Role.COHOST)) as host, \
            LiveClient(url, "show") as fan:
        publication = await MediaSession.publish(host, [CounterVideoTrack(640, 360)], video_codec="H264")
        try:
            viewer = await MediaSession.subscribe(fan, user="webrtc-host", kinds=("video",))
            await _picture_delays(viewer, 2.0)  # settled
            delays = await _picture_delays(viewer, seconds)
            await viewer.close()
        finally:
            await publication.close()
    return delays


async def one_run(seed: int, scheme: str) -> dict[str, float]:
    rng = random.Random(seed)
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",))
    out: dict[str, float] = {}
    async with running(config):
        url = f"ws://127.0.0.1:{config.port}/ws"
        port, key = free_port(), token("show", "studio", Role.HOST)
        bridge = IngestBridge(url, on_event=lambda line: None)
        door: RtmpDoor | SrtDoor
        if scheme == "rtmp":
            door, listen = RtmpDoor(f"rtmp://127.0.0.1:{port}/live", bridge), f"rtmp://127.0.0.1:{port}/live/{key}"
        else:
            door, listen = SrtDoor(f"srt://127.0.0.1:{port}", bridge), f"srt://127.0.0.1:{port}?streamid={key}"
        await door.open()
        async with LiveClient(url, "show") as fan, LiveClient(url, "show") as waiting:
            started = time.monotonic()
            encoder = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.stamped_encoder", listen, "60", stdout=asyncio.subprocess.PIPE,
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
                watching = await MediaSession.subscribe(fan, publisher=joined["publisher"], kinds=("video",))
                # Its first pictures are the kept GOP's, from the past, caught up at once: not what it then
                # watches with.
                await _picture_delays(watching, 3.0)
                delays = await _picture_delays(watching, 10.0)
                await watching.close()
                out["made_to_decoded_ms_p50"], out["made_to_decoded_ms_p95"] = _p(delays, 0.5), _p(delays, 0.95)
                counted: list[int] = []
                counter = await MediaSession.subscribe(fan, publisher=joined["publisher"],
                                                       frame_sink=lambda kind, frame, codec: counted.append(1))
                await asyncio.sleep(2.0)
                ours, theirs, wall = time.process_time(), _cpu_of(encoder.pid), time.monotonic()
                receiving = _receivers_cpu(encoder.pid)
                await asyncio.sleep(10.0)
                elapsed = time.monotonic() - wall
                out["relay_and_bridge_core"] = (time.process_time() - ours
                                                + _receivers_cpu(encoder.pid) - receiving) / elapsed
                out["encoder_core"] = (_cpu_of(encoder.pid) - theirs) / elapsed
                out["frames_counted"] = len(counted)
                await counter.close()
                encoder.terminate()  # its last line: its own delay, made → muxed
                said, _ = await asyncio.wait_for(encoder.communicate(), 20)
                own = json.loads(said.decode().strip().splitlines()[-1]) if said.strip() else None
            finally:
                if encoder.returncode is None:
                    encoder.kill()
                await encoder.wait()
                await door.close()
        if own is not None:
            out["encoder_own_ms_p50"] = own["own_ms_p50"]
            out["added_after_encoder_ms_p50"] = out["made_to_decoded_ms_p50"] - own["own_ms_p50"]
        baseline = await _webrtc_baseline(url, 10.0)
        out["webrtc_host_made_to_decoded_ms_p50"] = _p(baseline, 0.5)
        out["webrtc_host_made_to_decoded_ms_p95"] = _p(baseline, 0.95)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scheme", choices=("rtmp", "srt"), default="rtmp")
    args = parser.parse_args()
    print(f"{args.scheme}; load before: {os.getloadavg()[0]:.2f}")
    rows = []
    for n in range(args.runs):
        row = asyncio.run(one_run(n, args.scheme))
        rows.append(row)
        print(f"run {n + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key}: median {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
