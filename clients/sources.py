"""Synthetic media for demos, tests and load tests: a video test pattern that carries a frame counter and
a send timestamp in its pixels, readable back after encoding and decoding, and a tone.

The 64 bits (32-bit counter, 32-bit send time in ms) are drawn as 16x16 black or white blocks, aligned
to the codec's macroblocks so that lossy coding does not blur one block into the next.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

BLOCK = 16
BITS = 64
VIDEO_CLOCK = 90000


def stamp_ms() -> int:
    return int(time.time() * 1000) & 0xFFFFFFFF


def draw_code(image: np.ndarray, counter: int, sent_ms: int) -> None:
    """Write the code into the top of a YUV420p luma plane (or any 2-D uint8 array)."""
    value = ((counter & 0xFFFFFFFF) << 32) | (sent_ms & 0xFFFFFFFF)
    per_row = image.shape[1] // BLOCK
    for bit in range(BITS):
        row, col = divmod(bit, per_row)
        on = (value >> (BITS - 1 - bit)) & 1
        image[row * BLOCK:(row + 1) * BLOCK, col * BLOCK:(col + 1) * BLOCK] = 235 if on else 16


def read_code(image: np.ndarray) -> tuple[int, int]:
    """(counter, sent_ms) from a decoded luma plane."""
    per_row = image.shape[1] // BLOCK
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, per_row)
        centre = image[row * BLOCK + 4:row * BLOCK + 12, col * BLOCK + 4:col * BLOCK + 12]
        value = (value << 1) | int(centre.mean() > 128)
    return value >> 32, value & 0xFFFFFFFF


def read_frame(frame: object) -> tuple[int, int]:
    """(counter, sent_ms) from a decoded video frame (what a video track's ``recv`` gives)."""
    if not isinstance(frame, av.VideoFrame):
        raise TypeError(f"expected a decoded video frame, got {type(frame).__name__}")
    return read_code(frame.to_ndarray(format="yuv420p")[:frame.height])


def latency_ms(sent_ms: int) -> float:
    """Now minus a 32-bit millisecond stamp, wrap-around safe."""
    diff = (stamp_ms() - sent_ms) & 0xFFFFFFFF
    return float(diff - 2**32 if diff >= 2**31 else diff)


class CounterVideoTrack(MediaStreamTrack):
    """A moving test pattern at ``fps`` with the frame counter and send time encoded in the top rows."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30, start: int = 0) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.first = start  # counters start here: several sources are told apart by their range
        self.counter = 0
        self._start: float | None = None
        yy, xx = np.mgrid[0:height, 0:width]
        self._base = ((xx + yy) % 256).astype(np.uint8)

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.counter / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        luma = np.roll(self._base, self.counter * 4, axis=1)
        draw_code(luma, self.first + self.counter, stamp_ms())
        chroma = np.full((self.height // 2, self.width // 2), 128, np.uint8)
        frame = av.VideoFrame.from_ndarray(
            np.concatenate([luma, chroma.reshape(-1, self.width), chroma.reshape(-1, self.width)]),
            format="yuv420p")
        frame.pts = int(self.counter * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.counter += 1
        return frame


def pre_encode_vp8(width: int = 640, height: int = 480, fps: int = 30, seconds: float = 2.0, kbps: int = 1500,
                   gop: int | None = None) -> list[tuple[bytes, bool]]:
    """The test pattern encoded once with libvpx at ``kbps`` (a keyframe every ``gop`` frames, one second by
    default): (frame bytes, keyframe) for ``seconds`` of video, what ``ReplayVideoTrack`` sends again and
    again. Costs about a second of one core, once."""
    return pre_encode("vp8", width, height, fps, seconds, kbps, gop)


LIBVPX = {"vp8": "libvpx", "vp9": "libvpx-vp9"}


def pre_encode(codec_name: str, width: int = 640, height: int = 480, fps: int = 30, seconds: float = 2.0,
               kbps: int = 1500, gop: int | None = None) -> list[tuple[bytes, bool]]:
    """``pre_encode_vp8`` for VP8 or VP9 (libvpx, realtime, as a browser encodes)."""
    source = CounterVideoTrack(width, height, fps)
    codec: Any = av.CodecContext.create(LIBVPX[codec_name], "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = kbps * 1000
    codec.gop_size = gop or fps
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1"}
    frames: list[tuple[bytes, bool]] = []
    base = source._base
    for n in range(int(seconds * fps)):
        luma = np.roll(base, n * 4, axis=1)
        draw_code(luma, n, 0)
        chroma = np.full((height // 2, width // 2), 128, np.uint8)
        image = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma.reshape(-1, width), chroma.reshape(-1, width)]),
                                           format="yuv420p")
        image.pts = n
        image.time_base = codec.time_base
        for packet in codec.encode(image):
            frames.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in codec.encode(None):
        frames.append((bytes(packet), bool(packet.is_keyframe)))
    return frames


class ReplayVideoTrack(MediaStreamTrack):
    """Pre-encoded VP8 sent again and again at its frame rate, with timestamps that keep rising: a publisher
    for load tests that costs no encoder (aiortc packetizes what it is given). The picture's counter and
    send time repeat with each pass, so subscribers count and check packets and frames, not latency."""

    kind = "video"

    def __init__(self, frames: list[tuple[bytes, bool]], fps: int = 30) -> None:
        super().__init__()
        if not frames or not frames[0][1]:
            raise ValueError("pre-encoded video must start with a keyframe")
        self.frames, self.fps = frames, fps
        self.counter = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.counter / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        data, _ = self.frames[self.counter % len(self.frames)]
        packet = av.Packet(data)
        packet.pts = int(self.counter * VIDEO_CLOCK / self.fps)
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.counter += 1
        return packet


class ToneAudioTrack(MediaStreamTrack):
    """A quiet 440 Hz tone in 20 ms frames (48 kHz mono)."""

    kind = "audio"

    def __init__(self, rate: int = 48000, frequency: float = 440.0) -> None:
        super().__init__()
        self.rate = rate
        self.samples = rate // 50
        self.frequency = frequency
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._pts / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(self.samples) + self._pts) / self.rate
        pcm = (2000 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self.samples
        return frame


class LoopingFile:
    """A media file played over and over as live tracks, with timestamps that keep rising.

    aiortc's ``MediaPlayer(loop=True)`` restarts the file's timestamps at each loop: its pacing then sends
    the whole next pass at once, and the VP8 encoder refuses the frames that go back in time
    (``avcodec_send_frame()``: video stops for good while audio goes on). Here each pass is a fresh
    player, and each track adds the time already played to its frames' ``pts``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._player: Any = None
        self._generation = 0
        self.tracks: list[MediaStreamTrack] = []
        probe = self._open()
        for kind in ("video", "audio"):
            if getattr(probe, kind) is not None:
                self.tracks.append(_LoopTrack(self, kind))

    def _open(self) -> Any:
        from aiortc.contrib.media import MediaPlayer

        self._player = MediaPlayer(self.path)
        self._generation += 1
        return self._player

    def current(self, kind: str, generation: int) -> tuple[Any, int]:
        """This pass's track of ``kind``; a track that reached the end asks for the next pass."""
        if generation == self._generation:
            self._open()
        return getattr(self._player, kind), self._generation

    def stop(self) -> None:
        for track in self.tracks:
            track.stop()


class _LoopTrack(MediaStreamTrack):
    def __init__(self, source: LoopingFile, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._inner: Any = getattr(source._player, kind)
        self._generation = source._generation
        self._offset = 0  # pts of the passes already played, in the track's time base
        self._next = 0  # where the current pass ends so far: last pts + one frame
        self._last: int | None = None
        self._step = 0

    async def recv(self) -> Any:
        while True:
            try:
                frame = await self._inner.recv()
                break
            except MediaStreamError:
                if self.readyState != "live":
                    raise
                self._offset = self._next
                self._inner, self._generation = self._source.current(self.kind, self._generation)
        frame.pts = (frame.pts or 0) + self._offset
        if self.kind == "audio":
            self._step = frame.samples
        elif self._last is not None and frame.pts > self._last:
            self._step = frame.pts - self._last  # the file's own frame interval
        self._last = frame.pts
        self._next = frame.pts + max(1, self._step)
        return frame
