"""A synthetic caller of the room's assistant, shared by tests/test_voice.py and benchmarks/voice_bench.py:
its microphone says what it is given (espeak-ng), and it listens to the assistant through the relay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from assistant.voice import OUT_RATE, SpeechTrack, speak
from clients.client import LiveClient
from clients.media import MediaSession


def loud(samples: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 300


class Caller:
    """Joined to the call room: publishes ``mic``, hears the assistant into ``heard`` as (time, samples)."""

    def __init__(self, call: LiveClient) -> None:
        self.call = call
        self.mic = SpeechTrack()  # the microphone: silence until told to say something
        self.heard: list[tuple[float, np.ndarray]] = []
        self._listening: MediaSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await MediaSession.publish(self.call, [self.mic])
        joined: dict[str, Any] = self.call.joined or {}
        assistant = next((p for p in joined["state"]["publishers"] if p["user"] == "assistant"), None)
        while assistant is None:
            event = await self.call.next_event("media", timeout=20)
            if event.get("event") == "publisher_joined" and event.get("user") == "assistant":
                assistant = event
        self._listening = await MediaSession.subscribe(self.call, publisher=assistant["publisher"], kinds=("audio",))
        track = await self._listening.wait_track("audio")

        async def listen() -> None:
            while True:
                frame = await track.recv()
                channels = len(frame.layout.channels)  # decoded Opus is interleaved stereo: keep one
                self.heard.append((time.monotonic(), frame.to_ndarray().reshape(-1)[::channels].astype(np.int16)))

        self._task = asyncio.create_task(listen())
        await asyncio.sleep(1.0)  # both ways connected

    async def say(self, text: str) -> None:
        self.mic.say(await asyncio.to_thread(speak, text, 150))

    async def ask(self, question: str) -> float:
        """Say ``question``; return when the first sound of the answer came back."""
        await self.say(question)
        async with asyncio.timeout(30):
            while self.mic.finished_at is None or not self.loud_after(self.mic.finished_at):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert self.mic.finished_at is not None
        return next(t for t, s in self.heard if t > self.mic.finished_at and loud(s))

    def loud_after(self, since: float) -> bool:
        return any(loud(s) for t, s in self.heard if t > since)

    async def whole_answer(self, started: float) -> np.ndarray:
        """The answer that began at ``started``, once 1 s of quiet says it is over."""
        async with asyncio.timeout(30):
            while self.loud_after(time.monotonic() - 1.0):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        return np.concatenate([s for t, s in self.heard if t >= started - 0.1])

    def sounding_s(self, since: float) -> float:
        """Seconds of sound heard since ``since``."""
        return sum(len(s) for t, s in self.heard if t >= since and loud(s)) / OUT_RATE

    async def talk_over(self, text: str, listen_s: float = 2.0) -> tuple[float, float]:
        """Talk over the answer now playing: (when the caller began, when the answer went quiet for 300 ms)."""
        await self.say(text)
        began = time.monotonic()
        await asyncio.sleep(listen_s)
        after = [(t, loud(s)) for t, s in self.heard if t >= began]
        stopped = next(t for i, (t, _) in enumerate(after) if not any(x for u, x in after[i:] if u <= t + 0.3))
        return began, stopped

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._listening is not None:
            await self._listening.close()
