"""A co-host's tile on viewers' screens: seconds from the host accepting a raised hand to the co-host's
first decoded frame at each viewer, with one connection per viewer (the co-host added to the viewer's
connection by renegotiation) against a new peer connection per tile (the form before).

    python -m benchmarks.cohost_tile --runs 3 --trials 8 --viewers 5 [--rtt 100]
    python -m benchmarks.cohost_tile --runs 3 --trials 8 --viewers 3 --viewer chromium   # the page as viewer

Each trial: the host is live (pre-encoded VP8 640x360 1 Mbit/s); the viewers watch it, each on its own
WebSocket; a guest raises its hand, the host accepts (t0), the guest publishes on its grant (pre-encoded
VP8 320x240, its first frame a keyframe), every viewer hears `publisher_joined` and brings the tile in;
the time is t0 to that viewer's first decoded frame of the guest (aiortc decodes). Then the guest steps
down. Server, host, guest and viewers in this one process on loopback; with ``--rtt`` every viewer's
WebSocket and media go through forwarders of this script's own that hold each packet half that each way
(the host and the guest stay near the server). Modes alternate trial by trial.
With ``--viewer chromium`` the viewers are the page in headless Chromium (which always watches on one
connection): the time is to the new tile's first frame (requestVideoFrameCallback, wall clock).
Prints p50/p95 per run, the medians of the runs and their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from playwright.async_api import async_playwright

from benchmarks.call_setup import slow_tcp
from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import ReplayVideoTrack, pre_encode_vp8
from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import CHROMIUM_ARGS, SECRET, WEB_ROOT, running, token, wait_for
from tests.conftest import free_port
from tests.lossy_forwarder import SlowPath, sdp_filters

MODES = ("one connection", "connection per tile")


class SlowPaths:
    """The viewers' media paths through forwarders that hold each datagram ``one_way`` seconds (none: direct)."""

    def __init__(self, one_way: float) -> None:
        self.one_way = one_way
        self.forwarders: list[SlowPath] = []

    async def filters(self) -> dict[str, Any]:
        if not self.one_way:
            return {}
        forwarder = await SlowPath.start(one_way=self.one_way, loss=0.0)
        self.forwarders.append(forwarder)
        return sdp_filters(forwarder)

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()


async def viewer_tile(viewer: LiveClient, kept: MediaSession, mode: str, accepted: float,
                      opened: list[MediaSession], paths: SlowPaths) -> float:
    """Wait for the guest's publication, bring its tile in as ``mode`` says; seconds from ``accepted``."""
    async with asyncio.timeout(15):
        while True:
            event = await viewer.next_event("media", timeout=15)
            if event.get("event") == "publisher_joined" and event.get("user") == "guest":
                break
        if mode == "one connection":
            tracks = await kept.add(event["publisher"], kinds=("video",))
            track = tracks["video"]
        else:
            session = await MediaSession.subscribe(viewer, publisher=event["publisher"], kinds=("video",),
                                                   **await paths.filters())
            opened.append(session)
            track = await session.wait_track("video")
        await track.recv()
    return time.monotonic() - accepted


async def one_trial(host: LiveClient, guest: LiveClient, viewers: list[LiveClient], kept: list[MediaSession],
                    guest_frames: list[tuple[bytes, bool]], mode: str, paths: SlowPaths) -> list[float]:
    await guest.request({"type": "stage_request"})
    await host.next_event("stage_requested")
    opened: list[MediaSession] = []
    accepted = time.monotonic()
    waits = [asyncio.create_task(viewer_tile(v, k, mode, accepted, opened, paths))
             for v, k in zip(viewers, kept, strict=True)]
    await host.request({"type": "stage_accept", "user": "guest"})
    await guest.next_event("grant")
    publication = await MediaSession.publish(guest, [ReplayVideoTrack(guest_frames)], video_codec="vp8")
    times = await asyncio.gather(*waits)
    await guest.request({"type": "stage_leave"})
    await publication.pc.close()
    for session in opened:
        await session.close()
    for viewer in viewers:  # its publisher_left (and the stage's events) before the next trial
        await viewer.next_event("media")
    return times


async def one_run(trials: int, viewers_n: int, host_frames: list[tuple[bytes, bool]],
                  guest_frames: list[tuple[bytes, bool]], run: int, rtt_ms: float) -> dict[str, list[float]]:
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",))
    out: dict[str, list[float]] = {mode: [] for mode in MODES}
    paths = SlowPaths(rtt_ms / 2000)
    async with running(config):
        url = f"ws://127.0.0.1:{config.port}/ws"
        viewer_url = url
        proxy = None
        if rtt_ms:
            proxy_port = free_port()
            proxy = await slow_tcp(proxy_port, config.port, rtt_ms / 2000)
            viewer_url = f"ws://127.0.0.1:{proxy_port}/ws"
        async with LiveClient(url, "show", token("show", "host", Role.HOST)) as host, \
                LiveClient(url, "show", token("show", "guest", Role.VIEWER, "Guest")) as guest:
            host_pub = await MediaSession.publish(host, [ReplayVideoTrack(host_frames)], video_codec="vp8")
            viewers = [LiveClient(viewer_url, "show", token("show", f"v{i}", Role.VIEWER)) for i in range(viewers_n)]
            for viewer in viewers:
                await viewer.connect()
            kept = [await MediaSession.subscribe(v, publisher=host_pub.media_id, kinds=("video",), keep=True,
                                                 **await paths.filters()) for v in viewers]
            for session in kept:
                await (await session.wait_track("video")).recv()
            for n in range(trials):
                mode = MODES[(n + run) % 2]
                out[mode] += await one_trial(host, guest, viewers, kept, guest_frames, mode, paths)
            for session in kept:
                await session.close()
            for viewer in viewers:
                await viewer.close()
            await host_pub.close()
        if proxy is not None:
            proxy.close()
        paths.close()
    return out


