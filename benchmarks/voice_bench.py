"""The voice assistant's two latencies, measured by a synthetic caller through a real server.

    python -m benchmarks.voice_bench [--runs 3] [--lang zh]

Each run starts a server (`live-relay serve`), turns the assistant on with a one-product catalog, calls it,
asks "how much is the silk scarf" (espeak-ng as the caller's microphone) and measures from the caller's side:
the **response latency** (the last sample of the question leaving the microphone to the first sound of the
answer arriving; it includes the 0.5 s of silence the assistant waits to know the caller has finished) and,
asking again and talking over the answer 0.6 s in, the **interruption latency** (the caller starting to talk
to the answer going quiet for 300 ms).

``--lang zh``: the caller asks "龙井多少钱" (espeak-ng's Mandarin) and the server recognizes and voices through
an OpenAI-compatible speech API, here tests/stand_in_speech.py (a stand-in for the operator's Whisper-style
server, on loopback: it returns the question's text and voices with espeak-ng); the stand-in's own time per
request is printed and left out of the response figure.
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

TEA = {"id": "tea", "title": "龙井", "price": "88.00", "currency": "CNY", "url": "https://shop.example/tea",
       "image": "https://shop.example/tea.jpg", "stock": 20}


async def one_run(lang: str) -> tuple[float, float, float]:
    """(response ms without the speech stand-in's own time, interruption ms, the stand-in's own ms)."""
    port = free_port()
    extra: list[str] = []
    stand_in = runner = None
    if lang == "zh":
        from tests.stand_in_speech import StandInSpeech, serve_stand_in_speech

        stand_in = StandInSpeech(["龙井多少钱？", "龙井多少钱？", "停一下"], key="sk-bench")
        runner, speech_url = await serve_stand_in_speech(stand_in)
        extra = ["--speech-url", speech_url, "--speech-language", "zh"]
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port",  # noqa: ASYNC220
                               str(port), "--secret", SECRET, "--room", "show", "--analytics", "off",
                               "--udp-port", "0", *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": os.getcwd(), "LIVE_RELAY_SPEECH_KEY": "sk-bench"})
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        wait_ready(port)
        host = LiveClient(url, "show", issue_token(SECRET, "show", "host", Role.HOST, 600))
        viewer = LiveClient(url, "show", issue_token(SECRET, "show", "caller", Role.VIEWER, 600))
        await host.connect()
        await viewer.connect()
        await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
        await host.request({"type": "product", "product": TEA if lang == "zh" else CARD})
        grant = await viewer.request({"type": "assistant_call"})
        call = LiveClient(url, grant["call_room"], grant["token"])
        await call.connect()
        caller = Caller(call)
        await caller.start()
        question = "龙井多少钱" if lang == "zh" else "how much is the silk scarf"
        first = await caller.ask(question)
        own_ms = sum(stand_in.own_ms) if stand_in is not None else 0.0  # its recognition and voicing so far
        response_ms = 1000 * (first - caller.mic.finished_at) - own_ms  # type: ignore[operator]
        await caller.whole_answer(first)
        await caller.ask(question)
        await asyncio.sleep(0.6)
        interrupted, stopped = await caller.talk_over("停一下" if lang == "zh" else "stop stop stop")
        await caller.close()
        for c in (call, viewer, host):
            await c.close()
        return response_ms, 1000 * (stopped - interrupted), own_ms
    finally:
        server.terminate()
        server.wait(timeout=20)
        if runner is not None:
            await runner.cleanup()


async def main(runs: int, lang: str) -> None:
    results = []
    for run in range(1, runs + 1):
        load = os.getloadavg()[0]
        response, interruption, own = await one_run(lang)
        results.append((response, interruption))
        print(f"run {run}: response {response:.0f} ms, interruption {interruption:.0f} ms (load avg {load:.2f}"
              + (f"; the speech stand-in's own time {own:.0f} ms, left out" if lang == "zh" else "") + ")", flush=True)
    print(f"medians: response {statistics.median(r for r, _ in results):.0f} ms, "
          f"interruption {statistics.median(i for _, i in results):.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lang", choices=["en", "zh"], default="en")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.lang))
