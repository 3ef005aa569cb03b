"""A new viewer's first picture from a publisher that ignores keyframe requests (OBS over WHIP, most RTMP
encoders): seconds from asking to subscribe to the first decoded frame, with the relay's kept keyframe
(a GOP cache: the last keyframe and the frames since, caught up at once) against the relay as it was
(a kept keyframe used only when under 0.5 s old, otherwise wait for the encoder's next one).

    python -m benchmarks.first_picture --runs 3 --joins 20
    python -m benchmarks.first_picture --runs 3 --joins 10 --viewer chromium   # the page as the viewer

The publisher is pre-encoded VP8 (640x360, 1 Mbit/s, a keyframe every 2 s, deaf to PLI as those encoders
are); each join waits a random 0-2 s first, so viewers land all over the GOP. Server, publisher and viewers
in this process on loopback; the viewers decode (aiortc), or are the page in headless Chromium (its own
first-frame figure, and the jitter buffer's delay per frame over the following 2 s: a viewer that played
the past at its pace would stay that far behind). Prints p50/p95 per run and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from typing import Any

from playwright.async_api import async_playwright

import relay.tracks
from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import ReplayVideoTrack, pre_encode_vp8
from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import CHROMIUM_ARGS, SECRET, WEB_ROOT, running, token, wait_for
from tests.conftest import free_port


async def aiortc_join(url: str) -> tuple[float, float | None]:
    async with LiveClient(url, "show") as viewer:
        asked = time.monotonic()
        session = await MediaSession.subscribe(viewer, kinds=("video",))
        track = await session.wait_track("video")
        async with asyncio.timeout(10):
            await track.recv()
        elapsed = time.monotonic() - asked
        await session.close()
    return elapsed, None


async def chromium_join(base: str, browser: Any) -> tuple[float, float | None]:
    page = await browser.new_page()
    try:
        await page.goto(f"{base}/?view=viewer&room=show")
        shown = await wait_for(page, "document.querySelector('#stat-setup')?.textContent.match(/^[0-9]+$/)"
                                     " && document.querySelector('#stat-setup').textContent", timeout=15)
        before = (await page.evaluate("window.liveRelay.mediaStats()"))["video"]
        await asyncio.sleep(2.0)
        after = (await page.evaluate("window.liveRelay.mediaStats()"))["video"]
        emitted = after["jitterBufferEmittedCount"] - before["jitterBufferEmittedCount"]
        delay = (after["jitterBufferDelay"] - before["jitterBufferDelay"]) / emitted if emitted else None
        return float(shown) / 1000, delay
    finally:
        await page.close()


async def one_run(frames: list[tuple[bytes, bool]], joins: int, kept_age: float, seed: int,
                  viewer: str) -> list[tuple[float, float | None]]:
    relay.tracks.KEPT_KEYFRAME_AGE = kept_age  # the baseline: the relay's old limit (a benchmark's knob only)
    rng = random.Random(seed)
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",), web_root=WEB_ROOT)
    out: list[tuple[float, float | None]] = []
    async with running(config), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS) \
            if viewer == "chromium" else None
        url, base = f"ws://127.0.0.1:{config.port}/ws", f"http://127.0.0.1:{config.port}"
        async with LiveClient(url, "show", token("show", "host", Role.HOST)) as host:
            publisher = await MediaSession.publish(host, [ReplayVideoTrack(frames)], video_codec="vp8")
            await asyncio.sleep(1.0)
            for _ in range(joins):
                await asyncio.sleep(rng.uniform(0, 2.0))
                out.append(await (chromium_join(base, browser) if browser else aiortc_join(url)))
            await publisher.close()
        if browser:
            await browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--viewer", choices=["aiortc", "chromium"], default="aiortc")
    args = parser.parse_args()
    frames = pre_encode_vp8(640, 360, fps=30, seconds=4.0, kbps=1000, gop=60)
    cases = {"kept keyframe (GOP cache)": 3.0, "baseline (0.5 s limit)": 0.5}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    print(f"load before: {os.getloadavg()[0]:.2f}")
    for n in range(args.runs):
        for name, age in cases.items():  # alternating
            joined = asyncio.run(one_run(frames, args.joins, age, n, args.viewer))
            times = [t for t, _ in joined]
            delays = [d for _, d in joined if d is not None]
            p50 = statistics.median(times) * 1000
            p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)] * 1000
            results[name].append((p50, p95))
            playout = f", jitter buffer delay p50 {statistics.median(delays) * 1000:.0f} ms / max " \
                      f"{max(delays) * 1000:.0f} ms" if delays else ""
            print(f"run {n + 1} {name}: p50 {p50:.0f} ms, p95 {p95:.0f} ms, slowest {max(times) * 1000:.0f} ms"
                  f"{playout}", flush=True)
    for name, rows in results.items():
        p50s, p95s = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{name}: p50 median {statistics.median(p50s):.0f} ms ({min(p50s):.0f}-{max(p50s):.0f}), "
              f"p95 median {statistics.median(p95s):.0f} ms ({min(p95s):.0f}-{max(p95s):.0f})")


if __name__ == "__main__":
    main()
