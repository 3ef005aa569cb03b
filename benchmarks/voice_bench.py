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
import time

import numpy as np

from assistant.voice import speak
from benchmarks.common import SECRET, free_port, wait_ready
from clients.client import LiveClient
from clients.media import MediaSession
from protocol import Role, issue_token
from tests.test_assistant import CARD, CATALOG
from tests.test_voice import Microphone, loud


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
        mic = Microphone()
        await MediaSession.publish(call, [mic])
        found = next((p for p in call.joined["state"]["publishers"] if p["user"] == "assistant"), None)
        while found is None:
            event = await call.next_event("media", timeout=20)
            if event.get("event") == "publisher_joined" and event.get("user") == "assistant":
                found = event
        listening = await MediaSession.subscribe(call, publisher=found["publisher"], kinds=("audio",))
        track = await listening.wait_track("audio")
        heard: list[tuple[float, np.ndarray]] = []

        async def listen() -> None:
            while True:
                frame = await track.recv()
                heard.append((time.monotonic(), frame.to_ndarray().reshape(-1)[::len(frame.layout.channels)]))

        listener = asyncio.create_task(listen())
        await asyncio.sleep(1.0)
        question = await asyncio.to_thread(speak, "how much is the silk scarf", 150)

        async def ask() -> float:
            mic.say(question)
            async with asyncio.timeout(30):
                while mic.ended_at is None or not any(loud(s) for t, s in heard if t > mic.ended_at):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            return next(t for t, s in heard if t > mic.ended_at and loud(s))  # type: ignore[operator]

        first = await ask()
        response_ms = 1000 * (first - mic.ended_at)  # type: ignore[operator]
        while any(loud(s) for t, s in heard if t > time.monotonic() - 1.0):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await ask()
        await asyncio.sleep(0.6)
        mic.say(await asyncio.to_thread(speak, "stop stop stop", 150))
        interrupted = time.monotonic()
        await asyncio.sleep(2.0)
        after = [(t, loud(s)) for t, s in heard if t >= interrupted]
        stopped = next(t for i, (t, _) in enumerate(after) if not any(x for u, x in after[i:] if u <= t + 0.3))
        listener.cancel()
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
