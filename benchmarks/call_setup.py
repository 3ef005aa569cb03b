"""1v1 call set-up through a slow, lossy path, both parties behind it.

    python -m benchmarks.call_setup --rtt 100 --loss 5 --calls 20 --runs 3

A live-relay server (a subprocess, loopback only) and two aiortc parties per call, exactly as
``live-relay loadtest call`` makes them (``loadtest.media.one_call``): each publishes, then subscribes to
the other; set-up is from the first offer sent to the first decoded frame on both sides. Every path
between a party and the server goes through a forwarder of this script's own that holds each packet half
the round trip each way and drops ``--loss`` % of the UDP datagrams (STUN, DTLS, RTP and RTCP alike): one
per peer connection for media, and a TCP relay that delays the WebSocket's bytes the same (TCP repairs its
own loss; the kernel here has no netem). Prints the p50/p95 of each run, then the medians, beside a
baseline run with no delay and no loss.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.common import SECRET, free_port, wait_ready
from loadtest.media import one_call as loadtest_call
from tests.lossy_forwarder import SlowPath, sdp_filters


async def slow_tcp(listen_port: int, server_port: int, one_way: float) -> asyncio.Server:
    """A TCP relay to the server whose bytes arrive ``one_way`` seconds late, in order, each way."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                loop.call_later(one_way, writer.write, data)
        except ConnectionError:
            pass
        finally:
            loop.call_later(one_way, writer.close)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server_port)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    return await asyncio.start_server(accept, "127.0.0.1", listen_port)


async def one_call(ws_url: str, room: str, one_way: float, loss: float, rng: random.Random) -> float:
    forwarders: list[SlowPath] = []

    async def path() -> Any:
        forwarder = await SlowPath.start(one_way=one_way, loss=loss, rng=rng)
        forwarders.append(forwarder)
        return sdp_filters(forwarder)

    try:
        return await loadtest_call(ws_url, room, SECRET, path)
    finally:
        for f in forwarders:
            f.close()


async def run(calls: int, port: int, rtt_ms: float, loss: float, seed: int) -> list[float]:
    proxy_port = free_port()
    one_way = rtt_ms / 2000
    proxy = await slow_tcp(proxy_port, port, one_way)
    rng = random.Random(seed)
    setups = []
    try:
        for n in range(calls):
            setups.append(await asyncio.wait_for(
                one_call(f"ws://127.0.0.1:{proxy_port}/ws", f"call-{seed}-{rtt_ms:.0f}-{n}", one_way, loss, rng), 60))
    finally:
        proxy.close()
    return setups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", type=float, default=100.0,
                        help="round trip added between each party and the server, ms")
    parser.add_argument("--loss", type=float, default=5.0, help="%% of UDP datagrams dropped each way")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import uvloop

    figures: dict[str, list[tuple[float, float]]] = {"baseline": [], "lab": []}
    slowest: dict[str, float] = {"baseline": 0.0, "lab": 0.0}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port),
                               "--secret", SECRET, "--analytics", "off"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        for n in range(args.runs):
            for name, rtt, loss in (("baseline", 0.0, 0.0), ("lab", args.rtt, args.loss / 100)):
                load = os.getloadavg()[0]
                setups = uvloop.run(run(args.calls, port, rtt, loss, seed=n))
                p50, p95 = float(np.percentile(setups, 50)), float(np.percentile(setups, 95))
                figures[name].append((p50, p95))
                slowest[name] = max(slowest[name], max(setups))
                print(f"run {n + 1} {name:8} (rtt {rtt:.0f} ms, loss {loss:.0%}): p50 {p50:.0f} ms, "
                      f"p95 {p95:.0f} ms, max {max(setups):.0f} ms over {len(setups)} calls; load before {load:.2f}",
                      flush=True)
    finally:
        server.terminate()
        server.wait(10)
    base = statistics.median(p for p, _ in figures["baseline"])
    lab = statistics.median(p for p, _ in figures["lab"])
    print(f"\nmedians of {args.runs} runs: baseline p50 {base:.0f} ms (p95 "
          f"{statistics.median(p for _, p in figures['baseline']):.0f}); through {args.rtt:.0f} ms RTT and "
          f"{args.loss:.0f}% loss p50 {lab:.0f} ms (p95 {statistics.median(p for _, p in figures['lab']):.0f}); "
          f"ratio {lab / base:.2f}x; slowest of {args.runs * args.calls} calls {slowest['lab']:.0f} ms "
          f"(baseline {slowest['baseline']:.0f} ms)")


if __name__ == "__main__":
    main()
