"""Low-Latency HLS egress of one published video track (RFC 8216bis, "LL-HLS"): what the HTTP tier and a CDN
in front of it serve to viewers past the WebRTC tier.

The publisher's encoded frames (the same ones the recorder gets) are cut, never re-encoded, into fMP4
*parts* of about ``part_target`` seconds and *segments* that each begin at a keyframe (``rtc.fmp4`` writes
the boxes). A ``HlsStream`` holds the last ``keep_segments`` segments, the parts of the last few, and the
init section, and renders the media playlist (``render_playlist``, a pure function with table tests) with
everything a low-latency player asks for: ``EXT-X-PART`` and ``EXT-X-PART-INF``, ``EXT-X-SERVER-CONTROL``
with blocking reload and ``PART-HOLD-BACK``, a ``PRELOAD-HINT`` for the part being written, program dates.
``wait`` is the blocking playlist reload (``_HLS_msn`` / ``_HLS_part``): it returns once the stream holds
that part, or says why it will not. Product cards and announcements ride on the timeline as
``EXT-X-DATERANGE`` at the moment the server got them (``DateRange``): a player shows each at its picture,
however far behind live it plays.

Bounded: the segments kept, the parts kept (only for the last ``PART_SEGMENTS`` segments), one open part.
H.264 video only (what HLS players decode everywhere): a VP8 or VP9 publisher's frames are made H.264 first
(``relay.transcode``, by the caller); anything else gets ``HlsUnavailable``. Opus audio goes in as AAC.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rtc.fmp4 import AacFmp4Writer, Fmp4Writer

PART_SEGMENTS = 3  # segments (the newest) whose parts the playlist lists; older ones by EXTINF alone
MAX_DATERANGES = 64  # the newest events a playlist carries (older ones fall out with their segments anyway)
BLOCK_AHEAD_SEGMENTS = 2  # a blocking request further ahead than this is refused (RFC 8216bis 6.2.5.2)


class HlsUnavailable(Exception):
    """Why a track has no HLS egress (its codec), said to the viewer who asked."""


@dataclass(slots=True)
class Part:
    duration: float
    independent: bool  # begins with a keyframe
    data: bytes = b""  # the video's fragments
    audio: bytes = b""  # the audio rendition's fragments for the same span


@dataclass(slots=True)
class Segment:
    msn: int  # media sequence number
    started_at: float  # wall clock of its first frame (EXT-X-PROGRAM-DATE-TIME)
    parts: list[Part] = field(default_factory=list)
    complete: bool = False
    merged: bool = False  # its parts joined into one (it is past the playlist's part listing)

    @property
    def duration(self) -> float:
        return sum(part.duration for part in self.parts)


@dataclass(slots=True, frozen=True)
class DateRange:
    """Something that happened at a moment of the stream (a product card pushed, an announcement), as an
    ``EXT-X-DATERANGE``: players raise it when playback reaches ``start`` (the server's clock, the clock of
    the segments' program dates). ``data`` is carried as a hexadecimal sequence (``X-DATA=0x...``), which no
    text of a seller's can break out of."""

    id: str
    cls: str
    start: float
    data: bytes


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_playlist(segments: list[Segment], part_target: float, target_duration: int,
                    preload_hint: tuple[int, int] | None, prefix: str = "",
                    dateranges: list[DateRange] | None = None) -> str:
    """The media playlist for ``segments`` (oldest first; the last may be incomplete): every complete one
    by EXTINF, the parts of the newest ``PART_SEGMENTS`` (the incomplete one's so far), and a preload hint
    for part ``preload_hint`` = (msn, index) when one is being written. Durations in seconds, 3 decimals.
    ``prefix`` names a rendition's files (``""``: the video's ``init.mp4``, ``part{msn}.{i}.m4s``,
    ``seg{msn}.m4s``; ``"a"``: the audio's ``ainit.mp4``...): both renditions share segments and parts."""
    init_uri = f"{prefix}init.mp4"
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{target_duration}",
             "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
             f"PART-HOLD-BACK={3 * part_target:.3f}",
             f"#EXT-X-PART-INF:PART-TARGET={part_target:.3f}",
             f"#EXT-X-MEDIA-SEQUENCE:{segments[0].msn if segments else 0}",
             f'#EXT-X-MAP:URI="{init_uri}"']
    oldest = segments[0].started_at if segments else float("inf")
    for event in dateranges or ():
        if event.start >= oldest:  # what happened before the playlist's first picture is no longer in it
            lines.append(f'#EXT-X-DATERANGE:ID="{event.id}",CLASS="{event.cls}",START-DATE="{_date(event.start)}",'
                         f"X-DATA=0x{event.data.hex().upper()}")
    with_parts = {s.msn for s in segments[-PART_SEGMENTS:] if not s.merged}
    for segment in segments:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(segment.started_at)}")
        if segment.msn in with_parts:
            for index, part in enumerate(segment.parts):
                independent = ",INDEPENDENT=YES" if part.independent else ""
                lines.append(f'#EXT-X-PART:DURATION={part.duration:.3f},URI="{prefix}part{segment.msn}.{index}.m4s"'
                             f"{independent}")
        if segment.complete:
            lines += [f"#EXTINF:{segment.duration:.3f},", f"{prefix}seg{segment.msn}.m4s"]
    if preload_hint is not None:
        msn, index = preload_hint
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{prefix}part{msn}.{index}.m4s"')
    return "\n".join(lines) + "\n"


