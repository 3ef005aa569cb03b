"""Speech through an OpenAI-compatible speech API the operator names (a self-hosted Whisper server, for
example): ``/v1/audio/transcriptions`` for what the caller said, ``/v1/audio/speech`` for the answer's voice.

This is how the voice assistant speaks Chinese (and any language the operator's server knows): pocketsphinx's
bundled model is English only. Offline, without such a server, answers are still spoken in the answer's
language by espeak-ng (``assistant.voice.voice_for``: Mandarin, ``cmn``, for text with Chinese characters).

``SpeechApi.transcribe`` sends the caller's utterance as a 16 kHz WAV (with the shop's words as a ``prompt``,
which Whisper uses as vocabulary); ``SpeechApi.synthesize`` asks for WAV and returns 48 kHz mono samples.
Both raise ``SpeechError`` (the caller falls back: an apology, espeak-ng) and are bounded by ``timeout_s``.
"""

from __future__ import annotations

import io
import wave
from typing import Any

import aiohttp
import numpy as np

from assistant.voice import to_pcm

MAX_PROMPT = 400


class SpeechError(RuntimeError):
    """The speech server did not answer, or not with what was asked."""


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM as a WAV file's bytes."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


class SpeechApi:
    def __init__(self, base_url: str, api_key: str | None = None, stt_model: str = "whisper-1",
                 tts_model: str = "tts-1", voice: str = "alloy", language: str | None = None,
                 timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.stt_model, self.tts_model, self.voice, self.language = stt_model, tts_model, voice, language
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def transcribe(self, pcm: bytes, rate: int, vocabulary: list[str] | None = None) -> str:
        """What was said in ``pcm`` (16-bit mono at ``rate``)."""
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(pcm, rate), filename="utterance.wav", content_type="audio/wav")
        form.add_field("model", self.stt_model)
        form.add_field("response_format", "json")
        if self.language:
            form.add_field("language", self.language)
        if vocabulary:
            form.add_field("prompt", ", ".join(vocabulary)[:MAX_PROMPT])
        data = await self._post_json(f"{self.base_url}/audio/transcriptions", data=form)
        text = data.get("text")
        if not isinstance(text, str):
            raise SpeechError("the transcription has no text")
        return text.strip()

    async def synthesize(self, text: str, rate: int) -> np.ndarray:
        """``text`` spoken, as mono int16 samples at ``rate``."""
        body = {"model": self.tts_model, "input": text, "voice": self.voice, "response_format": "wav"}
        try:
            async with self._http().post(f"{self.base_url}/audio/speech", json=body) as response:
                if response.status != 200:
                    raise SpeechError(f"speech: HTTP {response.status}")
                audio = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SpeechError(f"speech: {type(exc).__name__}") from None
        try:
            return to_pcm(audio, rate)
        except Exception as exc:  # not audio at all
            raise SpeechError(f"speech: unreadable audio ({type(exc).__name__})") from None

    async def _post_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._http().post(url, **kwargs) as response:
                if response.status != 200:
                    raise SpeechError(f"transcription: HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SpeechError(f"transcription: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise SpeechError("transcription: not a JSON object")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
