"""Encoded frames as received into one Matroska/WebM file: no decoding, no re-encoding.

Shared by the server's recorder (``relay.recorder``) and ``live-relay view --record``. Timestamps are the
sender's RTP timestamps (90 kHz video, 48 kHz Opus), unwrapped and counted from the file's first frame, in
the file's own time base (never the stream's: the muxer rewrites that at the header). The file starts at
a video keyframe (audio before it is skipped) and is opened then, when the picture size is known. After
``restart`` (a new subscription, whose timestamps start elsewhere) the file continues where it was.
"""

from __future__ import annotations

import fractions
from typing import Any

import av

from rtc.codecs import codec_for
from rtc.rtptime import RtpTimeline

_CLOCK = {"video": 90000, "audio": 48000}


class _Track:
    def __init__(self, stream: Any, kind: str) -> None:
        self.stream = stream
        self.time_base = fractions.Fraction(1, _CLOCK[kind])
        self.timeline = RtpTimeline()
        self.offset = 0  # where this part of the file starts (after a restart)
        self.last_pts = 0

    def pts(self, timestamp: int) -> int:
        self.last_pts = self.offset + self.timeline.extend(timestamp)
        return self.last_pts

    def restart(self) -> None:
        self.offset = self.last_pts + self.time_base.denominator // 30  # one frame after the last
        self.timeline.reset()


class MediaFileWriter:
    def __init__(self, path: str | Any, codecs: dict[str, str], cluster_ms: int = 1000) -> None:
        """``codecs``: kind -> codec name (``{"video": "vp8", "audio": "opus"}``). ``path``: a file name, or an
        object with ``write`` (a live Matroska stream, as restreaming feeds FFmpeg), clusters of at most
        ``cluster_ms``."""
        self.path = path
        self.cluster_ms = cluster_ms
        self.codecs = {kind: name.lower() for kind, name in codecs.items()}
        self.container: Any = None
        self.tracks: dict[str, _Track] = {}
        self.frames = 0
        self.bytes = 0
        self._waiting = "video" in self.codecs  # for a keyframe: the file (and each restarted part) starts at one

    def restart(self) -> None:
        """A new subscription: its timestamps start elsewhere; continue the file after what it holds."""
        self._waiting = "video" in self.codecs
        for track in self.tracks.values():
            track.restart()

    def write(self, kind: str, data: bytes, timestamp: int, keyframe: bool) -> None:
        if kind not in self.codecs:
            return
        if self._waiting:
            if kind != "video" or not keyframe:
                return
            self._waiting = False
        if self.container is None:
            self._open(data)
        track = self.tracks[kind]
        packet = av.Packet(data)
        packet.pts = packet.dts = track.pts(timestamp)
        packet.time_base = track.time_base
        packet.stream = track.stream
        if keyframe and kind == "video":
            packet.is_keyframe = True
        self.container.mux(packet)
        self.frames += 1
        self.bytes += len(data)

    def _open(self, first_video: bytes) -> None:
        # Clusters of at most a second, written out as they close: a crash loses about a second, not the 5 s
        # (or the whole file before its first cluster) the muxer would otherwise hold in memory.
        webm = isinstance(self.path, str) and self.path.endswith(".webm")
        self.container = av.open(self.path, "w", format="webm" if webm else "matroska",
                                 options={"cluster_time_limit": str(self.cluster_ms), "flush_packets": "1"})
        for kind, name in self.codecs.items():
            if kind == "video":
                stream: Any = self.container.add_stream(name, rate=30)
                stream.width, stream.height = codec_for(name).frame_size(first_video) or (640, 480)
            else:
                stream = self.container.add_stream(name, rate=_CLOCK["audio"])
            self.tracks[kind] = _Track(stream, kind)

    @property
    def duration_s(self) -> float:
        """How long the file plays: the latest frame's time over its tracks."""
        return max((float(t.last_pts * t.time_base) for t in self.tracks.values()), default=0.0)

    @property
    def streams(self) -> dict[str, str]:
        """What the file holds once opened: kind -> codec."""
        return {kind: self.codecs[kind] for kind in self.tracks}

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
