"""Calling the assistant: a synthetic caller (a question spoken by espeak-ng, sent as its microphone through
the relay) gets a spoken answer with the live card's price, and speaking over the answer stops it.

Real parts throughout: the server, its relay, the assistant's own client over the server's WebSocket,
webrtcvad, pocketsphinx (en-us model from its wheel) and espeak-ng (Debian's)."""

from __future__ import annotations

import asyncio
import shutil
import time

import av
import numpy as np
import pytest

from assistant.voice import OUT_RATE, Recognizer, SpeechDetector, SpeechTrack, speak, to_pcm
from clients.client import LiveClient
from clients.media import MediaSession
from protocol import Role
from signaling.voicecall import spoken
from tests.conftest import require_dependency
from tests.test_assistant import CARD, CATALOG

NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred").split()


@pytest.fixture(autouse=True)
def _needs_espeak() -> None:
    require_dependency(None if shutil.which("espeak-ng") else "needs espeak-ng (apt-get install espeak-ng)")


def price_heard(pcm48: np.ndarray) -> str:
    """The price the caller heard: pocketsphinx over "<price> euros" among every price from 10 to 39."""
    from pocketsphinx import Decoder

    def words(n: int) -> str:
        return NUMBERS[n] if n < 20 else {2: "twenty", 3: "thirty"}[n // 10] + (f" {NUMBERS[n % 10]}" if n % 10 else "")

    prices = {words(n): n for n in range(10, 40)}
    grammar = ("#JSGF V1.0;\ngrammar answer;\npublic <a> = <w>* <price> euros <w>*;\n"
               f"<price> = {' | '.join(prices)};\n<w> = silk | scarf | left | ninety | twelve | the | is;\n")
    path = "/tmp/lr-answer.gram"
    with open(path, "w") as f:
        f.write(grammar)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    frame = av.AudioFrame.from_ndarray(pcm48.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = OUT_RATE
    pcm16 = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame)])
    decoder = Decoder(samprate=16000, jsgf=path, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm16.tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


def test_speech_is_detected_and_the_shops_words_recognized() -> None:
    question = to_pcm(__import__("subprocess").run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", "how much is the silk scarf"],
        capture_output=True, check=True).stdout, 16000)
    silence = np.zeros(16000, np.int16)
    detector = SpeechDetector()
    events = detector.feed(np.concatenate([silence, question, silence]).tobytes())
    assert events == ["start", "end"]
    recognizer = Recognizer(["Silk scarf", "Jade bracelet", "How long is shipping?"])
    assert recognizer.recognize(detector.take_utterance()) == "how much is the silk scarf"
    assert spoken("Silk scarf: 19.90 EUR · 12 left · buy: https://shop.example/scarf") == \
        "Silk scarf, 19 euros 90 , 12 left"


class Microphone(SpeechTrack):
    """The caller's microphone: says what the test gives it (the assistant's own voice track does the same
    job), silence otherwise; ``ended_at`` is when the last sample of it went out."""

    @property
    def ended_at(self) -> float | None:
        return self.finished_at


def loud(samples: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 300


async def test_a_caller_hears_the_live_price_and_can_interrupt(start_server) -> None:
    server = await start_server(rooms=("show",))
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "caller")) as viewer:
        await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
        await host.request({"type": "product", "product": {**CARD, "price": "14.90"}})
        grant = await viewer.request({"type": "assistant_call"})
        assert grant["type"] == "ok" and grant["call_room"].startswith("assistant-call-")
        heard: list[tuple[float, np.ndarray]] = []
        async with LiveClient(server.ws_url, grant["call_room"], grant["token"]) as call:
            mic = Microphone()
            await MediaSession.publish(call, [mic])
            assistant = next((p for p in call.joined["state"]["publishers"] if p["user"] == "assistant"), None)
            while assistant is None:
                event = await call.next_event("media", timeout=20)
                if event.get("event") == "publisher_joined" and event.get("user") == "assistant":
                    assistant = event
            listening = await MediaSession.subscribe(call, publisher=assistant["publisher"], kinds=("audio",))
            track = await listening.wait_track("audio")

            async def listen() -> None:
                while True:
                    frame = await track.recv()
                    channels = len(frame.layout.channels)  # decoded Opus is interleaved stereo: keep one
                    heard.append((time.monotonic(), frame.to_ndarray().reshape(-1)[::channels].astype(np.int16)))

            listener = asyncio.create_task(listen())

            async def ask(question: str) -> float:
                """Say ``question``; return when the first answer sound came back."""
                mic.say(await asyncio.to_thread(speak, question, 150))
                async with asyncio.timeout(30):
                    while mic.ended_at is None or not any(loud(s) for t, s in heard if t > mic.ended_at):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert mic.ended_at is not None
                return next(t for t, s in heard if t > mic.ended_at and loud(s))

            async def whole_answer(started: float) -> np.ndarray:
                async with asyncio.timeout(30):
                    while any(loud(s) for t, s in heard if t > time.monotonic() - 1.0):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)  # until 1 s of quiet: the answer is over
                return np.concatenate([s for t, s in heard if t >= started - 0.1])

            await asyncio.sleep(1.0)  # both ways connected
            start = await ask("how much is the silk scarf")
            response_ms = 1000 * (start - mic.ended_at)  # type: ignore[operator]
            answer = await whole_answer(start)
            full_answer_s = sum(1 for t, s in heard if t >= start and loud(s)) * len(heard[-1][1]) / OUT_RATE
            assert "fourteen euros" in price_heard(answer)  # 14.90, the live card's price, among 30 prices

            # A new price is pushed: asked again, the caller hears the new one.
            await host.request({"type": "product", "product": {**CARD, "price": "33.90"}})
            again = await ask("how much is the silk scarf")
            assert "thirty three euros" in price_heard(await whole_answer(again))

            # Asked once more, and the caller talks over the answer: it stops.
            third = await ask("how much is the silk scarf")
            await asyncio.sleep(0.6)
            mic.say(await asyncio.to_thread(speak, "stop stop stop", 150))
            interrupted_at = time.monotonic()
            await asyncio.sleep(2.0)
            # When the answer went quiet: the first 300 ms without sound after the caller began to talk over it.
            after = [(t, loud(s)) for t, s in heard if t >= interrupted_at]
            stopped_at = next(t for i, (t, _) in enumerate(after)
                              if not any(is_loud for u, is_loud in after[i:] if u <= t + 0.3))
            played = stopped_at - third
            assert played < full_answer_s - 0.5, (played, full_answer_s)  # cut short, not played out
            print(f"voice: response {response_ms:.0f} ms, interruption {1000 * (stopped_at - interrupted_at):.0f} ms, "
                  f"answer {full_answer_s:.1f} s, played {played:.1f} s")
            listener.cancel()
            await listening.close()
