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

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from relay.tracks import EncodedFrame, PublishedTrack
from rtc.mediafile import MediaFileWriter

log = logging.getLogger(__name__)

_QUEUE_FRAMES = 600  # ~10 s of audio+video: a disk slower than that drops frames rather than memory growing


class DiskBudget:
    """Bytes the recordings of one directory may still write, shared by their writer threads: the bound
    holds frame by frame, not only when the owner next looks at the disk."""

    def __init__(self, remaining: int) -> None:
        self._lock = threading.Lock()
        self._remaining = remaining

    def reset(self, remaining: int) -> None:
        """What the disk says is left (the owner re-reads it now and then)."""
        with self._lock:
            self._remaining = remaining

    def lower(self, remaining: int) -> None:
        """What the disk says is left, while writers run: their unflushed bytes are taken already."""
        with self._lock:
            self._remaining = min(self._remaining, remaining)

    def take(self, size: int) -> bool:
        with self._lock:
            if size > self._remaining:
                self._remaining = 0
                return False
            self._remaining -= size
            return True


RECORDABLE_VIDEO = ("vp8", "vp9", "h264")  # VP9 SVC: each picture a superframe of its layers


class Recording:
    """One publisher recorded into ``path`` until ``stop``. ``bytes_written`` and ``frames_dropped`` are
    for the operator (metrics, disk bounds)."""

    def __init__(self, path: Path, tracks: dict[str, PublishedTrack],
                 on_stop: Callable[[Recording], None] | None = None,
                 budget: DiskBudget | None = None,
                 on_first_frame: Callable[[Recording], None] | None = None) -> None:
        """``on_first_frame`` is called (on the event loop) when the frame the file starts at comes: its
        time 0. The request for a keyframe may go unanswered (an encoder that ignores it sends its next one
        a GOP later), so that can be seconds after the recording started."""
        self.path = path
        self._on_first_frame = on_first_frame
        self._budget = budget
        video = tracks.get("video")
        if video is not None and (video.codec_name or "vp8").lower() not in RECORDABLE_VIDEO:
            # A codec the file cannot hold (AV1, anything not in RECORDABLE_VIDEO): kept out, not garbled.
            log.warning("recording keeps audio only: this video codec is not recorded yet",
                        extra={"path": str(path), "codec": video.codec_name})
            tracks = {kind: track for kind, track in tracks.items() if kind != "video"}
        self.full = False  # the budget ran out: nothing more is written (the owner stops it)
        self.tracks = tracks
        self.started = time.time()
        self.frames_written = 0
        self.duration_s = 0.0  # once stopped: what the file says of itself
        self.streams: dict[str, str] = {}
        self.frames_dropped = 0
        self.bytes_written = 0
        self.stopped = False
        self._on_stop = on_stop
        self._queue: queue.Queue[tuple[str, bytes, int, bool] | None] = queue.Queue(_QUEUE_FRAMES)
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
        if self._on_first_frame is not None and ((track.kind == "video" and frame.keyframe)
                                                 or "video" not in self.tracks):
            # The file's first frame (MediaFileWriter starts at a video keyframe, or the first audio).
            first, self._on_first_frame = self._on_first_frame, None
            first(self)
        try:
            self._queue.put_nowait((track.kind, frame.data, frame.timestamp, frame.keyframe))
        except queue.Full:
            self.frames_dropped += 1

    def _write(self) -> None:
        fallback = {"video": "vp8", "audio": "opus"}
        codecs = {kind: track.codec_name or fallback[kind] for kind, track in self.tracks.items()}
        writer = MediaFileWriter(str(self.path), codecs)
        try:
            while (item := self._queue.get()) is not None:
                if self.full or (self._budget is not None and not self._budget.take(len(item[1]))):
                    self.full = True
                    self.frames_dropped += 1
                    continue
                writer.write(*item)
                self.frames_written, self.bytes_written = writer.frames, writer.bytes
        except Exception:
            log.exception("recording failed", extra={"path": str(self.path)})
        finally:
            writer.close()
            self.duration_s, self.streams = round(writer.duration_s, 3), writer.streams

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
