"""Ingest: a stream an encoder pushes over RTMP (OBS's default output, vMix, hardware encoders, phone apps such
as Larix) or SRT (the same encoders on lossy links, contribution hardware) published into a room as an
ordinary host's stream.

A bridge beside the server, as LiveKit Ingress is: it listens where the encoder pushes (FFmpeg's RTMP listener,
through PyAV; for SRT, Debian's ffmpeg built with libsrt, which PyAV's wheel lacks, hands the stream's MPEG-TS
over a pipe, copied as is), joins the room with a host token and publishes over WebRTC with the project's
client library.
The H.264 passes through as the encoder made it (FFmpeg's ``h264_mp4toannexb`` filter turns FLV's
length-prefixed NAL units into the start-code form RTP packetizers read, SPS/PPS before each keyframe); the
audio is decoded and re-encoded to Opus, since WebRTC has no AAC. Viewers asking for a keyframe wait for the
encoder's next one (RTMP has no way to ask): set the encoder's keyframe interval to 1-2 s.

Refused with one line for the operator: video that is not H.264, and B-frames (WebRTC decoders show frames
in the order they come; x264's main and high profiles reorder them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import logging
import select
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

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


def srt_listener_url(listen: str) -> str:
    """``srt://HOST:PORT?opts`` as FFmpeg's SRT listener: ``mode=listener`` added, the operator's own options
    (``passphrase``, ``latency``, ...) kept. Raises IngestError for an address without a port."""
    parts = urlsplit(listen)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "srt" or not parts.hostname or port is None:
        raise IngestError(f"{listen!r} is not an srt://HOST:PORT address to listen at")
    options = dict(parse_qsl(parts.query))
    if "passphrase" in options and not 10 <= len(options["passphrase"]) <= 79:  # libsrt refuses others
        raise IngestError("an SRT passphrase is 10 to 79 characters long")
    options["mode"] = "listener"
    return f"srt://{parts.hostname}:{port}?{urlencode(options)}"


class SrtReceiver:
    """FFmpeg's SRT listener (Debian's ffmpeg is built with libsrt; PyAV's wheel is not) waiting for one
    encoder and copying its MPEG-TS, untouched, to a pipe PyAV reads (``input_url``). It exits when its caller
    leaves: one receiver per encoder session. A caller without the listener's ``passphrase`` is refused by
    libsrt's handshake; the ``streamid`` is not checked."""

    def __init__(self, listen: str) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise IngestError("SRT ingest needs ffmpeg built with libsrt (Debian: apt install ffmpeg)")
        # Its input probe bounded as the bridge's own (a short TS start says what it carries); the video's
        # first stream and the audio's, copied, flushed packet by packet, never held back to interleave
        # them (FFmpeg waits for a packet of every stream by default: video would wait for the next audio),
        # each audio frame in a PES of its own (not ~180 ms of them gathered), each picture's PES with its
        # length, so the bridge's demuxer hands it on whole instead of waiting for the next one to start.
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-analyzeduration", "300000",
                   "-probesize", "65536", "-i", srt_listener_url(listen), "-map", "0:v:0", "-map", "0:a:0?",
                   "-c", "copy", "-max_interleave_delta", "1", "-f", "mpegts", "-pes_payload_size", "0",
                   "-omit_video_pes_length", "0", "-flush_packets", "1", "pipe:1"]
        self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        assert self._proc.stdout is not None
        self.input_url = f"pipe:{self._proc.stdout.fileno()}"
        # libsrt logs every refused caller (a wrong passphrase) itself, past FFmpeg's log level: read as it
        # comes, keeping the last lines, so a flood of them never fills the pipe and stalls the receiver.
        self._said: collections.deque[str] = collections.deque(maxlen=4)
        threading.Thread(target=self._drain, name="srt-receiver-log", daemon=True).start()

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        with self._proc.stderr:
            for line in self._proc.stderr:
                self._said.append(line.decode(errors="replace").strip())

    def wait(self, timeout: float) -> bool:
        """Whether the encoder's stream (or the receiver's end) is there to read within ``timeout`` seconds."""
        assert self._proc.stdout is not None
        readable, _, _ = select.select([self._proc.stdout], [], [], timeout)
        return bool(readable)

    def why_ended(self) -> str:
        """FFmpeg's last line once it has exited ('' while it runs)."""
        if self._proc.poll() is None:
            return ""
        return self._said[-1] if self._said else f"ffmpeg exited with {self._proc.returncode}"

    def stop(self) -> None:
        """End the receiver (from any thread): whoever reads its pipe sees the stream end."""
        if self._proc.poll() is None:
            self._proc.kill()

    def close(self) -> None:
        """Stop it and close its pipes: only from the thread that reads them, or once nobody does."""
        self.stop()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()  # stderr: the log reader's, closed by its end


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

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, receiver: SrtReceiver | None = None) -> None:
        self.url = url
        self.receiver = receiver
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
        source, form = self.url, None
        if self.receiver is not None:  # SRT: the receiver's pipe, once its encoder has sent something
            if not self.receiver.wait(LISTEN_POLL):
                raise NoEncoderYet(self.url)
            source, form = self.receiver.input_url, "mpegts"
            del options["listen"], options["timeout"]
        try:
            self._container = av.open(source, mode="r", format=form, options=options,
                                      timeout=(OPEN_TIMEOUT, READ_TIMEOUT))
            if self._quit.is_set():  # given up on while it connected
                self._release()
                raise NoEncoderYet(self.url)
        except TimeoutError:
            raise NoEncoderYet(self.url) from None
        except (av.FFmpegError, OSError) as exc:
            why = self.receiver.why_ended() if self.receiver is not None else ""
            raise IngestError(f"cannot listen at {self.url} or read its encoder ({why or exc})") from None
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
        """Close the container (and an SRT receiver): only from the thread that reads it."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self.receiver is not None:
            self.receiver.close()

    def close(self) -> None:
        """Ask the reading thread to stop (it closes the container within ``READ_TIMEOUT``; an SRT receiver's
        stream ends at once)."""
        self._quit.set()
        if self.receiver is not None:
            self.receiver.stop()


async def _accept(listen: str, loop: asyncio.AbstractEventLoop, listen_timeout: float | None,
                  on_event: Callable[[str], None]) -> IngestSession | None:
    """The next encoder that can be relayed; None once ``listen_timeout`` seconds passed without one."""
    waited = 0.0
    receiver: SrtReceiver | None = None  # SRT: kept across polls, a new one after each encoder
    try:
        while listen_timeout is None or waited < listen_timeout:
            if listen.startswith("srt://") and receiver is None:
                receiver = SrtReceiver(listen)
            session = IngestSession(listen, loop, receiver)
            try:
                await asyncio.to_thread(session.open)
                receiver = None  # the session's now
                return session
            except NoEncoderYet:
                waited += LISTEN_POLL
            except IngestError as exc:  # said to its operator; the next one may be set up right
                on_event(str(exc))
                if receiver is not None:
                    receiver.close()
                    receiver = None
                await asyncio.sleep(1.0)  # an encoder retrying at once must not spin us
                waited += 1.0
        on_event(f"no encoder connected in {listen_timeout:g} s")
        return None
    finally:
        if receiver is not None:  # cancelled, or given up: a thread may still be waiting on it
            receiver.stop()


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
