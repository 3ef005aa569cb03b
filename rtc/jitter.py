"""The marker-bit jitter buffer that replaces aiortc's inside a tapped receiver (see ``rtc.adapter``).

aiortc's own buffer holds video one frame interval and audio several packets (~35-80 ms); a relay that
forwards frames wants each one the moment its last packet arrives.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket


class MarkerJitterBuffer:
    """Stands in for aiortc's JitterBuffer (``add(packet) -> (pli_needed, None)``) and hands complete
    frames to ``deliver`` itself, since one packet can complete several frames (a retransmission that
    fills the gap in front of others), and aiortc's caller takes at most one.

    Video: a frame is the run of consecutive packets with one RTP timestamp ending with the marker bit,
    whose predecessor belongs to another frame (or ended the last released frame). It is released the
    moment it is complete, in order. A gap waits for retransmission (the receiver NACKs upstream); when
    the window overflows, the gap is given up, the next frame start is found, and a PLI is asked for.
    Audio: every packet is a frame, released at once.
    """

    def __init__(self, is_video: bool, deliver: Callable[[JitterFrame, int, int], None],
                 window: int = 512, starts_frame: Callable[[RtpPacket], bool] | None = None,
                 assemble: Callable[[int, list[bytes]], bytes] | None = None) -> None:
        self._is_video = is_video
        self._deliver = deliver  # (frame, payload type, ssrc)
        # A frame's bytes from its packets' depayloaded payloads, by payload type (the codec's ``assemble``).
        self._assemble = assemble or (lambda payload_type, payloads: b"".join(payloads))
        # Whether a packet certainly begins a frame (codec knowledge); lets the very first frame through.
        self._starts_frame = starts_frame or (lambda packet: False)
        self._window = window
        self._packets: dict[int, RtpPacket] = {}
        self._last_released: int | None = None  # extended sequence number of the last packet released
        self._highest: int | None = None
        self._after_gap = False

    @property
    def capacity(self) -> int:  # aiortc reads this in a log line
        return self._window

    def _extend(self, seq: int) -> int:
        """Map a 16-bit sequence number onto a monotonic one near the highest seen."""
        highest = self._highest
        if highest is None:
            return seq + (1 << 16)  # start one cycle up so small backward steps stay positive
        value = (highest & ~0xFFFF) + seq
        if value - highest > 1 << 15:
            value -= 1 << 16
        elif highest - value > 1 << 15:
            value += 1 << 16
        return value

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        data: bytes = packet._data  # type: ignore[attr-defined]  # set by the receiver's depayloader
        if not self._is_video:
            self._deliver(JitterFrame(data=data, timestamp=packet.timestamp), packet.payload_type, packet.ssrc)
            return False, None
        seq = self._extend(packet.sequence_number)
        if self._last_released is not None and seq <= self._last_released:
            return False, None  # a late duplicate of something already released
        self._packets[seq] = packet
        if self._highest is None or seq > self._highest:
            self._highest = seq
        released = self._release_ready()
        pli = False
        if not released and self._highest - min(self._packets) >= self._window:
            self._give_up_gap()
            self._release_ready()
            pli = True
        return pli, None

    def _release_ready(self) -> int:
        """Release every complete frame at the head of the buffer, in order; return how many."""
        count = 0
        while self._packets:
            start = self._next_start()
            if start is None:
                return count
            first = self._packets.get(start)
            if first is None:
                return count
            end = start
            while not self._packets[end].marker:
                nxt = self._packets.get(end + 1)
                if nxt is None or nxt.timestamp != first.timestamp:
                    return count
                end += 1
            parts = [self._packets.pop(s) for s in range(start, end + 1)]
            self._last_released = end
            data = self._assemble(first.payload_type, [p._data for p in parts])  # type: ignore[attr-defined]
            frame = JitterFrame(data=data, timestamp=first.timestamp)
            frame.after_gap = self._after_gap  # type: ignore[attr-defined]
            self._after_gap = False
            self._deliver(frame, first.payload_type, first.ssrc)
            count += 1
        return count

    def _next_start(self) -> int | None:
        if self._last_released is not None:
            return self._last_released + 1
        # Nothing released yet: the first frame start we can be sure of (the codec says so, or its
        # predecessor has another timestamp); a frame we joined in the middle of is skipped.
        for seq in sorted(self._packets):
            before = self._packets.get(seq - 1)
            if self._starts_frame(self._packets[seq]) or (
                    before is not None and before.timestamp != self._packets[seq].timestamp):
                for s in [s for s in self._packets if s < seq]:
                    del self._packets[s]
                self._last_released = seq - 1
                return seq
        return None

    def _give_up_gap(self) -> None:
        """Skip past the oldest gap to the next frame start we can be sure of."""
        seqs = sorted(self._packets)
        resume = None
        for seq in seqs[1:]:
            before = self._packets.get(seq - 1)
            if before is not None and before.timestamp != self._packets[seq].timestamp:
                resume = seq
                break
        self._last_released = (resume - 1) if resume is not None else seqs[-1]
        for s in [s for s in self._packets if s <= self._last_released]:
            del self._packets[s]
        self._after_gap = True


class JitterBuffers:
    """One ``MarkerJitterBuffer`` per SSRC, made as each SSRC's first packet comes: a simulcast track's layers
    arrive on one receiver, each its own run of sequence numbers, and each is assembled apart (only the
    layers someone takes frames of are handed here). At most ``MAX_STREAMS`` (the least recently used goes)."""

    MAX_STREAMS = 8

    def __init__(self, make: Callable[[], MarkerJitterBuffer]) -> None:
        self._make = make
        self._buffers: dict[int, MarkerJitterBuffer] = {}
        self.capacity = make().capacity  # aiortc reads this in a log line

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        buffer = self._buffers.pop(packet.ssrc, None)
        if buffer is None:
            buffer = self._make()
            while len(self._buffers) >= self.MAX_STREAMS:
                del self._buffers[next(iter(self._buffers))]
        self._buffers[packet.ssrc] = buffer  # (re-inserted: the newest last)
        return buffer.add(packet)
