"""One publisher's VP8 or VP9 made H.264, for what only takes H.264 (LL-HLS players, RTMP platforms):
decoded and encoded again in a worker thread, never on the event loop. A VP9 SVC picture comes as one
superframe of its spatial layers (``rtc.codecs.vp9``); libvpx decodes it to its top layer.

A ``Transcoder`` is handed the track's assembled frames (an observer), keeps at most ``QUEUE_FRAMES`` of them
waiting (past that it drops, and since a VP8 frame needs the ones before it, it skips to the next keyframe
and asks the publisher for one), decodes them with libvpx and encodes them with libx264 (ultrafast,
zerolatency: no B-frames, no lookahead; a keyframe every ``KEYFRAME_EVERY`` frames, or at once when asked),
and hands each H.264 access unit (Annex B) back to the loop with the source frame's RTP timestamp. What it
costs is one decode and one encode of the top layer: ~0.1 core at 640x480 30 fps (docs/benchmarks.md); the
caller bounds how many run (``ServerConfig.hls_max_transcodes``).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import av

log = logging.getLogger(__name__)

QUEUE_FRAMES = 30  # about a second of video waiting at most
DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}  # libvpx: what the browsers that send these encode with
KEYFRAME_EVERY = 60  # frames (2 s at 30 fps): segments of about two seconds
Output = Callable[[bytes, int, bool], None]  # (H.264 access unit, RTP timestamp, keyframe)


class Transcoder:
    """``put`` source frames (on the loop); ``output`` gets H.264 frames (on the loop); ``keyframe()`` makes
    the next one a keyframe; ``close()`` ends the worker."""

    def __init__(self, codec: str, output: Output, ask_source_keyframe: Callable[[], None],
                 bitrate: int = 1_500_000) -> None:
        self.codec = codec.lower()
        if self.codec not in DECODERS:
            raise ValueError(f"no transcode from {codec}")
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.failures = 0
        self._output = output
        self._ask_source_keyframe = ask_source_keyframe
        self._bitrate = bitrate
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue(QUEUE_FRAMES)
        self._skipping = True  # until a source keyframe: nothing decodes before one
        self._force_keyframe = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"transcode-{self.codec}", daemon=True)
        self._thread.start()

    def put(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        if self._skipping and not keyframe:
            return
        self._skipping = False
        try:
            self._queue.put_nowait((data, timestamp))
            self.frames_in += 1
        except queue.Full:
            self.dropped += 1
            self._skipping = True  # the chain is broken: from the next keyframe, asked for now
            self._ask_source_keyframe()

    def keyframe(self) -> None:
        self._force_keyframe.set()

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            with self._queue.mutex:
                self._queue.queue.clear()
            self._queue.put_nowait(None)

    # -- the worker thread --------------------------------------------------------------------------------

    def _work(self) -> None:
        decoder: Any = av.CodecContext.create(DECODERS[self.codec], "r")
        encoder: Any = None
        count = 0
        while (item := self._queue.get()) is not None:
            data, timestamp = item
            try:
                pictures = decoder.decode(av.Packet(data))
            except av.FFmpegError:
                self.failures += 1
                continue
            for picture in pictures:
                if encoder is None or (encoder.width, encoder.height) != (picture.width, picture.height):
                    encoder = self._encoder(picture.width, picture.height)
                picture = picture.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
                picture.pts = count
                picture.time_base = encoder.time_base
                if self._force_keyframe.is_set():
                    self._force_keyframe.clear()
                    picture.pict_type = av.video.frame.PictureType.I  # an IDR (forced-idr): a segment may start
                count += 1
                for packet in encoder.encode(picture):
                    try:
                        self._loop.call_soon_threadsafe(self._deliver, bytes(packet), timestamp, packet.is_keyframe)
                    except RuntimeError:  # the loop closed while this frame was encoding: nobody to give it to
                        return

    def _encoder(self, width: int, height: int) -> Any:
        encoder: Any = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = width - width % 2, height - height % 2
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = fractions.Fraction(1, 30)
        encoder.bit_rate = self._bitrate
        encoder.gop_size = KEYFRAME_EVERY
        # Annex B with the SPS and PPS before every keyframe (a segment, and the fMP4 writer, start at one).
        encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "forced-idr": "1",
                           "x264-params": "repeat-headers=1:annexb=1"}
        return encoder

    def _deliver(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        self.frames_out += 1
        self._output(data, timestamp, keyframe)
