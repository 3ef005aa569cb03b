"""Encoded H.264 frames as received into fragmented MP4 (ISO BMFF), in memory: the init section (ftyp and
moov) once, then one fragment (moof and mdat) per frame, taken out in whatever runs the caller wants (LL-HLS
parts and segments: ``relay.hls``). FFmpeg's MP4 muxer writes the boxes (through PyAV): no decoding, no
re-encoding.

The frames are Annex B access units as the relay assembles them; the muxer wants the SPS and PPS before its
header, so the writer opens on the first keyframe and gives it those NAL units as the stream's extradata
(FFmpeg's muxer turns Annex B extradata into the avcC box and each frame into length-prefixed NAL units).
Timestamps: 90 kHz RTP timestamps, unwrapped by ``extend`` and counted from the first frame.
"""

from __future__ import annotations

import fractions
import io
from typing import Any

import av

from rtc.codecs import codec_for

_CLOCK = 90000


def parameter_sets(access_unit: bytes) -> bytes:
    """The SPS and PPS NAL units (types 7 and 8) of an Annex B access unit, each with a 4-byte start code."""
    out = []
    for nal in access_unit.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if nal and nal[0] & 0x1F in (7, 8):
            out.append(b"\x00\x00\x00\x01" + nal.rstrip(b"\x00"))
    return b"".join(out)


class _Sink(io.RawIOBase):
    """Where the muxer writes: bytes collect until taken."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)

    def seekable(self) -> bool:
        return False


class Fmp4Writer:
    """``write`` frames; ``take`` returns what the muxer wrote since the last take (a frame's fragment is
    written when the next frame comes: the muxer needs its duration); ``init_section`` once opened."""

    def __init__(self, codec: str) -> None:
        self.codec = codec.lower()
        self.init_section: bytes | None = None
        self._container: Any = None
        self._stream: Any = None
        self._sink = _Sink()
        self._last_raw: int | None = None
        self._extended = 0
        self._first: int | None = None

    def extend(self, timestamp: int) -> int:
        """A 32-bit RTP timestamp as a 90 kHz count from the first one seen (wraps and reordering undone)."""
        if self._last_raw is None:
            self._extended = timestamp
        else:
            self._extended += (timestamp - self._last_raw + (1 << 31)) % (1 << 32) - (1 << 31)
        self._last_raw = timestamp
        if self._first is None:
            self._first = self._extended
        return self._extended - self._first

    def write(self, data: bytes, pts: int, keyframe: bool) -> None:
        """One access unit at ``pts`` (from ``extend``). Frames before the first keyframe are dropped."""
        if self._container is None:
            if not keyframe:
                return
            self._open(data)
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = self._stream.time_base
        packet.stream = self._stream
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        if self.init_section is None:
            self.init_section = bytes(self._sink.buffer)  # the header: ftyp and moov, before any fragment
            self._sink.buffer.clear()

    def _open(self, keyframe: bytes) -> None:
        self._container = av.open(self._sink, "w", format="mp4", options={
            # Fragments from the start (empty moov), one per frame, each addressing its own moof (what
            # HLS and MSE players expect of a part).
            "movflags": "empty_moov+default_base_moof+frag_every_frame+omit_tfhd_offset",
            "flush_packets": "1"})
        stream: Any = self._container.add_stream(self.codec, rate=30)
        stream.width, stream.height = codec_for(self.codec).frame_size(keyframe) or (640, 480)
        stream.codec_context.extradata = parameter_sets(keyframe)
        stream.time_base = fractions.Fraction(1, _CLOCK)
        self._stream = stream

    def take(self) -> bytes:
        data = bytes(self._sink.buffer)
        self._sink.buffer.clear()
        return data

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError):
                pass  # the trailer of a stream nobody will fetch again
            self._container = None
