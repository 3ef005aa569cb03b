"""The assistant under a busy comment stream: how soon its answers follow the questions, and what it costs.

    python -m benchmarks.assistant_bench [--rate 50] [--questions 0.1] [--duration 30] [--runs 3]

For each run a fresh server with the assistant off, then one with it on (offline engine, a catalog of five
products and a few FAQ entries), each with five product cards pushed, get the same stream: ``--rate``
comments a second from 30 viewers, a ``--questions`` share of them questions (prices, sizes, shipping, in
English and Chinese, some it cannot answer, many asked again by others). A listener measures, from the
server's own timestamps, the time from each answered question to its answer; the server process's CPU is
read from /proc over the window. Prints a row per run and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time

import psutil

from benchmarks.common import SECRET, free_port, wait_ready
from clients.client import LiveClient
from protocol import Role, issue_token

ROOM = "bench"
PRODUCTS = [{"id": f"p{i}", "title": title, "price": f"{19 + i * 10}.90", "currency": "CNY",
             "url": f"https://shop.example/p{i}", "image": "https://shop.example/i.png", "stock": 50 - i}
            for i, title in enumerate(["Silk scarf", "Jade bracelet", "Tea set", "Wool coat", "Leather bag"])]
CATALOG = "products:\n" + "".join(
    f"  - {{id: {p['id']}, title: {p['title']}, sizes: 'S, M, L', colors: 'red, blue'}}\n" for p in PRODUCTS) + """faq:
  - {q: "How long is shipping?", a: "We ship within 48 hours."}
  - {q: "Can I return it?", a: "Returns are free within 7 days."}
  - {q: "发货要多久？", a: "48小时内发货。"}
"""
QUESTIONS = ["how much is the {t}?", "price of the {t}?", "is there size L for the {t}?", "{t} 多少钱？",
             "How long is shipping?", "can I return it?", "发货要多久？", "do you ship to the moon?",
             "what colors does the {t} come in?", "is the {t} in stock?"]
CHATTER = ["love it", "hello from Shanghai", "666", "so pretty", "好漂亮", "waiting for the next one"]


def start_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port),
                             "--secret", SECRET, "--room", ROOM, "--max-conns-per-ip", "0", "--analytics", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


async def one_run(on: bool, rate: float, share: float, duration: float, seed: int) -> dict[str, float]:
    port = free_port()
    server = start_server(port)
    url = f"ws://127.0.0.1:{port}/ws"
    rng = random.Random(seed)
    try:
        wait_ready(port)
        host = LiveClient(url, ROOM, issue_token(SECRET, ROOM, "host", Role.HOST, 3600))
        listener = LiveClient(url, ROOM)
        viewers = [LiveClient(url, ROOM, issue_token(SECRET, ROOM, f"v{i}", Role.VIEWER, 3600)) for i in range(30)]
        for c in (host, listener, *viewers):
            await c.connect()
        if on:
            await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
        for p in PRODUCTS:
            await host.request({"type": "product", "product": p})
        asked: dict[int, float] = {}
        latencies: list[float] = []

        async def listen() -> None:
            async for event in listener.events():
                if event.get("type") != "comment":
                    continue
                if event.get("role") == "assistant":
                    if event.get("reply_to") in asked:
                        latencies.append(event["server_ts"] - asked[event["reply_to"]])
                else:
                    asked[event["seq"]] = event["server_ts"]

        listening = asyncio.create_task(listen())
        proc = psutil.Process(server.pid)
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        sent = questions = 0
        while time.monotonic() - t0 < duration:
            if rng.random() < share:
                text = rng.choice(QUESTIONS).format(t=rng.choice(PRODUCTS)["title"])
                questions += 1
            else:
                text = rng.choice(CHATTER)
            await viewers[sent % len(viewers)].send({"type": "comment", "text": text})
            sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        await asyncio.sleep(1.0)
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        listening.cancel()
        for c in (host, listener, *viewers):
            await c.close()
        ordered = sorted(latencies)
        pct = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)) if ordered else \
            (lambda q: float("nan"))
        return {"server_cpu": round(cpu, 3), "comments": sent, "questions": questions, "answers": len(ordered),
                "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": round(ordered[-1], 1) if ordered else float("nan")}
    finally:
        server.terminate()
        server.wait(timeout=20)


async def main(rate: float, share: float, duration: float, runs: int) -> None:
    rows = []
    print("| run | assistant | server CPU (cores) | comments | questions | answers | answer p50 / p95 / max ms "
          "| load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for run in range(1, runs + 1):
        for on in (False, True):
            load = os.getloadavg()[0]
            r = await one_run(on, rate, share, duration, seed=run)
            rows.append((on, r))
            print(f"| {run} | {'on' if on else 'off'} | {r['server_cpu']} | {r['comments']} | {r['questions']} | "
                  f"{r['answers']} | {r['p50_ms']} / {r['p95_ms']} / {r['max_ms']} | {load:.2f} |", flush=True)
    off = statistics.median(r["server_cpu"] for on, r in rows if not on)
    on_cpu = statistics.median(r["server_cpu"] for on, r in rows if on)
    p95 = statistics.median(r["p95_ms"] for on, r in rows if on)
    print(f"\nmedians: server CPU off {off}, on {on_cpu} (assistant {on_cpu - off:+.3f} cores); answer p95 {p95} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--questions", type=float, default=0.1)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--runs", type=int, default=3)
    a = parser.parse_args()
    asyncio.run(main(a.rate, a.questions, a.duration, a.runs))
