"""Restreaming: a host pushes the show to other platforms at once (YouTube, Twitch, Douyin, Taobao: anything
that takes RTMP or RTMPS with a stream key), while it runs here.

One ``Destination`` per URL and key, per room (``MAX_PER_ROOM``). Its encoded frames, as received (the
room's first publisher: H.264 video, Opus audio), are written as a Matroska stream (``rtc.mediafile``) into
an FFmpeg child's stdin; FFmpeg passes the H.264 through, re-encodes the audio to AAC (what RTMP platforms
take) and speaks RTMP(S) to the platform. FFmpeg is the RTMP client here because it is the one every platform
is tested against.

A VP8 show (a browser host's default) or a VP9 one is made H.264 once per room, whatever the number of its destinations:
one ``relay.transcode.Transcoder`` (``_SharedTranscode``) whose frames every destination of the room takes,
closed with the room's last destination; at most ``max_transcodes`` such rooms per node (past that a VP8
show's destination is refused with the reason; an H.264 show costs nothing to restream).

What the host sees of each destination: ``connecting`` (FFmpeg started), ``live`` (the platform took the
stream: FFmpeg's output is moving), ``retrying`` (it dropped or was refused; again after 1, 2, 4... 30 s,
from the next keyframe) or ``failed`` (refused ``FAIL_AFTER`` times in a row without ever going live: a wrong
key, a wrong URL), with the reason FFmpeg gave, the key cut out. Keys are kept in memory only, never logged,
never shown back (the URL is shown without them).

The show never waits for a destination: frames go through a bounded queue (``QUEUE_FRAMES``); a destination
that cannot keep up loses frames (counted) and restarts at the next keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.router import MediaRouter
from relay.tracks import EncodedFrame, PublishedTrack
from relay.transcode import DECODERS as TRANSCODED
from relay.transcode import Transcoder
from rtc.mediafile import MediaFileWriter

log = logging.getLogger(__name__)

MAX_PER_ROOM = 4
QUEUE_FRAMES = 300  # ~5 s of audio and video
FAIL_AFTER = 4  # refusals in a row, never live, before a destination is "failed"
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
_URL = re.compile(r"^rtmps?://[A-Za-z0-9.\-\[\]:]{1,255}(/[\w.\-~%/]*)?$")


class RestreamError(ValueError):
    """A destination that cannot be added, with the reason for the host."""


def validate_destination(url: Any, key: Any) -> None:
    if not isinstance(url, str) or not _URL.match(url) or len(url) > 1024:
        raise RestreamError("url must be rtmp://HOST[:PORT]/APP or rtmps://... (the platform's server URL)")
    if not isinstance(key, str) or not 1 <= len(key) <= 512 or not re.fullmatch(r"[\w.\-~=?&%+/:@!$]*", key):
        raise RestreamError("key must be 1-512 characters of the platform's stream key")


def redact(text: str, secrets_: list[str]) -> str:
    """FFmpeg's words with every secret (the key, the URL with it) cut out."""
    for secret in sorted(secrets_, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _codec_of(track: PublishedTrack) -> str:
    """The track's codec, lower case: as its packets say, or as negotiated before the first one came."""
    return (track.codec_name or (track.codec.name if track.codec is not None else "")).lower()


_REFUSALS = (("Connection refused", "nothing answers at that address and port"),
             ("Input/output error", "the platform closed the connection before taking the stream (a wrong or "
                                    "expired stream key?)"),
             ("Connection timed out", "the platform did not answer (a firewall, a wrong address?)"),
             ("Name or service not known", "that host name does not resolve"),
             ("Failed to resolve", "that host name does not resolve"))


def explain_refusal(reason: str) -> str:
    """FFmpeg's words for a push that never went live, with what they usually mean put first."""
    for words, meaning in _REFUSALS:
        if words in reason:
            return f"{meaning}: {reason}"
    return reason


class _Pipe:
    """What the Matroska muxer writes to: bytes collected for the writer task."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


@dataclass
class Destination:
    id: str
    url: str
    key: str = field(repr=False)
    state: str = "connecting"
    reason: str = ""
    attempts: int = 0
    frames_dropped: int = 0
    live_since: float | None = None

    @property
    def target(self) -> str:
        return f"{self.url.rstrip('/')}/{self.key}"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "state": self.state, "reason": self.reason,
                "attempts": self.attempts, "frames_dropped": self.frames_dropped,
                "live_s": round(time.time() - self.live_since, 1) if self.live_since else None}


class _SharedTranscode:
    """A VP8 show's video made H.264 once for all of its room's destinations (``listeners``)."""

    def __init__(self, track: PublishedTrack) -> None:
        self.track = track
        self.listeners: list[Callable[[EncodedFrame], None]] = []
        top = len(track.layers) - 1
        self.transcoder = Transcoder(_codec_of(track), self._output,
                                     lambda: track.request_keyframe("restream transcode", layer=top),
                                     bitrate=2_500_000)  # what platforms ask of a 720p stream, at most
        track.observers.append(self._observe)

    def _observe(self, track: PublishedTrack, frame: EncodedFrame, chain_broken: bool) -> None:
        self.transcoder.put(frame.data, frame.timestamp, frame.keyframe)

    def _output(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        frame = EncodedFrame(data, timestamp, keyframe)
        for listener in list(self.listeners):
            listener(frame)

    def close(self) -> None:
        if self._observe in self.track.observers:
            self.track.observers.remove(self._observe)
        self.transcoder.close()


class _Push:
    """One destination's work: the frames it is handed, FFmpeg runs after runs, its state. A VP8 show's video
    comes from the room's ``_SharedTranscode`` (``transcoded``), already H.264."""

    def __init__(self, destination: Destination, tracks: dict[str, PublishedTrack], ffmpeg: str,
                 transcoded: _SharedTranscode | None = None) -> None:
        self.destination = destination
        self.tracks = tracks
        self.ffmpeg = ffmpeg
        self.transcoded = transcoded
        self.queue: asyncio.Queue[tuple[str, EncodedFrame] | None] = asyncio.Queue(QUEUE_FRAMES)
        self.task: asyncio.Task[None] | None = None
        self._observers: dict[str, Any] = {}

    def _take(self, kind: str, frame: EncodedFrame) -> None:
        try:
            self.queue.put_nowait((kind, frame))
        except asyncio.QueueFull:
            self.destination.frames_dropped += 1

    def _take_transcoded(self, frame: EncodedFrame) -> None:
        self._take("video", frame)

    def start(self) -> None:
        for kind, track in self.tracks.items():
            if kind == "video" and self.transcoded is not None:
                self.transcoded.listeners.append(self._take_transcoded)
                continue

            def observe(track: PublishedTrack, frame: EncodedFrame, chain_broken: bool, kind: str = kind) -> None:
                self._take(kind, frame)
            self._observers[kind] = observe
            track.observers.append(observe)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for kind, observe in self._observers.items():
            if observe in self.tracks[kind].observers:
                self.tracks[kind].observers.remove(observe)
        if self.transcoded is not None and self._take_transcoded in self.transcoded.listeners:
            self.transcoded.listeners.remove(self._take_transcoded)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        refusals = 0
        while True:
            went_live, reason = await self._once()
            d = self.destination
            d.attempts += 1
            refusals = 0 if went_live else refusals + 1
            d.reason = reason
            if refusals >= FAIL_AFTER:
                d.state = "failed"
                log.warning("restream failed", extra={"destination": d.id, "reason": reason})
                return
            d.state = "retrying"
            d.live_since = None
            await asyncio.sleep(BACKOFF[min(d.attempts - 1, len(BACKOFF) - 1)])

    async def _once(self) -> tuple[bool, str]:
        """One FFmpeg run: (whether the platform took the stream, why it ended)."""
        d = self.destination
        d.state = "connecting"
        codecs = {kind: _codec_of(track) for kind, track in self.tracks.items()}
        if self.transcoded is not None:
            codecs["video"] = "h264"
        args = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-progress", "pipe:2", "-nostats",
                "-f", "matroska", "-i", "pipe:0", "-map", "0", "-c:v", "copy"]
        args += ["-c:a", "aac", "-b:a", "128k", "-ar", "44100"] if "audio" in codecs else []
        args += ["-f", "flv", "-flvflags", "no_duration_filesize", d.target]
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        errors: deque[str] = deque(maxlen=5)
        live = asyncio.Event()
        reader = asyncio.create_task(self._read(proc, errors, live))
        feeder = asyncio.create_task(self._feed(proc, codecs))
        for kind, track in self.tracks.items():
            if kind == "video" and self.transcoded is not None:
                self.transcoded.transcoder.keyframe()  # ours: the publisher's keyframes are the transcoder's
            else:
                track.request_keyframe("restream", layer=len(track.layers) - 1)
        try:
            await asyncio.wait({reader, feeder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            feeder.cancel()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, feeder, return_exceptions=True)
        reason = redact(" / ".join(errors) or f"ffmpeg ended ({proc.returncode})", [d.target, d.key])
        return live.is_set(), reason if live.is_set() else explain_refusal(reason)

    async def _read(self, proc: asyncio.subprocess.Process, errors: deque[str], live: asyncio.Event) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").strip()
            if text.startswith("out_time_us=") and text[12:].isdigit() and int(text[12:]) > 0:
                if not live.is_set():
                    live.set()
                    self.destination.state = "live"
                    self.destination.live_since = time.time()
                    self.destination.reason = ""
            elif "=" not in text.split(" ", 1)[0] and text:
                errors.append(text[:200])

    async def _feed(self, proc: asyncio.subprocess.Process, codecs: dict[str, str]) -> None:
        """Frames from the queue, as Matroska, into FFmpeg: from the first keyframe (the writer waits)."""
        assert proc.stdin is not None
        while not self.queue.empty():  # what queued during the last run's retry wait is stale
            self.queue.get_nowait()
        pipe = _Pipe()
        writer = MediaFileWriter(pipe, codecs, cluster_ms=200)  # short clusters: the platform gets it at once
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                kind, frame = item
                writer.write(kind, frame.data, frame.timestamp, frame.keyframe)
                data = pipe.take()
                if data:
                    proc.stdin.write(data)
                    await asyncio.wait_for(proc.stdin.drain(), 5)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()


class Restreams:
    """Every room's destinations on this node. ``close()`` at shutdown."""

    def __init__(self, router: MediaRouter, ffmpeg: str = "ffmpeg", max_transcodes: int = 2) -> None:
        self.router = router
        self.ffmpeg = ffmpeg
        self.max_transcodes = max_transcodes
        self.rooms: dict[str, dict[str, _Push]] = {}
        self.transcodes: dict[str, _SharedTranscode] = {}  # by room: its VP8 show made H.264 once

    def counts(self) -> tuple[dict[str, int], int]:
        """Destinations by state, and the frames they dropped, over every room (for /metrics)."""
        states = dict.fromkeys(("connecting", "live", "retrying", "failed"), 0)
        dropped = 0
        for pushes in self.rooms.values():
            for push in pushes.values():
                states[push.destination.state] = states.get(push.destination.state, 0) + 1
                dropped += push.destination.frames_dropped
        return states, dropped

    def list(self, room: str) -> list[dict[str, Any]]:
        return [push.destination.public() for push in self.rooms.get(room, {}).values()]

    def add(self, room: str, url: Any, key: Any) -> dict[str, Any]:
        """Start pushing the room's show to ``url`` with ``key`` (anything else from a request is refused)."""
        validate_destination(url, key)
        pushes = self.rooms.setdefault(room, {})
        if len(pushes) >= MAX_PER_ROOM:
            raise RestreamError(f"a show goes to at most {MAX_PER_ROOM} destinations")
        if any(p.destination.url == url and p.destination.key == key for p in pushes.values()):
            raise RestreamError("that destination is there already")
        tracks = self._tracks_of(room)
        if "video" not in tracks:
            raise RestreamError("nothing is on air in this room: go live first")
        transcoded = self._transcode_for(room, tracks["video"])
        destination = Destination(secrets.token_urlsafe(9), url, key)
        push = pushes[destination.id] = _Push(destination, tracks, self.ffmpeg, transcoded)
        push.start()
        return destination.public()

    def _transcode_for(self, room: str, video: PublishedTrack) -> _SharedTranscode | None:
        """None for an H.264 show (passed through); the room's transcode for a VP8 one, started if needed."""
        codec = _codec_of(video)
        if codec == "h264":
            return None
        if codec not in TRANSCODED:
            raise RestreamError("restreaming takes H.264, VP8 or VP9 video (OBS, an RTMP/SRT encoder, the page); "
                                f"this show sends {codec.upper() or 'an unknown codec'}")
        current = self.transcodes.get(room)
        if current is not None and current.track is video:
            return current
        if current is not None:  # the room's publisher came back with a new track: the old transcode is idle
            current.close()
            del self.transcodes[room]
        if len(self.transcodes) >= self.max_transcodes:
            raise RestreamError(f"restreaming a {codec.upper()} show needs a transcode and this server runs the most "
                                f"it may ({self.max_transcodes}); a host sending H.264 restreams at no cost")
        self.transcodes[room] = _SharedTranscode(video)
        return self.transcodes[room]

    async def remove(self, room: str, destination_id: str) -> bool:
        push = self.rooms.get(room, {}).pop(destination_id, None)
        if push is None:
            return False
        await push.stop()
        if not self.rooms.get(room) and room in self.transcodes:  # the room's last destination: no one takes it
            self.transcodes.pop(room).close()
        return True

    def _tracks_of(self, room: str) -> dict[str, PublishedTrack]:
        for publisher in self.router.publishers_of(room):
            tracks = {kind: track for kind, track in publisher.tracks.items() if not track.closed}
            if "video" in tracks:
                return tracks
        return {}

    async def close(self) -> None:
        for pushes in self.rooms.values():
            for push in pushes.values():
                await push.stop()
        self.rooms.clear()
        for transcoded in self.transcodes.values():
            transcoded.close()
        self.transcodes.clear()
