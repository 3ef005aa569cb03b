"""Side-by-side media benchmark: our forwarding relay vs aiortc's MediaRelay (decode + re-encode per
subscriber), and a direct peer-to-peer link as the latency floor.

    python -m benchmarks.media_bench --subscribers 1,5,10,25,50,100 --duration 10 [--mediarelay] [--direct]

Each row starts a fresh server process, runs `live-relay loadtest media` against it (publisher and
subscribers in their own processes), and prints the relay's CPU, memory, frames and latency. The latency
of decoding subscribers includes the publisher's encode and the subscriber's decode, so compare it with
the `direct` row (same publisher and subscriber code, no relay) to get what the relay adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import SECRET, free_port, run_loadtest, wait_ready


def start(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "live-relay":
        args = [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port),
                "--secret", SECRET, "--max-conns-per-ip", "0"]
    else:
        args = [sys.executable, "benchmarks/mediarelay_server.py", "--port", str(port)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


def run_one(kind: str, subscribers: int, duration: float, decoders: int) -> dict:
    port = free_port()
    server = start(kind, port)
    try:
        wait_ready(port)
        time.sleep(0.5)
        return run_loadtest(["media", "--url", f"ws://127.0.0.1:{port}/ws", "--secret", SECRET, "--subscribers",
                             str(subscribers), "--duration", str(duration), "--decoders", str(decoders)],
                            timeout=duration * 6 + subscribers * 2 + 120)
    finally:
        server.terminate()
        server.wait(timeout=30)


async def direct_latency(duration: float) -> dict:
    """Publisher and subscriber connected directly (no relay), same sources and decoding."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from clients.sources import CounterVideoTrack, latency_ms, read_frame
    from rtc import adapter

    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = CounterVideoTrack()
    a.addTransceiver(video, direction="sendonly")
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    b.on("track", lambda track: got.done() or got.set_result(track))
    offer = await a.createOffer()
    adapter.restrict_host_addresses(a, ["127.0.0.1"])
    await a.setLocalDescription(offer)
    await b.setRemoteDescription(a.localDescription)
    answer = await b.createAnswer()
    adapter.restrict_host_addresses(b, ["127.0.0.1"])
    await b.setLocalDescription(answer)
    await a.setRemoteDescription(b.localDescription)
    track = await got
    samples = []
    end = time.monotonic() + duration + 2
    while time.monotonic() < end:
        frame = await track.recv()
        if time.monotonic() > end - duration:
            samples.append(latency_ms(read_frame(frame)[1]))
    await a.close()
    await b.close()
    arr = np.array(samples)
    return {"latency_ms_p50": round(float(np.percentile(arr, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(arr, 95)), 2), "frames": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", default="1,5,10,25,50")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--decoders", type=int, default=1)
    parser.add_argument("--mediarelay", action="store_true", help="also run aiortc's MediaRelay")
    parser.add_argument("--direct", action="store_true", help="also measure a direct link's latency")
    args = parser.parse_args()
    if args.direct:
        d = asyncio.run(direct_latency(args.duration))
        print(f"direct link (no relay): latency p50 {d['latency_ms_p50']} ms, p95 {d['latency_ms_p95']} ms "
              f"over {d['frames']} frames", flush=True)
    kinds = ["live-relay", "mediarelay"] if args.mediarelay else ["live-relay"]
    print("| relay | subscribers | receiving | relay CPU (cores) | CPU/subscriber | RSS MB | frames sent "
          "| received min | first frame p50/p95 ms | latency p50/p95/p99 ms | freezes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.subscribers.split(",")):
        for kind in kinds:
            r = run_one(kind, n, args.duration, args.decoders)
            print(f"| {kind} | {n} | {r['subscribers_receiving']} | {r['relay_cpu_per_s']} "
                  f"| {r['relay_cpu_per_subscriber']} | {r['relay_rss_mb']} | {r['frames_sent']} "
                  f"| {r['frames_received_min']} | {r['first_frame_ms_p50']} / {r['first_frame_ms_p95']} "
                  f"| {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} | {r['freezes']} |",
                  flush=True)


if __name__ == "__main__":
    main()
