"""A publisher's frames as received into fragmented MP4 (ISO BMFF), in memory, one track per writer: the init
section (ftyp and moov) once, then one fragment (moof and mdat) per frame, taken out in whatever runs the
caller wants (LL-HLS parts and segments: ``relay.hls``). FFmpeg's MP4 muxer writes the boxes (through PyAV).

- ``Fmp4Writer``: H.264, never decoded or re-encoded. The frames are Annex B access units as the relay
  assembles them; the muxer wants the SPS and PPS before its header, so the writer opens on the first keyframe
  and gives it those NAL units as the stream's extradata (FFmpeg's muxer turns Annex B extradata into the avcC
  box and each frame into length-prefixed NAL units). Timestamps: 90 kHz RTP timestamps, unwrapped by
  ``extend`` and counted from the first frame.
- ``AacFmp4Writer``: the publisher's Opus decoded and encoded again as AAC (what every HLS player plays; one
  small transcode per stream), its times the Opus frames' 48 kHz RTP times from an origin the caller gives
  (the RTP time that lines up with the video's first frame).

One track per writer because FFmpeg's muxer, flushing a fragment per frame of two interleaved tracks, guesses
the duration of each track's last sample (the next one of that track has not come) and the guesses shift the
track's timeline: LL-HLS carries audio as its own rendition, as Apple's examples do.
"""

from __future__ import annotations

import fractions
import io
from typing import Any

import av

from rtc.codecs import codec_for
from rtc.rtptime import RtpTimeline

_CLOCK = 90000
_FLAGS = "empty_moov+default_base_moof+frag_every_frame+omit_tfhd_offset"  # fragments from the start, one a frame


def parameter_sets(access_unit: bytes) -> bytes:
    """The SPS and PPS NAL units (types 7 and 8) of an Annex B access unit, each with a 4-byte start code."""
    out = []
    for nal in access_unit.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if nal and nal[0] & 0x1F in (7, 8):
            out.append(b"\x00\x00\x00\x01" + nal.rstrip(b"\x00"))
    return b"".join(out)


def avc_codec_string(access_unit: bytes) -> str | None:
    """The RFC 6381 codec string (``avc1.PPCCLL``) of the SPS in an Annex B access unit."""
    for nal in access_unit.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if len(nal) >= 4 and nal[0] & 0x1F == 7:
            return f"avc1.{nal[1:4].hex()}"
    return None


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


class _Writer:
    """What both writers share: the in-memory muxer, the init section, ``take`` and ``close``."""

    def __init__(self) -> None:
        self.init_section: bytes | None = None
        self._container: Any = None
        self._sink = _Sink()

    def _mux(self, packet: Any) -> None:
        self._container.mux(packet)
        if self.init_section is None:
            self.init_section = bytes(self._sink.buffer)  # the header: ftyp and moov, before any fragment
            self._sink.buffer.clear()

    def take(self) -> bytes:
        """What the muxer wrote since the last take (a frame's fragment comes out when the next frame goes in:
        the muxer needs its duration)."""
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


class Fmp4Writer(_Writer):
    """H.264 access units in, as received: ``extend`` their RTP timestamps, ``write`` them."""

    def __init__(self, codec: str) -> None:
        super().__init__()
        self.codec = codec.lower()
        self.codec_string: str | None = None
        self.size: tuple[int, int] | None = None  # the picture's, as its first keyframe's SPS says
        self._stream: Any = None
        self._timeline = RtpTimeline()

    def extend(self, timestamp: int) -> int:
        """A 32-bit RTP timestamp as a 90 kHz count from the first one seen (wraps and reordering undone)."""
        return self._timeline.extend(timestamp)

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
        self._mux(packet)

    def _open(self, keyframe: bytes) -> None:
        self._container = av.open(self._sink, "w", format="mp4", options={"movflags": _FLAGS, "flush_packets": "1"})
        stream: Any = self._container.add_stream(self.codec, rate=30)
        self.size = codec_for(self.codec).frame_size(keyframe)
        stream.width, stream.height = self.size or (640, 480)
        stream.codec_context.extradata = parameter_sets(keyframe)
        stream.time_base = fractions.Fraction(1, _CLOCK)
        self._stream = stream
        self.codec_string = avc_codec_string(keyframe)


class AacFmp4Writer(_Writer):
    """Opus frames in (``write_opus``), AAC out: 1024-sample frames, 48 kHz stereo, 96 kbit/s."""

    codec_string = "mp4a.40.2"

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0
        self.failures = 0  # Opus frames the decoder refused (skipped; the stream goes on)
        self._stream: Any = None
        self._decoder: Any = None
        self._resampler: Any = None
        self._next_pts: int | None = None

    def write_opus(self, data: bytes, timestamp: int, origin: int) -> None:
        """One Opus frame with its 48 kHz RTP timestamp; ``origin``: the RTP time of the stream's time 0.
        Later frames follow on sample by sample (the AAC frames' times are counted, not taken from RTP)."""
        if self._container is None:
            self._open()
        if self._next_pts is None:
            self._next_pts = max(0, (timestamp - origin + (1 << 31)) % (1 << 32) - (1 << 31))
        try:
            decoded = self._decoder.decode(av.Packet(data))
        except av.FFmpegError:
            self.failures += 1
            return
        for frame in decoded:
            frame.pts = None
            for chunk in self._resampler.resample(frame):
                chunk.pts = self._next_pts
                self._next_pts += chunk.samples
                for packet in self._stream.encode(chunk):
                    packet.stream = self._stream
                    self._mux(packet)
                    self.frames += 1

    def _open(self) -> None:
        self._container = av.open(self._sink, "w", format="mp4", options={"movflags": _FLAGS, "flush_packets": "1"})
        stream: Any = self._container.add_stream("aac", rate=48000)
        stream.layout = "stereo"
        stream.bit_rate = 96_000
        self._stream = stream
        self._decoder = av.CodecContext.create("opus", "r")
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000, frame_size=1024)
