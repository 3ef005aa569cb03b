"""Ingest: a stream an encoder pushes over RTMP (OBS's default output, vMix, hardware encoders, phone apps such
as Larix) or SRT (the same encoders on lossy links, contribution hardware) published into a room as an
ordinary host's stream.

A bridge beside the server, as LiveKit Ingress is. Each encoder's stream key (RTMP) or streamid (SRT) is a
host or co-host token of a room: the bridge joins that room with it, and the server, which alone can check a
token (its signature, expiry, revocation), says yes or no before a byte is relayed (``IngestBridge.admit``).
The doors encoders knock at are real servers (``clients.ingest_doors``): nginx's RTMP module, GStreamer's SRT
listener. Behind them, one ``IngestSession`` per encoder reads the stream with FFmpeg (PyAV) and publishes it
over WebRTC with the project's client library.

The H.264 passes through as the encoder made it (FFmpeg's ``h264_mp4toannexb`` filter turns FLV's
length-prefixed NAL units into the start-code form RTP packetizers read, SPS/PPS before each keyframe); the
audio is decoded and re-encoded to Opus, since WebRTC has no AAC. Viewers asking for a keyframe wait for the
encoder's next one (RTMP has no way to ask): set the encoder's keyframe interval to 1-2 s.

Refused with one line for the operator: video that is not H.264, and B-frames (WebRTC decoders show frames
in the order they come; x264's main and high profiles reorder them).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from clients.client import ConnectionClosed, LiveClient, ServerError
from clients.media import MediaSession
from protocol import ProtocolError
from protocol.tokens import token_claims

log = logging.getLogger(__name__)

VIDEO_CLOCK = fractions.Fraction(1, 90000)
AUDIO_RATE = 48000
QUEUE_LIMIT = 300  # packets or frames waiting for the sender (~5 s of video): a stalled sender loses the oldest
OPEN_TIMEOUT = 10.0  # seconds an admitted encoder's stream has to start
READ_TIMEOUT = 10.0  # seconds without data from a connected encoder: it is gone
ADMIT_TIMEOUT = 5.0  # seconds the server has to answer the join an encoder's key asks for
MAX_KEY_CHARS = 4096  # a token is ~300; anything far longer is not one
PUBLISHER_ROLES = ("host", "cohost")


class IngestError(Exception):
    """What the encoder sent cannot be relayed, or a door cannot open; the message is one line for its
    operator."""


class _QueueTrack(MediaStreamTrack):
    """A track whose packets or frames the demuxing thread hands over; None ends it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.dropped = 0

    def offer(self, item: Any) -> None:
        """From the event loop: queue ``item``, dropping the oldest past ``QUEUE_LIMIT``."""
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    async def recv(self) -> Any:
        item = await self.queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item


