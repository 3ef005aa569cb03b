"""The autohost over a long run: memory stays flat, every card is pushed, questions are answered.

    python -m benchmarks.autohost_soak [--minutes 20] [--dwell 20]

Starts `live-relay serve` and `live-relay autohost` (two processes, as an operator runs them) with a
three-product catalog, and a viewer that asks a question every 30 s in the comments. Every 10 s it samples
both processes' RSS; at the end it prints the autohost's RSS at the first and the last sample after the first
minute (warm-up: the slides rendered, the dictionary loaded) and the growth between them, the cards pushed
(each product's count), and the questions answered in the comments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import psutil

from benchmarks.common import SECRET, free_port, wait_ready
from clients.client import LiveClient
from protocol import Role, issue_token

CATALOG = """products:
  - {id: A, title: Silk scarf, price: "19.90", currency: EUR, url: "https://shop.example/a", image: "https://shop.example/a.png", stock: 12}
  - {id: B, title: Jade bracelet, price: "25.00", currency: EUR, url: "https://shop.example/b", image: "https://shop.example/b.png"}
  - {id: C, title: 龙井, price: "88.00", currency: CNY, url: "https://shop.example/c", image: "https://shop.example/c.png", stock: 20}
faq:
  - {q: "How long is shipping?", a: We ship within 48 hours.}
"""
QUESTIONS = ("how much is the silk scarf?", "how long is shipping?", "龙井多少钱？", "is the jade bracelet in stock?")


async def main(minutes: float, dwell: float) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as f:
        f.write(CATALOG)
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port",  # noqa: ASYNC220
                               str(port), "--secret", SECRET, "--room", "show", "--analytics", "off", "--udp-port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    auto = None
    try:
        wait_ready(port)
        url = f"ws://127.0.0.1:{port}/ws"
        auto = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "autohost", "--url", url,  # noqa: ASYNC220
                                 "--room", "show", "--token", issue_token(SECRET, "show", "auto", Role.HOST, 86400),
                                 "--catalog", f.name, "--dwell", str(dwell)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        viewer = LiveClient(url, "show", issue_token(SECRET, "show", "asker", Role.VIEWER, 86400), reconnect=True)
        await viewer.connect()
        cards: Counter[str] = Counter()
        answers = 0
        samples: list[tuple[float, float, float]] = []  # (t, autohost MB, server MB)
        started = time.monotonic()
        asked = 0

        async def watch() -> None:
            nonlocal answers
            async for event in viewer.events():
                if event.get("type") == "product":
                    cards[event["product"]["id"]] += 1
                elif event.get("type") == "comment" and event.get("user") == "auto":
                    answers += 1

        watcher = asyncio.create_task(watch())
        processes = (psutil.Process(auto.pid), psutil.Process(server.pid))
        while time.monotonic() - started < minutes * 60:
            await asyncio.sleep(10)
            t = time.monotonic() - started
            samples.append((t, *(p.memory_info().rss / 2**20 for p in processes)))
            if t // 30 > asked:
                await viewer.comment(QUESTIONS[asked % len(QUESTIONS)])
                asked += 1
            if auto.poll() is not None:
                raise SystemExit(f"the autohost ended after {t:.0f} s (exit {auto.returncode})")
        watcher.cancel()
        await viewer.close()
        warm = [s for s in samples if s[0] >= 60] or samples
        first, last = warm[0][1], warm[-1][1]
        print(f"{minutes:g} min, dwell {dwell:g} s, load avg {os.getloadavg()[0]:.2f}")
        print(f"autohost RSS after the first minute {first:.1f} MB, at the end {last:.1f} MB: "
              f"{100 * (last - first) / first:+.1f}% (max {max(s[1] for s in warm):.1f}, "
              f"median {statistics.median(s[1] for s in warm):.1f}); server {warm[0][2]:.1f} -> {warm[-1][2]:.1f} MB")
        print(f"cards pushed {dict(sorted(cards.items()))}; questions asked {asked}, answered in the comments {answers}")
    finally:
        for process in (auto, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=20)
        os.unlink(f.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--dwell", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.dwell))
