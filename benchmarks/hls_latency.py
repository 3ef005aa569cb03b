"""Glass-to-glass over LL-HLS, measured from the picture: a publisher's send time burned into each frame, read
back from the frames an LL-HLS client fetches and decodes (issue 24's target: p50 <= 3 s; WebRTC unchanged).

    python -m benchmarks.hls_latency [--runs 3] [--duration 30] [--size 640x480] [--codec h264|vp8]
                                     [--out hls_latency.jsonl]

Each run starts ``live-relay serve`` on a free loopback port, publishes the test pattern (``CounterVideoTrack``:
a frame counter and the send time in its top rows) as H.264 from an aiortc peer, and runs one LL-HLS client as
a low-latency player fetches: the playlist once, then the part the playlist hints at, again and again (each
request answered when the part is written: the blocking the server does), every part decoded in order by one
H.264 decoder (PyAV). For each decoded frame: the time it was decoded minus the time in its picture. A player
shows a frame later than that by its hold-back (``PART-HOLD-BACK``, 0.9 s here: hls.js starts that far from the
live edge and stays near it), so the table gives both: *fetched* (the frame is in the player's hands) and
*on screen* (fetched + hold-back). The first 5 s of each run are left out (the stream's start). With
``--codec vp8`` the publisher sends VP8 and the server makes it H.264 (relay/transcode.py); the server's CPU
over the window (utime+stime from /proc) is printed beside, what that transcode costs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import av

from benchmarks.common import SECRET, free_port, wait_ready
from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, latency_ms, read_frame
from protocol import Role, issue_token

ROOT = Path(__file__).resolve().parent.parent
HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.(\d+)\.m4s"')
INIT = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')
HOLD_BACK = re.compile(r"PART-HOLD-BACK=([\d.]+)")


class PartDecoder:
    """Decodes the parts of one fMP4 stream in order, keeping the decoder's references across parts."""

    def __init__(self, init: bytes) -> None:
        self.init = init
        self.decoder: Any = None
        self.started = False

    def frames(self, part: bytes) -> list[Any]:
        container: Any = av.open(io.BytesIO(self.init + part), "r")
        try:
            stream = container.streams.video[0]
            if self.decoder is None:
                self.decoder = av.CodecContext.create("h264", "r")
                self.decoder.extradata = stream.codec_context.extradata
            out = []
            for packet in container.demux(stream):
                if packet.size and (self.started or packet.is_keyframe):  # a part mid-GOP: wait for a keyframe
                    self.started = True
                    out += self.decoder.decode(packet)
            return out
        finally:
            container.close()


async def player(http: aiohttp.ClientSession, url: str, until: float, skip_until: float) -> dict[str, Any]:
    async with http.get(f"{url}/index.m3u8") as response:
        response.raise_for_status()
        playlist = await response.text()
    hold_back = float(HOLD_BACK.search(playlist)[1])  # type: ignore[index]
    init_name = INIT.search(playlist)[1]  # type: ignore[index]
    async with http.get(f"{url}/{init_name}") as response:
        decoder = PartDecoder(await response.read())
    hint = HINT.search(playlist)
    assert hint is not None
    epoch, msn, index = int(hint[1]), int(hint[2]), int(hint[3])
    fetched: list[float] = []
    parts = 0
    while time.monotonic() < until:
        async with http.get(f"{url}/{epoch}.{msn}.{index}.m4s") as response:
            if response.status == 404:  # that part does not exist: the segment ended before it
                msn, index = msn + 1, 0
                continue
            response.raise_for_status()
            data = await response.read()
        parts += 1
        for frame in await asyncio.to_thread(decoder.frames, data):
            _counter, sent_ms = read_frame(frame)
            if time.monotonic() >= skip_until:
                fetched.append(latency_ms(sent_ms))
        index += 1
    return {"fetched_ms": fetched, "hold_back_s": hold_back, "parts": parts}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(duration: float, size: tuple[int, int], codec: str) -> dict[str, Any]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port), "--secret", SECRET,
        "--analytics", "off", cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_ready, port)
        token = issue_token(SECRET, "show", "host", Role.HOST, 3600)
        async with LiveClient(f"ws://127.0.0.1:{port}/ws", "show", token) as host, aiohttp.ClientSession() as http:
            publisher = await MediaSession.publish(host, [CounterVideoTrack(*size)], video_codec=codec.upper())
            start = time.monotonic()
            cpu = asyncio.create_task(server_cpu(server.pid, 5, duration - 5))
            result = await player(http, f"http://127.0.0.1:{port}/hls/show", start + duration, start + 5)
            result["server_cpu"] = await cpu
            await publisher.close()
        return result
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def server_cpu(pid: int, after: float, window: float) -> float:
    await asyncio.sleep(after)
    before, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return round((cpu_seconds(pid) - before) / (time.monotonic() - t0), 3)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--codec", choices=("h264", "vp8"), default="h264")
    parser.add_argument("--out")
    a = parser.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    rows = []
    for run in range(a.runs):
        load = os.getloadavg()[0]
        r = asyncio.run(one_run(a.duration, (size[0], size[1]), a.codec))
        fetched = r["fetched_ms"]
        row = {"run": run + 1, "frames": len(fetched), "parts": r["parts"], "load_before": round(load, 2),
               "fetched_p50_ms": round(percentile(fetched, 0.5)), "fetched_p95_ms": round(percentile(fetched, 0.95)),
               "hold_back_s": r["hold_back_s"], "codec": a.codec, "server_cpu": r["server_cpu"],
               "on_screen_p50_ms": round(percentile(fetched, 0.5) + r["hold_back_s"] * 1000)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    for key in ("fetched_p50_ms", "fetched_p95_ms", "on_screen_p50_ms"):
        values = [row[key] for row in rows]
        print(f"{key}: median {statistics.median(values)} (runs {min(values)}-{max(values)})")


if __name__ == "__main__":
    main()
