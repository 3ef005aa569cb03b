"""Recording a publisher as received: its encoded video and audio frames into one Matroska file, never
decoded or re-encoded.

A ``Recording`` observes the publisher's ``PublishedTrack``s (the same frames the down-tracks get) and
hands them to a writer thread through a bounded queue, so file I/O never runs on the event loop and a
slow disk drops frames (counted) instead of stalling the relay. Timestamps are the publisher's RTP
timestamps (90 kHz video, 48 kHz Opus) unwrapped and counted from the recording's first frame, so a
60 s show plays 60 s and audio stays with video. Video starts at a keyframe (one is asked for). Matroska
is written cluster by cluster: a crash loses at most the unwritten tail.
"""

from __future__ import annotations

import fractions
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from relay.tracks import EncodedFrame, PublishedTrack

log = logging.getLogger(__name__)

_QUEUE_FRAMES = 600  # ~10 s of audio+video: a disk slower than that drops frames rather than memory growing


class _Stream:
    """One track's stream in the file: its time base and an unwrapped, rebased timestamp."""

    def __init__(self, stream: Any, clock_rate: int) -> None:
        self.stream = stream
        self.time_base = fractions.Fraction(1, clock_rate)
        self.first: int | None = None
        self.last_raw: int | None = None
        self.extended = 0

    def pts(self, timestamp: int) -> int:
        if self.last_raw is not None:
            self.extended += (timestamp - self.last_raw + (1 << 31)) % (1 << 32) - (1 << 31)
        else:
            self.extended = timestamp
        self.last_raw = timestamp
        if self.first is None:
            self.first = self.extended
        return self.extended - self.first


class Recording:
    """One publisher recorded into ``path`` until ``stop``. ``bytes_written`` and ``frames_dropped`` are
    for the operator (metrics, disk bounds)."""

    def __init__(self, path: Path, tracks: dict[str, PublishedTrack],
                 on_stop: Callable[[Recording], None] | None = None) -> None:
        self.path = path
        self.tracks = tracks
        self.started = time.time()
        self.frames_written = 0
        self.frames_dropped = 0
        self.bytes_written = 0
        self.stopped = False
        self._on_stop = on_stop
        self._queue: queue.Queue[tuple[str, bytes, int, bool] | None] = queue.Queue(_QUEUE_FRAMES)
        self._video_started = "video" not in tracks
        self._thread = threading.Thread(target=self._write, name=f"record-{path.stem}", daemon=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        for track in tracks.values():
            track.observers.append(self._observe)
        if "video" in tracks:
            tracks["video"].request_keyframe("recording started")

    def _observe(self, track: PublishedTrack, frame: EncodedFrame, chain_broken: bool) -> None:
        if self.stopped:
            return
        if track.kind == "video" and not self._video_started:
            if not frame.keyframe:
                return
            self._video_started = True
        if track.kind == "audio" and not self._video_started:
            return  # start both together, at the first keyframe
        try:
            self._queue.put_nowait((track.kind, frame.data, frame.timestamp, frame.keyframe))
        except queue.Full:
            self.frames_dropped += 1

    def _open(self) -> tuple[Any, dict[str, _Stream]]:
        container = av.open(str(self.path), "w", format="matroska")
        streams: dict[str, _Stream] = {}
        for kind, track in self.tracks.items():
            name = (track.codec_name or ("vp8" if kind == "video" else "opus")).lower()
            if kind == "video":
                video: Any = container.add_stream(name, rate=30)
                video.width, video.height = 640, 480  # replaced from the first keyframe when it says (VP8)
                streams[kind] = _Stream(video, 90000)
            else:
                streams[kind] = _Stream(container.add_stream(name, rate=48000), 48000)
        return container, streams

    def _write(self) -> None:
        container: Any = None
        streams: dict[str, _Stream] = {}
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                kind, data, timestamp, keyframe = item
                if container is None:
                    if kind == "video" and data[:1] and not data[0] & 1 and len(data) >= 10:  # VP8 keyframe header
                        container, streams = self._open()
                        streams["video"].stream.width = int.from_bytes(data[6:8], "little") & 0x3FFF
                        streams["video"].stream.height = int.from_bytes(data[8:10], "little") & 0x3FFF
                    else:
                        container, streams = self._open()
                target = streams.get(kind)
                if target is None:
                    continue
                packet = av.Packet(data)
                packet.pts = packet.dts = target.pts(timestamp)
                packet.time_base = target.time_base
                packet.stream = target.stream
                if keyframe:
                    packet.is_keyframe = True
                container.mux(packet)
                self.frames_written += 1
                self.bytes_written += len(data)
        except Exception:
            log.exception("recording failed", extra={"path": str(self.path)})
        finally:
            if container is not None:
                container.close()

    def stop(self) -> None:
        """Stop observing, write what is queued, close the file (blocking until the writer is done)."""
        if self.stopped:
            return
        self.stopped = True
        for track in self.tracks.values():
            if self._observe in track.observers:
                track.observers.remove(self._observe)
        self._queue.put(None)
        self._thread.join(timeout=10)
        if self._on_stop is not None:
            self._on_stop(self)
