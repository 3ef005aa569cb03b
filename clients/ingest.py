"""Ingest: a stream an encoder pushes over RTMP (OBS's default output, vMix, hardware encoders, phone apps such
as Larix) published into a room as an ordinary host's stream.

A bridge beside the server, as LiveKit Ingress is: it listens where the encoder pushes (FFmpeg's RTMP listener,
through PyAV), joins the room with a host token and publishes over WebRTC with the project's client library.
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
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

VIDEO_CLOCK = fractions.Fraction(1, 90000)
AUDIO_RATE = 48000
QUEUE_LIMIT = 300  # packets or frames waiting for the sender (~5 s of video): a stalled sender loses the oldest
OPEN_TIMEOUT = 30.0  # seconds an encoder has to finish connecting once it has started
LISTEN_POLL = 2  # seconds one wait for an encoder lasts (FFmpeg's listener blocks a thread; it comes back this often)
READ_TIMEOUT = 10.0  # seconds without data from a connected encoder: it is gone


class IngestError(Exception):
    """What the encoder sent cannot be relayed; the message is one line for its operator."""


class NoEncoderYet(IngestError):
    """Nobody connected during one ``LISTEN_POLL``."""


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
    """One encoder's connection: ``open`` waits for it (blocking: run it in a thread), then ``run`` demuxes
    until it ends, feeding ``video`` (H.264 packets, start-code form, 90 kHz) and ``audio`` (48 kHz stereo
    frames for the Opus encoder).

    The FFmpeg container belongs to the thread that uses it: ``close`` from elsewhere only asks it to stop
    (closing it under a read in progress crashes the process), and the thread closes it on its way out."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.video = _QueueTrack("video")
        self.audio = _QueueTrack("audio")
        self.packets = 0
        self.size: tuple[int, int] | None = None
        self._loop = loop
        self._container: Any = None
        self._quit = threading.Event()

    def open(self) -> None:
        """Listen at ``url`` for ``LISTEN_POLL`` seconds, until an encoder connects and its streams are known.
        Raises NoEncoderYet, or IngestError for an encoder that cannot be relayed."""
        # FFmpeg's RTMP listener (timeout: seconds). Its stream probing reads up to 5 s by default before
        # the streams count as known; an encoder's FLV says what it sends in its first packets, so a short
        # probe is enough and the room sees the stream sooner.
        options = {"listen": "1", "timeout": str(LISTEN_POLL), "analyzeduration": "300000", "probesize": "262144"}
        try:
            self._container = av.open(self.url, mode="r", options=options, timeout=(OPEN_TIMEOUT, READ_TIMEOUT))
            if self._quit.is_set():  # given up on while it connected
                self._release()
                raise NoEncoderYet(self.url)
        except TimeoutError:
            raise NoEncoderYet(self.url) from None
        except (av.FFmpegError, OSError) as exc:
            raise IngestError(f"cannot listen at {self.url} or read its encoder ({exc})") from None
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
                if packet.size == 0 or packet.pts is None:
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

    def close(self) -> None:
        """Ask the reading thread to stop (it closes the container within ``READ_TIMEOUT``)."""
        self._quit.set()


async def _accept(listen: str, loop: asyncio.AbstractEventLoop, listen_timeout: float | None,
                  on_event: Callable[[str], None]) -> IngestSession | None:
    """The next encoder that can be relayed; None once ``listen_timeout`` seconds passed without one."""
    waited = 0.0
    while listen_timeout is None or waited < listen_timeout:
        session = IngestSession(listen, loop)
        try:
            await asyncio.to_thread(session.open)
            return session
        except NoEncoderYet:
            waited += LISTEN_POLL
        except IngestError as exc:  # said to its operator; the next one may be set up right
            on_event(str(exc))
            await asyncio.sleep(1.0)  # an encoder retrying at once must not spin us
            waited += 1.0
    on_event(f"no encoder connected in {listen_timeout:g} s")
    return None


async def run_ingest(listen: str, publish: Callable[[list[MediaStreamTrack]], Any], *,
                     sessions: int | None = None, listen_timeout: float | None = None,
                     on_event: Callable[[str], None] = print) -> int:
    """Accept encoders at ``listen`` one after another (``sessions`` of them, or forever) and publish each
    through ``publish(tracks)`` (an async context manager: the room's media session for as long as the
    encoder sends). Returns how many were relayed."""
    loop = asyncio.get_running_loop()
    relayed = 0
    while sessions is None or relayed < sessions:
        on_event(f"waiting for an encoder at {listen}")
        session = await _accept(listen, loop, listen_timeout, on_event)
        if session is None:
            return relayed
        assert session.size is not None
        on_event(f"encoder connected: H.264 {session.size[0]}x{session.size[1]}")
        tracks: list[MediaStreamTrack] = [session.video, session.audio]
        try:
            async with publish(tracks):
                reason = await asyncio.to_thread(session.run)
        except IngestError as exc:
            reason = str(exc)
        finally:
            session.close()
        relayed += 1
        on_event(f"stream ended: {reason}")
    return relayed