class IngestSession:
    """One admitted encoder's stream: ``open`` starts reading it (blocking: run it in a thread), then ``run``
    demuxes until it ends, feeding ``video`` (H.264 packets, start-code form, 90 kHz) and ``audio`` (48 kHz
    stereo frames for the Opus encoder).

    ``source`` is what FFmpeg opens: the RTMP door's loopback playback of the stream, or the SRT door's pipe
    (``form`` "mpegts"). The FFmpeg container belongs to the thread that uses it: ``close`` from elsewhere
    only asks it to stop (closing it under a read in progress crashes the process), and the thread closes it
    on its way out."""

    def __init__(self, source: str, loop: asyncio.AbstractEventLoop, *, form: str | None = None,
                 options: dict[str, str] | None = None, on_release: Callable[[], None] | None = None) -> None:
        self.source = source
        self.form = form
        self.options = options or {}
        self.video = _QueueTrack("video")
        self.audio = _QueueTrack("audio")
        self.packets = 0
        self.size: tuple[int, int] | None = None
        self._loop = loop
        self._container: Any = None
        self._quit = threading.Event()
        self._on_release = on_release  # what the source's owner lets go of once nobody reads it

    def open(self) -> None:
        """Read the stream's start until its streams are known. Raises IngestError for a stream that does not
        start or cannot be relayed."""
        # FFmpeg's probing reads up to 5 s by default before the streams count as known; an encoder's FLV or
        # TS says what it sends in its first packets, so a short probe is enough and the room sees it sooner.
        options = {"analyzeduration": "300000", "probesize": "262144", **self.options}
        try:
            self._container = av.open(self.source, mode="r", format=self.form, options=options,
                                      timeout=(OPEN_TIMEOUT, READ_TIMEOUT))
        except (av.FFmpegError, OSError, TimeoutError) as exc:
            self._release()
            raise IngestError(f"the encoder's stream did not start ({exc})") from None
        if self._quit.is_set():  # given up on while it opened
            self._release()
            raise IngestError("stopped")
        video = next((s for s in self._container.streams if s.type == "video"), None)
        if video is None or video.codec_context.name != "h264":
            self._release()
            found = video.codec_context.name if video is not None else "no video"
            raise IngestError(f"the encoder sends {found}: set its video encoder to H.264")
        self.size = (video.codec_context.width, video.codec_context.height)

    def run(self) -> str:
        """Demux until the encoder stops; returns why it ended. Raises IngestError for what cannot go on."""
        container = self._container
        assert container is not None
        video = next(s for s in container.streams if s.type == "video")
        audio = next((s for s in container.streams if s.type == "audio"), None)
        to_annexb = av.BitStreamFilterContext("h264_mp4toannexb", video)
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=960)
        samples = 0
        last_pts: int | None = None
        hand = self._loop.call_soon_threadsafe
        try:
            for packet in container.demux(*(s for s in (video, audio) if s is not None)):
                if self._quit.is_set():
                    return "stopped"
                # Audio needs no timestamp of its own (its time is the samples counted so far), and MPEG-TS
                # carries one only on the first of the audio frames sharing a PES.
                if packet.size == 0 or (packet.pts is None and packet.stream is video):
                    continue
                self.packets += 1
                if packet.stream is video:
                    # B-frames: pictures come out of presentation order (a constant pts-dts offset, as a
                    # remux from MPEG-TS gives, is not that).
                    reordered = last_pts is not None and packet.pts < last_pts
                    last_pts = packet.pts
                    if reordered:
                        raise IngestError("the encoder sends B-frames, which WebRTC viewers cannot show in order: "
                                          "set its H.264 profile to baseline (or B-frames to 0)")
                    for out in to_annexb.filter(packet):
                        if out.pts is None or out.time_base is None:
                            continue
                        out.pts = out.dts = int(out.pts * out.time_base / VIDEO_CLOCK)
                        out.time_base = VIDEO_CLOCK
                        hand(self.video.offer, out)
                else:
                    for frame in audio.codec_context.decode(packet) if audio is not None else ():
                        for pcm in resampler.resample(frame):
                            pcm.pts, pcm.time_base = samples, fractions.Fraction(1, AUDIO_RATE)
                            samples += pcm.samples
                            hand(self.audio.offer, pcm)
        except av.FFmpegError as exc:
            return f"the encoder's connection ended ({exc.strerror or exc})"
        finally:
            self._release()
            with contextlib.suppress(RuntimeError):  # the loop may be gone (the bridge stopped)
                hand(self.video.offer, None)
                hand(self.audio.offer, None)
        return "the encoder stopped"

    def _release(self) -> None:
        """Close the container: only from the thread that reads it."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._on_release is not None:
            self._on_release()
            self._on_release = None

    def close(self) -> None:
        """Ask the reading thread to stop (it closes the container at its next packet, or within
        ``READ_TIMEOUT`` when none comes; the door ending the stream ends it at once)."""
        self._quit.set()


@dataclass
class _OnAir:
    """An admitted encoder: its key's room, who the token says it is, its connection to the room."""

    room: str
    user: str
    client: LiveClient
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class IngestBridge:
    """Encoders admitted by their key and relayed into its room, several at once (up to ``max_streams``).

    A door calls ``admit(key, address)`` when an encoder knocks (refusing it with the line returned, if
    any), ``relay(key, session)`` once it is in, and ``end(key)`` when the encoder leaves. A key is never
    logged: it is a token."""

    def __init__(self, url: str, *, max_streams: int = 8, on_event: Any = print) -> None:
        self.url = url
        self.max_streams = max_streams
        self.relayed = 0
        self._on_event = on_event
        self._on_air: dict[str, _OnAir] = {}
        self._admitting = asyncio.Semaphore(16)  # joins asked of the server at once (a flood of knocks waits)

    def say(self, line: str) -> None:
        self._on_event(line)

    async def admit(self, key: str, address: str) -> str | None:
        """Join the key's room with the key: None when the encoder may publish there, else one line saying
        why not (for the door's log; the encoder is refused)."""
        async with self._admitting:
            return await self._admit(key, address)

    async def _admit(self, key: str, address: str) -> str | None:
        if len(self._on_air) >= self.max_streams:
            return f"busy: {self.max_streams} streams on air already (--max-streams)"
        if not key or len(key) > MAX_KEY_CHARS:
            return "no stream key: set it to a host token of the room (live-relay token --role host)"
        if key in self._on_air:
            return "this stream key is on air already (one encoder per key)"
        try:
            room = token_claims(key).get("room")
        except ProtocolError:
            room = None
        if not isinstance(room, str):
            return "the stream key is not a live-relay token: set it to a host token of the room"
        client = LiveClient(self.url, room, key, name="ingest", reconnect=True)
        try:
            joined = await asyncio.wait_for(client.connect(), ADMIT_TIMEOUT)
        except ServerError as exc:
            return f"the server refused the stream key for room {room!r} ({exc})"
        except (aiohttp.ClientError, OSError, ConnectionClosed, TimeoutError) as exc:
            await client.close()
            return f"cannot reach the server at {self.url} ({exc or type(exc).__name__})"
        if joined.get("role") not in PUBLISHER_ROLES:
            await client.close()
            return f"the stream key is a {joined.get('role')}'s token: use a host or co-host token of {room!r}"
        self._on_air[key] = _OnAir(room, client.user, client)
        self.say(f"{room}: encoder from {address} admitted as {client.user!r}")
        return None

    async def release(self, key: str) -> None:
        """An admitted encoder that never got as far as its stream (SRT: a wrong passphrase): its place freed."""
        on_air = self._on_air.pop(key, None)
        if on_air is not None:
            await on_air.client.close()

    def end(self, key: str) -> None:
        """The encoder of ``key`` left (its door saw it go): its stream ends in the room now."""
        on_air = self._on_air.get(key)
        if on_air is not None:
            on_air.ended.set()

    async def relay(self, key: str, session: IngestSession) -> str:
        """Read an admitted encoder's stream and publish it in its room until the encoder leaves, the stream
        ends, or the server ends the key's connection (a revoked token). Says and returns why it ended; the
        door then lets the encoder go."""
        why = await self._relay(key, session)
        self.say(f"stream ended: {why}")
        return why

    async def _relay(self, key: str, session: IngestSession) -> str:
        on_air = self._on_air[key]
        try:
            try:
                await asyncio.to_thread(session.open)
            except IngestError as exc:
                return str(exc)
            assert session.size is not None
            self.say(f"{on_air.room}: H.264 {session.size[0]}x{session.size[1]} from the encoder")
            media = await MediaSession.publish(on_air.client, [session.video, session.audio],
                                               video_codec="H264")
            self.relayed += 1
            self.say(f"{on_air.room}: on air ({media.media_id})")
            try:
                return await self._until_over(on_air, session)
            finally:
                await media.close()
        finally:
            session.close()
            del self._on_air[key]
            await on_air.client.close()

    @staticmethod
    async def _until_over(on_air: _OnAir, session: IngestSession) -> str:
        reading = asyncio.ensure_future(asyncio.to_thread(session.run))
        left = asyncio.ensure_future(on_air.ended.wait())
        gone = asyncio.ensure_future(on_air.client.wait_gone())
        try:
            await asyncio.wait({reading, left, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (left, gone):
                waiter.cancel()
        if reading.done():
            try:
                return reading.result()
            except IngestError as exc:
                return str(exc)
        # The reading thread ends on its own (its container belongs to it): at its next packet, or at once
        # when the door ends the stream.
        reading.add_done_callback(lambda done: done.exception())
        if left.done() and not left.cancelled():
            return "the encoder left"
        return "the server ended the stream key's connection (revoked or expired token?)"