@dataclass(slots=True, frozen=True)
class Variant:
    """One video rendition of a multivariant playlist: its media playlist, what it carries per second, its
    codec string (from its SPS) and picture size, once known."""

    uri: str
    bandwidth: int
    codecs: str
    resolution: tuple[int, int] | None = None


def render_master(variants: list[Variant], audio_codec: str | None) -> str:
    """The multivariant playlist: each video rendition (the top one first: a player starts there unless it
    measures otherwise) and, with sound, the audio rendition they share (``audio.m3u8``), as LL-HLS carries
    them (each rendition its own fMP4)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio_codec is not None:
        lines.append('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Sound",DEFAULT=YES,AUTOSELECT=YES,'
                     'CHANNELS="2",URI="audio.m3u8"')
    for variant in variants:
        attributes = [f"BANDWIDTH={variant.bandwidth}"]
        if variant.resolution is not None:
            attributes.append(f"RESOLUTION={variant.resolution[0]}x{variant.resolution[1]}")
        codecs = f"{variant.codecs},{audio_codec}" if audio_codec is not None else variant.codecs
        attributes.append(f'CODECS="{codecs}"')
        if audio_codec is not None:
            attributes.append('AUDIO="audio"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), variant.uri]
    return "\n".join(lines) + "\n"


def blocking_verdict(segments: list[Segment], msn: int, part: int | None) -> str:
    """For a blocking reload of (msn, part): "ready" (the playlist holds it), "wait", or "too-far" (more than
    ``BLOCK_AHEAD_SEGMENTS`` past the newest segment: a 400, as the RFC says). Without a part, the segment
    ``msn`` must be complete... or, as RFC 8216bis puts it, the playlist must contain it: its first part will do
    for a low-latency client, so a segment counts once it has a part."""
    if not segments:
        return "wait" if msn <= BLOCK_AHEAD_SEGMENTS else "too-far"
    newest = segments[-1]
    if msn > newest.msn + BLOCK_AHEAD_SEGMENTS:
        return "too-far"
    if msn < newest.msn:
        return "ready"
    if msn > newest.msn:
        return "wait"
    if part is None:
        return "ready" if newest.complete else "wait"
    return "ready" if part < len(newest.parts) else "wait"


class HlsStream:
    """One track's LL-HLS egress: ``add_frame`` (on the event loop, from the track's frame observer) cuts
    parts and segments; ``playlist``, ``init``, ``part`` and ``segment`` serve them; ``wait`` blocks a reload.
    ``request_keyframe`` is called when a segment runs past ``max_segment`` without one (the publisher is
    asked for one, so segments stay within the playlist's target duration)."""

    def __init__(self, codec: str, part_target: float = 0.3, segment_target: float = 2.0,
                 max_segment: float = 4.0, keep_segments: int = 6,
                 request_keyframe: Callable[[], None] | None = None, audio: bool = False, prefix: str = "") -> None:
        """``prefix`` names the video's files (``""`` for the top rendition, ``"v0"``... for a lower one of a
        rendition ladder; the audio's are ``"a"``)."""
        if codec.lower() != "h264":
            raise HlsUnavailable(f"HLS needs H.264 video; this show sends {codec.upper()}")
        self.prefix = prefix
        self.part_target = part_target
        self.segment_target = segment_target
        self.max_segment = max_segment
        self.target_duration = math.ceil(max_segment)
        self._request_keyframe = request_keyframe or (lambda: None)
        self._writer = Fmp4Writer("h264")
        self._audio = AacFmp4Writer() if audio else None
        self._audio_origin: int | None = None  # the Opus RTP time at the video's time 0
        self._video_started_at: float | None = None
        self.segments: deque[Segment] = deque(maxlen=keep_segments)
        self.dateranges: deque[DateRange] = deque(maxlen=MAX_DATERANGES)
        self._msn = 0
        self._part_start: int | None = None  # 90 kHz timestamp of the open part's first frame
        self._part_keyframe = False
        self._changed = asyncio.Event()
        self._asked_at = 0.0
        self.frames = 0
        self.closed = False

    @property
    def init(self) -> bytes | None:
        return self._writer.init_section

    @property
    def audio_init(self) -> bytes | None:
        return self._audio.init_section if self._audio is not None else None

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def variant(self, uri: str) -> Variant:
        """This stream's video as a rendition of a multivariant playlist (its CODECS from its SPS once known;
        its bandwidth what its segments kept carry, sound included)."""
        bandwidth = max(100_000, int(sum(len(p.data) + len(p.audio) for s in self.segments for p in s.parts) * 8
                                     / max(0.1, sum(s.duration for s in self.segments))))
        return Variant(uri, bandwidth, self._writer.codec_string or "avc1.42e01f", self._writer.size)

    @property
    def audio_codec(self) -> str | None:
        return self._audio.codec_string if self._audio is not None else None

    def master(self) -> str:
        """The multivariant playlist of this stream alone."""
        return render_master([self.variant("video.m3u8")], self.audio_codec)

    def add_frame(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        """One H.264 access unit (Annex B) with its 90 kHz RTP timestamp."""
        if self.closed or (self._part_start is None and not keyframe):
            return  # the stream starts at a keyframe
        ts = self._writer.extend(timestamp)
        closing: tuple[float, bool] | None = None  # (the open part's duration, whether its segment ends)
        if self._part_start is not None:
            elapsed = (ts - self._part_start) / 90000
            segment = self.segments[-1]
            if keyframe and segment.duration + elapsed >= self.segment_target - 0.001:
                closing = (elapsed, True)
            elif elapsed >= 0.85 * self.part_target:
                closing = (elapsed, False)
            if segment.duration + elapsed > self.max_segment - self.part_target:
                self._ask_keyframe()
        # The muxer writes a frame out when the next one comes (it needs its duration): what it writes now
        # is everything before this frame, so the part closes with exactly its own frames.
        self._writer.write(data, ts, keyframe)
        if self._video_started_at is None:
            self._video_started_at = time.monotonic()
        if closing is not None:
            audio = self._audio.take() if self._audio is not None else b""
            self._close_part(closing[0], closing[1], self._writer.take(), audio)
        if not self.segments or self.segments[-1].complete:
            self.segments.append(Segment(self._msn, time.time()))
            self._msn += 1
        if self._part_start is None:
            self._part_start = ts
            self._part_keyframe = keyframe
        self.frames += 1

    def add_audio(self, data: bytes, timestamp: int) -> None:
        """One Opus frame (48 kHz RTP timestamp), as AAC into the audio rendition's open part (a stream made
        with ``audio``). Dropped until the video has started; the first one is placed by when it arrived
        after the video's first frame (the two RTP clocks share no origin without the sender's reports)."""
        if self.closed or self._audio is None or self._video_started_at is None:
            return
        if self._audio_origin is None:
            self._audio_origin = timestamp - round((time.monotonic() - self._video_started_at) * 48000)
        self._audio.write_opus(data, timestamp, self._audio_origin)

    def _close_part(self, elapsed: float, ends_segment: bool, data: bytes, audio: bytes = b"") -> None:
        # A part's duration is the media it holds, up to the next part; a long gap between frames is
        # capped at the target (the playlist's promise), the fragments' own times stay exact.
        segment = self.segments[-1]
        segment.parts.append(Part(min(elapsed, self.part_target), self._part_keyframe, data, audio))
        segment.complete = ends_segment
        self._part_start = None
        self._drop_old_parts()
        self._changed.set()
        self._changed = asyncio.Event()

    def _drop_old_parts(self) -> None:
        for segment in list(self.segments)[:-PART_SEGMENTS]:
            if not segment.merged:
                # No longer listed part by part: its bytes kept once, as the segment.
                segment.parts = [Part(segment.duration, True, b"".join(p.data for p in segment.parts),
                                      b"".join(p.audio for p in segment.parts))]
                segment.merged = True

    def _ask_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._asked_at >= 1.0:
            self._asked_at = now
            self._request_keyframe()

    @property
    def preload_hint(self) -> tuple[int, int] | None:
        if not self.segments:
            return None
        newest = self.segments[-1]
        return (newest.msn + 1, 0) if newest.complete else (newest.msn, len(newest.parts))

    def playlist(self, audio: bool = False) -> str:
        """The video's media playlist (with the timeline's events), or the audio rendition's."""
        return render_playlist(list(self.segments), self.part_target, self.target_duration, self.preload_hint,
                               prefix="a" if audio else self.prefix,
                               dateranges=None if audio else list(self.dateranges))

    def add_daterange(self, event: DateRange) -> None:
        """An event at ``event.start``; the playlist carries it from its next reload (no new part needed)."""
        if not self.closed:
            self.dateranges.append(event)

    def part(self, msn: int, index: int, audio: bool = False) -> bytes | None:
        for segment in self.segments:
            if segment.msn == msn and not segment.merged and index < len(segment.parts):
                part = segment.parts[index]
                return part.audio if audio else part.data
        return None

    def segment(self, msn: int, audio: bool = False) -> bytes | None:
        for segment in self.segments:
            if segment.msn == msn and segment.complete:
                return b"".join(part.audio if audio else part.data for part in segment.parts)
        return None

    async def wait(self, msn: int, part: int | None, timeout: float) -> str:
        """Block until ``blocking_verdict`` is not "wait" or ``timeout`` passes ("timeout")."""
        deadline = time.monotonic() + timeout
        while True:
            verdict = blocking_verdict(list(self.segments), msn, part)
            if verdict != "wait" or self.closed:
                return verdict if verdict != "wait" else "gone"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return "timeout"

    def close(self) -> None:
        self.closed = True
        self._changed.set()
        self._writer.close()
        if self._audio is not None:
            self._audio.close()
