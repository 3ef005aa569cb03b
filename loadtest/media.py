"""`live-relay loadtest media` and `live-relay loadtest call`: the SFU under load, measured.

media: a synthetic publisher (640x480 30 fps test pattern whose pixels carry a frame counter and the
send time, plus a tone; or pre-encoded VP8 replayed, ``--replay``) and N aiortc subscribers spread over
worker processes. A few subscribers (``--decoders``) decode every frame and read the counter and send
time back (latency, content); the rest count and check packets from their clear RTP headers, past ICE,
DTLS and SRTP but not aiortc's receive path (frames by marker bit, freezes, lost packets): a few
microseconds a packet, so two cores hold hundreds of subscribers beside the relay. Reports
join-to-first-frame, frames sent vs received, freezes (gaps over 200 ms), lost packets,
publisher-to-subscriber latency, and the relay process's CPU and memory.

call: sequential 1v1 calls (two parties, each publishes and subscribes to the other); set-up time is
from the first offer sent to the first decoded frame on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import click
import numpy as np

from clients.client import LiveClient, ServerError
from clients.media import MediaSession
from clients.sources import (
    CounterVideoTrack,
    ReplayVideoTrack,
    ToneAudioTrack,
    latency_ms,
    pre_encode_vp8,
    read_frame,
)
from loadtest.report import CpuMeter, find_server_processes, print_table, write_json
from protocol import Role, issue_token

FREEZE_MS = 200.0


class SubscriberProbe:
    """One subscriber's measurements."""

    def __init__(self, decode: bool) -> None:
        self.decode = decode
        self.started = 0.0
        self.first_frame_ms: float | None = None
        self.frames = 0  # video frames inside the measurement window
        self.freezes = 0
        self.last_frame: float | None = None
        self.latencies: list[float] = []
        self.counting = False
        self.last_seq: int | None = None
        self.lost = 0  # video packets missing (counting subscribers)
        self.error: str | None = None
        self.settled = asyncio.Event()  # first frame seen, or failed

    def on_rtp(self, data: bytes, video_pt: int) -> None:
        """A counting subscriber's packet, read from its clear header: a video frame ends at its marker bit;
        gaps in the video's sequence numbers are lost packets (nothing asks for them again)."""
        if len(data) < 12 or data[1] & 0x7F != video_pt or data[0] & 0x20:  # not video media (audio, RTX, padding)
            return
        seq = int.from_bytes(data[2:4], "big")
        if self.last_seq is not None and self.counting:
            gap = (seq - self.last_seq) & 0xFFFF
            if 1 < gap < 0x8000:
                self.lost += gap - 1
        self.last_seq = seq
        if data[1] & 0x80:
            self.on_video_frame(time.perf_counter())

    def on_video_frame(self, now: float) -> None:
        if self.first_frame_ms is None:
            self.first_frame_ms = (now - self.started) * 1000
            self.settled.set()
        if self.counting:
            self.frames += 1
            if self.last_frame is not None and (now - self.last_frame) * 1000 > FREEZE_MS:
                self.freezes += 1
        self.last_frame = now


async def _run_subscriber(url: str, room: str, probe: SubscriberProbe, stop: asyncio.Event) -> None:
    client = LiveClient(url, room)
    session = None
    try:
        await client.connect()
        probe.started = time.perf_counter()

        video_pt: list[int] = []

        def count(data: bytes) -> None:
            probe.on_rtp(data, video_pt[0] if video_pt else -1)

        session = await MediaSession.subscribe(client, rtp_counter=None if probe.decode else count)
        video_pt.append(session.codecs()["video"].payloadType or -1)
        if probe.decode:
            track = await session.wait_track("video", timeout=30)
            while not stop.is_set():
                frame = await track.recv()
                probe.on_video_frame(time.perf_counter())
                _, sent_ms = read_frame(frame)
                if probe.counting:
                    probe.latencies.append(latency_ms(sent_ms))
        else:
            await stop.wait()
    except (ServerError, TimeoutError, OSError, ConnectionError) as exc:
        probe.error = repr(exc)
        probe.settled.set()
    finally:
        if session is not None:
            await session.close()
        await client.close()


