"""A stand-in for an OpenAI-compatible speech server (an outside service, named so: a self-hosted Whisper, for
example) on a loopback port. It does not recognize speech: each transcription answers the next text the test
says the caller said, after checking the request carries a 16 kHz WAV with sound in it; it voices text with
espeak-ng's Mandarin (or English) voice. It records what it was sent and its own time per request, so a
latency measured through it can leave the stand-in's own time out."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
import wave
from typing import Any

import numpy as np
from aiohttp import web

from assistant.voice import voice_for
from tests.stand_in_model import serve_on_loopback


class StandInSpeech:
    def __init__(self, said: list[str], key: str) -> None:
        self.said = list(said)  # what the caller says, in order (then nothing)
        self.key = key
        self.transcriptions: list[dict[str, Any]] = []
        self.voiced: list[str] = []
        self.own_ms: list[float] = []  # this stand-in's time per request
        self.unauthorized = 0

    def _authorized(self, request: web.Request) -> bool:
        ok = request.headers.get("Authorization") == f"Bearer {self.key}"
        self.unauthorized += not ok
        return ok

    async def transcribe(self, request: web.Request) -> web.Response:
        began = time.monotonic()
        if not self._authorized(request):
            return web.json_response({"error": "bad key"}, status=401)
        form = await request.post()
        upload = form["file"]
        with wave.open(io.BytesIO(upload.file.read())) as w:  # type: ignore[union-attr]
            rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
        loud = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
        self.transcriptions.append({"rate": rate, "seconds": len(samples) / rate, "loud": loud,
                                    "model": form.get("model"), "language": form.get("language"),
                                    "prompt": form.get("prompt")})
        text = self.said.pop(0) if self.said and loud > 100 else ""
        self.own_ms.append((time.monotonic() - began) * 1000)
        return web.json_response({"text": text})

    async def speech(self, request: web.Request) -> web.Response:
        began = time.monotonic()
        if not self._authorized(request):
            return web.json_response({"error": "bad key"}, status=401)
        body = await request.json()
        text = str(body["input"])
        self.voiced.append(text)
        wav = await asyncio.to_thread(lambda: subprocess.run(
            ["espeak-ng", "-v", voice_for(text), "-s", "175", "--stdout", text], check=True, capture_output=True,
            timeout=20).stdout)
        self.own_ms.append((time.monotonic() - began) * 1000)
        return web.Response(body=wav, content_type="audio/wav")


async def serve_stand_in_speech(stand_in: StandInSpeech) -> tuple[web.AppRunner, str]:
    """(its runner, to clean up; its base URL, …/v1)."""
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", stand_in.transcribe)
    app.router.add_post("/v1/audio/speech", stand_in.speech)
    return await serve_on_loopback(app)