# Each new tile's first frame, on the page's wall clock (ms).
TILE_WATCH = """(() => { window.__tiles = []; const seen = new Set();
  setInterval(() => { for (const v of document.querySelectorAll('#stage video')) {
    if (seen.has(v)) continue; seen.add(v);
    v.requestVideoFrameCallback(() => window.__tiles.push({ publisher: v.dataset.publisher, at: Date.now() }));
  } }, 5); })()"""


async def chromium_run(trials: int, viewers_n: int, host_frames: list[tuple[bytes, bool]],
                       guest_frames: list[tuple[bytes, bool]]) -> list[float]:
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",), web_root=WEB_ROOT)
    out: list[float] = []
    async with running(config), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        url, base = f"ws://127.0.0.1:{config.port}/ws", f"http://127.0.0.1:{config.port}"
        async with LiveClient(url, "show", token("show", "host", Role.HOST)) as host, \
                LiveClient(url, "show", token("show", "guest", Role.VIEWER, "Guest")) as guest:
            host_pub = await MediaSession.publish(host, [ReplayVideoTrack(host_frames)], video_codec="vp8")
            pages: list[Any] = []
            for _ in range(viewers_n):
                page = await browser.new_page()
                await page.goto(f"{base}/?view=viewer&room=show")
                await wait_for(page, "document.querySelector('#stage video')?.videoWidth > 0", timeout=20)
                await page.evaluate(TILE_WATCH)
                pages.append(page)
            for _ in range(trials):
                await guest.request({"type": "stage_request"})
                await host.next_event("stage_requested")
                accepted_ms = time.time() * 1000
                await host.request({"type": "stage_accept", "user": "guest"})
                await guest.next_event("grant")
                publication = await MediaSession.publish(guest, [ReplayVideoTrack(guest_frames)], video_codec="vp8")
                for page in pages:
                    shown = await wait_for(page, f"window.__tiles.find(t => t.publisher === "
                                                 f"'{publication.media_id}')?.at", timeout=15)
                    out.append((float(shown) - accepted_ms) / 1000)
                await guest.request({"type": "stage_leave"})
                await publication.pc.close()
                for page in pages:
                    await wait_for(page, "document.querySelectorAll('#stage video').length === 1", timeout=15)
            await host_pub.close()
        await browser.close()
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8, help="co-host arrivals per run (modes alternate)")
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--viewer", choices=["aiortc", "chromium"], default="aiortc")
    parser.add_argument("--rtt", type=float, default=0.0, help="ms between each aiortc viewer and the server")
    args = parser.parse_args()
    if args.trials > 14:
        parser.error("--trials: at most 14 (a viewer's connection holds 16 sections)")
    host_frames = pre_encode_vp8(640, 360, fps=30, seconds=4.0, kbps=1000, gop=60)
    guest_frames = pre_encode_vp8(320, 240, fps=30, seconds=4.0, kbps=400, gop=60)
    print(f"load before: {os.getloadavg()[0]:.2f}; viewers' round trip {args.rtt:g} ms")
    summary: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    if args.viewer == "chromium":
        summary = {"the page (one connection)": []}
    for run in range(args.runs):
        if args.viewer == "chromium":
            result = {"the page (one connection)": asyncio.run(chromium_run(args.trials, args.viewers, host_frames,
                                                                            guest_frames))}
        else:
            result = asyncio.run(one_run(args.trials, args.viewers, host_frames, guest_frames, run, args.rtt))
        for mode, times in result.items():
            p50, p95 = statistics.median(times) * 1000, percentile(times, 0.95) * 1000
            summary[mode].append((p50, p95))
            print(f"run {run + 1} {mode}: p50 {p50:.0f} ms, p95 {p95:.0f} ms, slowest {max(times) * 1000:.0f} ms "
                  f"({len(times)} tiles)", flush=True)
    for mode, rows in summary.items():
        p50s, p95s = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{mode}: p50 median {statistics.median(p50s):.0f} ms ({min(p50s):.0f}-{max(p50s):.0f}), "
              f"p95 median {statistics.median(p95s):.0f} ms ({min(p95s):.0f}-{max(p95s):.0f})")


if __name__ == "__main__":
    main()