async def _worker(urls: list[str], room: str, count: int, decoders: int, first: int, control: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    probes = [SubscriberProbe(decode=i < decoders) for i in range(count)]
    tasks = []
    for i, probe in enumerate(probes):
        # Round-robin over the nodes, starting after the publisher's: with several nodes the first
        # (decoding) subscriber is on an edge, so its latency includes the origin->edge hop.
        url = urls[(first + i + 1) % len(urls)]
        tasks.append(asyncio.create_task(_run_subscriber(url, room, probe, stop)))
        await asyncio.sleep(0.05)  # a steady trickle of joins, as an audience arrives
    with contextlib.suppress(TimeoutError):  # report whoever is receiving by then
        await asyncio.wait_for(asyncio.gather(*(p.settled.wait() for p in probes)), 30)
    control.send({"ready": sum(p.first_frame_ms is not None for p in probes)})
    await loop.run_in_executor(None, control.recv)  # window starts
    for p in probes:
        p.counting = True
    await loop.run_in_executor(None, control.recv)  # window ends
    for p in probes:
        p.counting = False
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    control.send([{"first_frame_ms": p.first_frame_ms, "frames": p.frames, "freezes": p.freezes,
                   "latencies": p.latencies, "decode": p.decode, "error": p.error, "lost": p.lost} for p in probes])


def _worker_main(urls: list[str], room: str, count: int, decoders: int, first: int, control: Connection) -> None:
    import uvloop

    uvloop.run(_worker(urls, room, count, decoders, first, control))


async def run_media_load(urls: list[str], room: str, secret: str, subscribers: int, duration: float, decoders: int,
                         processes: int, width: int, height: int, fps: int, replay: bool = False) -> dict[str, Any]:
    url = urls[0]  # the publisher's node: the origin
    host = LiveClient(url, room, issue_token(secret, room, "loadtest-host", Role.HOST, 3600))
    try:
        await host.connect()
    except (OSError, ServerError) as exc:
        raise click.ClickException(f"could not connect to {url}: {exc}") from exc
    video: CounterVideoTrack | ReplayVideoTrack
    if replay:  # pre-encoded: no encoder on the load generator's cores; frames are counted, latency not read
        video, decoders = ReplayVideoTrack(pre_encode_vp8(width, height, fps), fps), 0
    else:
        video = CounterVideoTrack(width, height, fps)
    publisher = await MediaSession.publish(host, [video, ToneAudioTrack()], video_codec="vp8" if replay else None)
    processes = max(1, min(processes, subscribers))
    workers = _start_workers(urls, room, subscribers, decoders, processes)
    loop = asyncio.get_running_loop()
    click.echo(f"publishing {width}x{height}@{fps}; starting {subscribers} subscribers in {processes} processes",
               err=True)
    ready = sum([(await loop.run_in_executor(None, conn.recv))["ready"] for _, conn in workers])
    click.echo(f"{ready}/{subscribers} subscribers receiving; measuring for {duration:g} s", err=True)
    servers = {p.pid: p for u in urls for p in find_server_processes(u)}
    relay_cpu = CpuMeter(servers.values())  # every node's process, summed
    frames_before = video.counter
    t0 = time.monotonic()
    relay_cpu.start(t0)
    for _, conn in workers:
        conn.send("start")
    from tqdm import tqdm

    for _ in tqdm(range(int(duration)), unit="s", file=sys.stderr, desc=f"{ready} subscribers"):
        await asyncio.sleep(1.0)
    for _, conn in workers:
        conn.send("stop")
    t1 = time.monotonic()
    relay_cpu.stop(t1)
    frames_sent = video.counter - frames_before
    results: list[dict[str, Any]] = []
    for proc, conn in workers:
        results += await loop.run_in_executor(None, conn.recv)
        proc.join(timeout=20)
    await publisher.close()
    await host.close()

    return {
        "subscribers": subscribers, "duration_s": round(t1 - t0, 2), "resolution": f"{width}x{height}", "fps": fps,
        "frames_sent": frames_sent, **_summarize(results),
        "relay_cpu_per_s": relay_cpu.cores, "relay_rss_mb": relay_cpu.rss_mb,
        "relay_cpu_per_subscriber": round(relay_cpu.cores / subscribers, 4) if relay_cpu.cores else None,
        "machine": {"cpus": os.cpu_count(), "note": "relay, publisher and subscribers share this machine"},
    }


def _start_workers(urls: list[str], room: str, subscribers: int, decoders: int,
                   processes: int) -> list[tuple[mp.process.BaseProcess, Connection]]:
    """Subscriber processes (spawned), the decoding subscribers in the first ones."""
    ctx = mp.get_context("spawn")
    per = [subscribers // processes + (1 if i < subscribers % processes else 0) for i in range(processes)]
    decoders_left = decoders
    workers: list[tuple[mp.process.BaseProcess, Connection]] = []
    first = 0
    for count in per:
        parent, child = ctx.Pipe()
        share = min(decoders_left, count)
        decoders_left -= share
        proc = ctx.Process(target=_worker_main, args=(urls, room, count, share, first, child), daemon=True)
        first += count
        proc.start()
        child.close()
        workers.append((proc, parent))
    return workers


def _summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    firsts = np.array([r["first_frame_ms"] for r in results if r["first_frame_ms"] is not None])
    latencies = np.array([x for r in results for x in r["latencies"]])
    received = [r["frames"] for r in results if r["first_frame_ms"] is not None]

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 2) if a.size else None

    return {
        "subscribers_receiving": len(received),
        "frames_received_min": min(received) if received else 0,
        "frames_received_median": float(np.median(received)) if received else 0,
        "first_frame_ms_p50": pct(firsts, 50), "first_frame_ms_p95": pct(firsts, 95),
        "latency_ms_p50": pct(latencies, 50), "latency_ms_p95": pct(latencies, 95),
        "latency_ms_p99": pct(latencies, 99), "latency_samples": int(latencies.size),
        "freezes": sum(r["freezes"] for r in results),
        "video_packets_lost": sum(r.get("lost", 0) for r in results),
        "errors": [r["error"] for r in results if r["error"]][:5],
    }


@click.command("media")
@click.option("--url", "urls", multiple=True, required=True,
              help="WebSocket URL; repeat to spread subscribers over nodes (the first gets the publisher).")
@click.option("--room", default="media-bench")
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET", help="The server's token secret.")
@click.option("--subscribers", default=10, type=int)
@click.option("--duration", default=10.0, type=float, help="Seconds of measurement once all have joined.")
@click.option("--decoders", default=2, type=int, help="Subscribers that decode every frame (latency).")
@click.option("--processes", default=max(1, (os.cpu_count() or 2) - 1), type=int)
@click.option("--width", default=640, type=int)
@click.option("--height", default=480, type=int)
@click.option("--fps", default=30, type=int)
@click.option("--replay", is_flag=True,
              help="Publish pre-encoded VP8 (encoded once, sent again and again): no encoder on the load "
                   "generator's cores, the same bytes every run; no decoding subscribers (no latency figures).")
@click.option("--json", "json_out", default=None)
def media_command(urls: tuple[str, ...], room: str, secret: str, subscribers: int, duration: float, decoders: int,
                  processes: int, width: int, height: int, fps: int, replay: bool, json_out: str | None) -> None:
    """A synthetic publisher and N subscribers: frames, freezes, latency, relay CPU and memory."""
    import uvloop

    result = uvloop.run(run_media_load(list(urls), room, secret, subscribers, duration, decoders, processes,
                                       width, height, fps, replay))
    print_table(f"media load: {result['subscribers_receiving']}/{subscribers} subscribers, "
                f"{result['resolution']}@{fps}, {result['duration_s']} s",
                ["frames sent", "received min", "received median", "first frame p50/p95 ms",
                 "latency p50/p95/p99 ms", "freezes", "relay CPU", "relay RSS MB"],
                [[result["frames_sent"], result["frames_received_min"], result["frames_received_median"],
                  f"{result['first_frame_ms_p50']} / {result['first_frame_ms_p95']}",
                  f"{result['latency_ms_p50']} / {result['latency_ms_p95']} / {result['latency_ms_p99']}",
                  result["freezes"], result["relay_cpu_per_s"], result["relay_rss_mb"]]])
    if result["errors"]:
        print(f"errors: {result['errors']}")
    if json_out:
        write_json(json_out, result)
    if result["subscribers_receiving"] == 0:
        raise SystemExit(1)


async def one_call(url: str, room: str, secret: str,
                   path: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> float:
    """A 1v1 call; returns ms from the first offer sent to the first decoded frame on both sides.

    ``path()``, when given, is awaited once per peer connection (before the clock starts) for the SDP
    filters (``offer_filter``/``answer_filter``) that route it, as a benchmark's impaired path does."""
    a = LiveClient(url, room, issue_token(secret, room, "caller", Role.HOST, 600))
    b = LiveClient(url, room, issue_token(secret, room, "callee", Role.COHOST, 600))
    sessions: list[MediaSession] = []
    try:
        await a.connect()
        await b.connect()
        paths = [await path() if path is not None else {} for _ in range(4)]
        start = time.perf_counter()
        # Each side subscribes to the other's publication at once, before it exists (the server answers when
        # it does): no round trip waits for another, and the first keyframe finds the subscriber connected.
        made = await asyncio.gather(
            MediaSession.publish(a, [CounterVideoTrack(320, 240)], **paths[0]),
            MediaSession.publish(b, [CounterVideoTrack(320, 240)], **paths[1]),
            MediaSession.subscribe(a, user="callee", kinds=("video",), **paths[2]),
            MediaSession.subscribe(b, user="caller", kinds=("video",), **paths[3]), return_exceptions=True)
        sessions += [s for s in made if isinstance(s, MediaSession)]
        failed = next((s for s in made if isinstance(s, BaseException)), None)
        if failed is not None:
            raise failed
        a_sub, b_sub = made[2], made[3]
        assert isinstance(a_sub, MediaSession) and isinstance(b_sub, MediaSession)

        async def first_frame(s: MediaSession) -> None:
            track = await s.wait_track("video", timeout=20)
            read_frame(await asyncio.wait_for(track.recv(), 20))

        await asyncio.gather(first_frame(a_sub), first_frame(b_sub))
        setup_ms = (time.perf_counter() - start) * 1000
        await a.send({"type": "client_stats", "call_setup_ms": setup_ms})  # the server's metrics get it too
        return setup_ms
    finally:
        for s in sessions:
            await s.close()
        await a.close()
        await b.close()


@click.command("call")
@click.option("--url", required=True)
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET")
@click.option("--calls", default=20, type=int)
@click.option("--json", "json_out", default=None)
def call_command(url: str, secret: str, calls: int, json_out: str | None) -> None:
    """Sequential 1v1 calls: set-up time (offer sent to first decoded frame, both sides)."""
    import uvloop

    async def run() -> list[float]:
        out = []
        for n in range(calls):
            out.append(await one_call(url, f"call-bench-{os.getpid()}-{n}", secret))
        return out

    setups = np.array(uvloop.run(run()))
    result: dict[str, Any] = {"calls": calls, "setup_ms_p50": round(float(np.percentile(setups, 50)), 1),
              "setup_ms_p95": round(float(np.percentile(setups, 95)), 1),
              "setup_ms_max": round(float(setups.max()), 1), "setup_ms": [round(x, 1) for x in setups]}
    print_table(f"1v1 calls: {calls}", ["p50 ms", "p95 ms", "max ms"],
                [[result["setup_ms_p50"], result["setup_ms_p95"], result["setup_ms_max"]]])
    if json_out:
        write_json(json_out, result)
    if not math.isfinite(result["setup_ms_p50"]):
        raise SystemExit(1)
