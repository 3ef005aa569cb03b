"""The assistant's voice in a 1v1 call: hear the caller, understand, answer aloud, stop when interrupted.

- ``SpeechDetector``: webrtcvad (its model is compiled in) on 30 ms frames of 16 kHz mono: speech starts after
  90 ms of voice and ends after ``end_silence`` of silence.
- ``Recognizer``: pocketsphinx with the en-us acoustic model its wheel ships, constrained by a JSGF grammar
  made from the room's catalog (product names, question phrases): the call's vocabulary is the shop's, which
  is what makes an offline recognizer reliable here.
- ``speak``: espeak-ng renders the answer in its language's voice (Mandarin for Chinese); with a speech API
  (assistant/speech.py: Whisper-style recognition in any language, and its voice) the call goes through
  that instead; ``SpeechTrack`` (an aiortc audio track) plays it, silence
  otherwise, and ``stop()`` cuts it off mid-word (barge-in).
- ``VoiceAssistant`` runs the loop over the caller's decoded audio frames and records the response
  latency (end of the caller's speech to the first answer audio) and the interruption latency (the caller
  starting to speak to the answer stopping).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import re
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import av
import numpy as np
import webrtcvad
from aiortc.mediastreams import AudioStreamTrack

log = logging.getLogger(__name__)

RATE = 16000
FRAME_MS = 30
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
OUT_RATE = 48000
OUT_SAMPLES = 960  # 20 ms at 48 kHz
ASK_PHRASES = ("how much", "how much is", "what is the price of", "price of", "is there", "do you have",
               "how long is shipping", "shipping", "can i return it", "what colors", "what sizes", "is it in stock")
FILLERS = ("the", "a", "is", "it", "this", "for", "of", "please", "in", "size", "color")


class SpeechDetector:
    def __init__(self, aggressiveness: int = 2, start_frames: int = 3, end_silence: float = 0.5) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._start_frames = start_frames
        self._end_frames = int(end_silence * 1000 / FRAME_MS)
        self._buffer = b""
        self._voiced = 0
        self._silent = 0
        self.speaking = False
        self._onset = bytearray()  # the last few frames before speech: its first syllable
        self._utterance = bytearray()
        self._finished: deque[bytes] = deque()

    def feed(self, pcm: bytes) -> list[str]:
        """16 kHz mono s16 audio in; events out: "start" (speech began) and "end" (an utterance is ready)."""
        events = []
        self._buffer += pcm
        while len(self._buffer) >= FRAME_BYTES:
            frame, self._buffer = self._buffer[:FRAME_BYTES], self._buffer[FRAME_BYTES:]
            voiced = self._vad.is_speech(frame, RATE)
            if self.speaking:
                self._utterance += frame
                self._silent = 0 if voiced else self._silent + 1
                if self._silent >= self._end_frames:
                    self.speaking = False
                    self._finished.append(bytes(self._utterance))
                    self._utterance = bytearray()
                    events.append("end")
            else:
                self._voiced = self._voiced + 1 if voiced else 0
                self._onset += frame
                del self._onset[:-FRAME_BYTES * self._start_frames]
                if self._voiced >= self._start_frames:
                    self.speaking, self._silent, self._voiced = True, 0, 0
                    self._utterance, self._onset = bytearray(self._onset), bytearray()
                    events.append("start")
        return events

    def take_utterance(self) -> bytes:
        """The oldest finished utterance (b"" when none)."""
        return self._finished.popleft() if self._finished else b""


class Recognizer:
    """Offline speech to text over a grammar of the shop's words."""

    def __init__(self, phrases: Iterable[str]) -> None:
        from pocketsphinx import Decoder

        decoder = Decoder(samprate=RATE)

        def known(words: list[str]) -> bool:
            return bool(words) and all(decoder.lookup_word(w) is not None for w in words)

        candidates = {" ".join(re.sub(r"[^a-z ]+", " ", x.lower()).split()) for x in phrases}
        items = sorted(c for c in candidates if c and known(c.split()))
        asks = [a for a in ASK_PHRASES if known(a.split())]
        grammar = ["#JSGF V1.0;", "grammar shop;",
                   "public <q> = <w>* [<ask>] <w>* [<item>] <w>*;",
                   f"<ask> = {' | '.join(asks)};",
                   f"<item> = {' | '.join(items) if items else 'it'};",
                   f"<w> = {' | '.join(FILLERS)};"]
        decoder.add_jsgf_string("shop", "\n".join(grammar) + "\n")  # the grammar as text: no file to clean up
        decoder.activate_search("shop")
        self._decoder = decoder
        self.items = items

    def recognize(self, pcm: bytes) -> str:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


_CJK = re.compile(r"[\u3400-\u9fff]")


def voice_for(text: str) -> str:
    """espeak-ng's voice for ``text``: Mandarin where it has Chinese characters, else American English."""
    return "cmn" if _CJK.search(text) else "en-us"


