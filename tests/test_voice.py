"""Calling the assistant: a synthetic caller (a question spoken by espeak-ng, sent as its microphone through
the relay) gets a spoken answer with the live card's price, and speaking over the answer stops it.

Real parts throughout: the server, its relay, the assistant's own client over the server's WebSocket,
webrtcvad, pocketsphinx (en-us model from its wheel) and espeak-ng (Debian's)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
import pytest

from assistant.voice import OUT_RATE, Recognizer, SpeechDetector, to_pcm
from clients.client import LiveClient
from protocol import Role
from signaling.voicecall import spoken
from tests.conftest import require_dependency
from tests.test_assistant import CARD, CATALOG
from tests.voice_caller import Caller

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
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    frame = av.AudioFrame.from_ndarray(pcm48.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = OUT_RATE
    pcm16 = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame)])
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.add_jsgf_string("answer", grammar)
    decoder.activate_search("answer")
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


@contextlib.asynccontextmanager
async def calling(server: Any, card: dict[str, Any]) -> AsyncIterator[tuple[LiveClient, Caller]]:
    """The room's host turns the assistant on and pushes ``card``; a viewer calls the assistant: (the host,
    the caller, connected both ways)."""
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "caller")) as viewer:
        await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
        await host.request({"type": "product", "product": card})
        grant = await viewer.request({"type": "assistant_call"})
        assert grant["type"] == "ok" and grant["call_room"].startswith("assistant-call-")
        async with LiveClient(server.ws_url, grant["call_room"], grant["token"]) as call:
            caller = Caller(call)
            await caller.start()
            yield host, caller


async def test_a_caller_hears_the_live_price_and_can_interrupt(start_server) -> None:
    server = await start_server(rooms=("show",))
    async with calling(server, {**CARD, "price": "14.90"}) as (host, caller):
        start = await caller.ask("how much is the silk scarf")
        response_ms = 1000 * (start - caller.mic.finished_at)  # type: ignore[operator]
        answer = await caller.whole_answer(start)
        full_answer_s = caller.sounding_s(start)
        assert "fourteen euros" in price_heard(answer)  # 14.90, the live card's price, among 30 prices

        # A new price is pushed: asked again, the caller hears the new one.
        await host.request({"type": "product", "product": {**CARD, "price": "33.90"}})
        again = await caller.ask("how much is the silk scarf")
        assert "thirty three euros" in price_heard(await caller.whole_answer(again))

        # Asked once more, and the caller talks over the answer: it stops.
        third = await caller.ask("how much is the silk scarf")
        await asyncio.sleep(0.6)
        interrupted_at, stopped_at = await caller.talk_over("stop stop stop")
        played = stopped_at - third
        assert played < full_answer_s - 0.5, (played, full_answer_s)  # cut short, not played out
        print(f"voice: response {response_ms:.0f} ms, interruption {1000 * (stopped_at - interrupted_at):.0f} ms, "
              f"answer {full_answer_s:.1f} s, played {played:.1f} s")
        await caller.close()


TEA = {"id": "tea", "title": "龙井", "price": "88.00", "currency": "CNY", "url": "https://shop.example/tea",
       "image": "https://shop.example/tea.jpg", "stock": 20}


async def test_a_caller_asks_in_chinese_through_the_operators_speech_api_and_can_interrupt(
        start_server, monkeypatch) -> None:
    """Chinese through an OpenAI-compatible speech API (tests/stand_in_speech.py, a stand-in for the operator's
    Whisper-style server): the caller's question (espeak-ng's Mandarin, through the relay) reaches it as a 16 kHz
    WAV with the shop's words as the prompt; the answer, from the live card, is voiced by it in Chinese with
    the price as said in Chinese; talking over the answer stops it."""
    from tests.stand_in_speech import StandInSpeech, serve_stand_in_speech

    stand_in = StandInSpeech(["龙井多少钱？", "龙井多少钱？", "停一下"], key="sk-test")
    runner, url = await serve_stand_in_speech(stand_in)
    monkeypatch.setenv("LIVE_RELAY_SPEECH_KEY", "sk-test")
    try:
        server = await start_server(rooms=("show",), speech_url=url, speech_language="zh")
        async with calling(server, TEA) as (_host, caller):
            start = await caller.ask("龙井多少钱")
            response_ms = 1000 * (start - caller.mic.finished_at)  # type: ignore[operator]
            answer = await caller.whole_answer(start)
            full_answer_s = caller.sounding_s(start)
            [heard] = stand_in.transcriptions
            assert heard["rate"] == 16000 and heard["seconds"] > 0.5 and heard["loud"] > 300
            assert heard["language"] == "zh" and heard["model"] == "whisper-1" and "龙井" in heard["prompt"]
            assert stand_in.voiced == ["龙井：88元，库存 20 件"]  # the live card's facts, as said in Chinese
            assert len(answer) > OUT_RATE  # a second and more of it came back through the relay
            own_ms = sum(stand_in.own_ms)  # the stand-in's own time (its espeak-ng), left out of the figure

            again = await caller.ask("龙井多少钱")
            await asyncio.sleep(0.6)
            interrupted_at, stopped_at = await caller.talk_over("停一下")
            played = stopped_at - again
            assert played < full_answer_s - 0.5, (played, full_answer_s)  # cut short, not played out
            assert stand_in.unauthorized == 0
            print(f"voice zh: response {response_ms:.0f} ms ({response_ms - own_ms:.0f} ms without the stand-in's "
                  f"own), interruption {1000 * (stopped_at - interrupted_at):.0f} ms, answer {full_answer_s:.1f} s")
            await caller.close()
    finally:
        await runner.cleanup()
