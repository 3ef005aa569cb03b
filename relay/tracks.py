"""Published tracks and their per-subscriber down-tracks: where encoded frames fan out.

A ``PublishedTrack`` receives a publisher's encoded frames (from the adapter's receiver tap) and hands
each to its ``DownTrack``s. A ``DownTrack`` is the ``MediaStreamTrack`` a subscriber's ``RTCRtpSender``
reads: it yields ``av.Packet``s, so the sender only re-packetizes (its own sequence numbers, timestamps,
VP8 picture ids) and never encodes. Nothing here decodes either.

Keyframes: a new down-track, a subscriber's PLI/FIR, or a down-track that fell behind asks the published
track for a keyframe; requests are coalesced (while one is on its way it serves every requester, and
PLIs upstream are at least ``keyframe_interval`` apart). A video
down-track forwards nothing until it has a keyframe, and after a loss it cannot repair it waits for the
next one again. Each down-track's queue is bounded: one that cannot keep up skips to the next keyframe.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rtc.codecs import is_keyframe

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
# A keyframe asked for but not seen after this long is asked for again (the PLI or the keyframe was lost).
KEYFRAME_TIMEOUT = 1.0


class EncodedFrame:
    __slots__ = ("data", "keyframe", "received", "timestamp")

    def __init__(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        self.data = data
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.received = time.monotonic()


class DownTrack(MediaStreamTrack):
    """One subscriber's copy of a published track."""

    def __init__(self, source: PublishedTrack, max_queue: int) -> None:
        super().__init__()
        self.on_ended: Callable[[DownTrack], None] | None = None
        self.kind = source.kind
        self.source = source
        self._queue: deque[EncodedFrame] = deque()
        self._max_queue = max_queue
        self._wakeup: asyncio.Future[None] | None = None
        self.waiting_keyframe = source.kind == "video"
        self.frames_sent = 0
        self.frames_skipped = 0

    def push(self, frame: EncodedFrame, chain_broken: bool) -> None:
        if self.readyState != "live":
            return
        if self.kind == "video":
            if chain_broken:
                self.waiting_keyframe = True
            if self.waiting_keyframe:
                if not frame.keyframe:
                    self.frames_skipped += 1
                    # Keep asking while waiting: a PLI can be lost or ignored by a rate-limiting encoder,
                    # and a subscriber that receives nothing sends no PLI of its own. Coalesced upstream.
                    self.source.request_keyframe("subscriber still waiting for a keyframe")
                    return
                self.waiting_keyframe = False
            if len(self._queue) >= self._max_queue:
                # Cannot keep up: drop what is queued and restart at the next keyframe.
                self.frames_skipped += len(self._queue) + 1
                self._queue.clear()
                self.waiting_keyframe = True
                self.source.request_keyframe("slow subscriber")
                return
        elif len(self._queue) >= self._max_queue:
            self._queue.popleft()  # audio: the newest matters most
            self.frames_skipped += 1
        self._queue.append(frame)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def recv(self) -> av.Packet[Any]:  # a forwarding track yields encoded packets, never frames
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        frame = self._queue.popleft()
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = self.source.time_base
        self.frames_sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            if self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)
            self.source.remove(self)
            if self.on_ended is not None:
                self.on_ended(self)

    def on_subscriber_keyframe_request(self) -> None:
        self.source.request_keyframe("subscriber PLI/FIR")


class PublishedTrack:
    """One incoming track of a publisher, fanned out to down-tracks."""

    def __init__(self, kind: str, track_id: str, publisher_id: str,
                 send_pli: Callable[[], None], keyframe_interval: float = 0.1, max_queue: int = 30,
                 keyframe_timeout: float = KEYFRAME_TIMEOUT) -> None:
        self.kind = kind
        self.id = track_id
        self.publisher_id = publisher_id
        self.codec_name: str | None = None
        self.codec: RTCRtpCodecParameters | None = None  # known once negotiated
        self.time_base = VIDEO_TIME_BASE if kind == "video" else fractions.Fraction(1, 48000)
        self.down_tracks: set[DownTrack] = set()
        # Called with every frame as it fans out (a recorder): (track, frame, chain_broken); must not block.
        self.observers: list[Callable[[PublishedTrack, EncodedFrame, bool], None]] = []
        self.frames_in = 0
        self.keyframes_in = 0
        self.pli_sent = 0
        self.closed = False
        self.muted = False  # a muted track forwards nothing (a host muting a co-host, a private call)
        self._send_pli = send_pli
        self._keyframe_interval = keyframe_interval
        self._keyframe_timeout = keyframe_timeout
        self._max_queue = max_queue
        self._last_pli = 0.0
        self._awaiting_keyframe_since: float | None = None
        self._pli_pending: asyncio.TimerHandle | None = None

    def on_frame(self, codec_name: str, clock_rate: int, data: bytes, timestamp: int, chain_broken: bool) -> None:
        if self.closed or self.muted:
            return
        if self.codec_name != codec_name:
            self.codec_name = codec_name
            self.time_base = fractions.Fraction(1, clock_rate)
        keyframe = is_keyframe(codec_name, data)
        self.frames_in += 1
        if keyframe:
            self.keyframes_in += 1
            self._awaiting_keyframe_since = None
        frame = EncodedFrame(data, timestamp, keyframe)
        for down in tuple(self.down_tracks):
            down.push(frame, chain_broken)
        for observe in tuple(self.observers):
            observe(self, frame, chain_broken)
        if chain_broken and self.kind == "video":
            self.request_keyframe("upstream loss")

    def set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if not muted and self.kind == "video":
            # Subscribers resume at a keyframe: their decoders lost the chain while nothing came.
            for down in self.down_tracks:
                down.waiting_keyframe = True
            self.request_keyframe("unmuted")

    def add_down_track(self) -> DownTrack:
        down = DownTrack(self, max_queue=self._max_queue)
        self.down_tracks.add(down)
        if self.kind == "video":
            self.request_keyframe("new subscriber")
        return down

    def remove(self, down: DownTrack) -> None:
        self.down_tracks.discard(down)

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a keyframe, coalescing: while one is on its way (asked less than
        ``KEYFRAME_TIMEOUT`` ago and not yet arrived) it serves every new requester too, and PLIs are at
        least ``keyframe_interval`` apart."""
        if self.kind != "video" or self.closed or self._pli_pending is not None:
            return
        now = time.monotonic()
        if self._awaiting_keyframe_since is not None and now - self._awaiting_keyframe_since < self._keyframe_timeout:
            return
        wait = self._last_pli + self._keyframe_interval - now
        loop = asyncio.get_running_loop()
        self._pli_pending = loop.call_later(max(0.0, wait), self._fire_pli, reason)

    def _fire_pli(self, reason: str) -> None:
        self._pli_pending = None
        if self.closed:
            return
        self._last_pli = self._awaiting_keyframe_since = time.monotonic()
        self.pli_sent += 1
        log.debug("PLI upstream", extra={"track": self.id, "reason": reason})
        self._send_pli()

    def close(self) -> None:
        """The publisher left: end every down-track (their senders stop) and refuse new ones."""
        if self.closed:
            return
        self.closed = True
        if self._pli_pending is not None:
            self._pli_pending.cancel()
            self._pli_pending = None
        for down in tuple(self.down_tracks):
            down.stop()