def speak(text: str, rate_wpm: int = 165) -> np.ndarray:
    """espeak-ng's rendering of ``text`` (in its language's voice) as 48 kHz mono int16 samples."""
    wav = subprocess.run(["espeak-ng", "-v", voice_for(text), "-s", str(rate_wpm), "--stdout", text], check=True,
                         capture_output=True, timeout=20).stdout
    return to_pcm(wav, OUT_RATE)


def sorry(heard: str) -> str:
    """What to say when the question was not understood, in the language it seems to have been asked in."""
    return "抱歉，我没听清，请再问一次。" if _CJK.search(heard) else "Sorry, I did not catch that. Could you ask again?"


def to_pcm(data: bytes, rate: int) -> np.ndarray:
    """Any audio file's bytes as mono int16 samples at ``rate``."""
    import io

    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    with av.open(io.BytesIO(data), mode="r") as container:
        chunks = [g.to_ndarray().reshape(-1) for f in container.decode(audio=0) for g in resampler.resample(f)]
    chunks += [g.to_ndarray().reshape(-1) for g in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)


class SpeechTrack(AudioStreamTrack):
    """Audio the assistant says: queued samples, silence when there are none; ``stop_speaking`` cuts it off."""

    def __init__(self) -> None:
        super().__init__()
        self._samples: deque[np.ndarray] = deque()
        self._pts = 0
        self._t0: float | None = None  # (aiortc's AudioStreamTrack keeps its own `_start`)
        self.on_first_sound: Callable[[], None] | None = None
        self.finished_at: float | None = None  # when the last sample of what it was given to say went out

    @property
    def speaking(self) -> bool:
        return bool(self._samples)

    def say(self, samples: np.ndarray) -> None:
        self.finished_at = None
        for i in range(0, len(samples), OUT_SAMPLES):
            chunk = samples[i:i + OUT_SAMPLES]
            self._samples.append(np.pad(chunk, (0, OUT_SAMPLES - len(chunk))))

    def stop_speaking(self) -> None:
        self._samples.clear()

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._pts += OUT_SAMPLES
        wait = self._t0 + self._pts / OUT_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._samples:
            samples = self._samples.popleft()
            if self.on_first_sound is not None:
                self.on_first_sound()
                self.on_first_sound = None
            if not self._samples:
                self.finished_at = time.monotonic()
        else:
            samples = np.zeros(OUT_SAMPLES, np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = OUT_RATE, self._pts, fractions.Fraction(1, OUT_RATE)
        return frame


class VoiceAssistant:
    """Listens to one caller's audio frames, answers through ``track``."""

    def __init__(self, recognize: Callable[[bytes], Awaitable[str]], answer: Callable[[str], Awaitable[str | None]],
                 track: SpeechTrack, say: Callable[[str], Awaitable[np.ndarray]] | None = None) -> None:
        """``recognize``: 16 kHz mono s16 utterance -> text (pocketsphinx offline, or a speech API);
        ``say``: text -> 48 kHz samples (espeak-ng by default)."""
        self.recognize = recognize
        self.answer = answer
        self.track = track
        self.say = say or (lambda text: asyncio.get_running_loop().run_in_executor(None, speak, text))
        self.spoken_ms: list[float] = []  # the time ``say`` took for each answer (a speech server's own time)
        self.detector = SpeechDetector()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self.heard: list[str] = []
        self.said: list[str] = []
        self.response_ms: list[float] = []  # end of the caller's speech -> first answer audio
        self.interruption_ms: list[float] = []  # the caller starts speaking -> the answer stops
        self._busy: asyncio.Task[None] | None = None

    async def run(self, frames: Any) -> None:
        """``frames``: an async source of the caller's decoded audio frames (an aiortc track's recv)."""
        while True:
            frame = await frames()
            for piece in self._resampler.resample(frame):
                for event in self.detector.feed(piece.to_ndarray().tobytes()):
                    if event == "start" and (self.track.speaking or self._busy is not None):
                        started = time.monotonic()
                        self.track.stop_speaking()
                        if self._busy is not None:
                            self._busy.cancel()
                            self._busy = None
                        self.interruption_ms.append((time.monotonic() - started) * 1000)
                    elif event == "end":
                        utterance = self.detector.take_utterance()
                        self._busy = asyncio.create_task(self._respond(utterance, time.monotonic()))

    async def _respond(self, utterance: bytes, ended: float) -> None:
        text = await self.recognize(utterance)
        self.heard.append(text)
        if not text.strip():
            return
        reply = await self.answer(text) or sorry(text)
        began = time.monotonic()
        samples = await self.say(reply)
        self.spoken_ms.append((time.monotonic() - began) * 1000)

        def first_sound() -> None:
            self.response_ms.append((time.monotonic() - ended) * 1000)

        self.track.on_first_sound = first_sound
        self.said.append(reply)
        self.track.say(samples)
        self._busy = None
