"""The voice assistant's two latencies, measured by a synthetic caller through a real server.

    python -m benchmarks.voice_bench [--runs 3]

Each run starts a server (`live-relay serve`), turns the assistant on with a one-product catalog, calls it,
asks "how much is the silk scarf" (espeak-ng as the caller's microphone) and measures from the caller's side:
the **response latency** (the last sample of the question leaving the microphone to the first sound of the
answer arriving; it includes the 0.5 s of silence the assistant waits to know the caller has finished) and,
asking again and talking over the answer 0.6 s in, the **interruption latency** (the caller starting to talk
to the answer going quiet for 300 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys

from benchmarks.common import SECRET, free_port, wait_ready
from clients.client import LiveClient
from protocol import Role, issue_token
from tests.test_assistant import CARD, CATALOG
from tests.voice_caller import Caller


async def one_run() -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port",  # noqa: ASYNC220
                               str(port), "--secret", SECRET, "--room", "show", "--analytics", "off"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        wait_ready(port)
        host = LiveClient(url, "show", issue_token(SECRET, "show", "host", Role.HOST, 600))
        viewer = LiveClient(url, "show", issue_token(SECRET, "show", "caller", Role.VIEWER, 600))
        await host.connect()
        await viewer.connect()
        await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
        await host.request({"type": "product", "product": CARD})
        grant = await viewer.request({"type": "assistant_call"})
        call = LiveClient(url, grant["call_room"], grant["token"])
        await call.connect()
        caller = Caller(call)
        await caller.start()
        first = await caller.ask("how much is the silk scarf")
        response_ms = 1000 * (first - caller.mic.finished_at)  # type: ignore[operator]
        await caller.whole_answer(first)
        await caller.ask("how much is the silk scarf")
        await asyncio.sleep(0.6)
        interrupted, stopped = await caller.talk_over("stop stop stop")
        await caller.close()
        for c in (call, viewer, host):
            await c.close()
        return response_ms, 1000 * (stopped - interrupted)
    finally:
        server.terminate()
        server.wait(timeout=20)


async def main(runs: int) -> None:
    results = []
    for run in range(1, runs + 1):
        load = os.getloadavg()[0]
        response, interruption = await one_run()
        results.append((response, interruption))
        print(f"run {run}: response {response:.0f} ms, interruption {interruption:.0f} ms (load avg {load:.2f})",
              flush=True)
    print(f"medians: response {statistics.median(r for r, _ in results):.0f} ms, "
          f"interruption {statistics.median(i for _, i in results):.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
