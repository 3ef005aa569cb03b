"""Every aiortc (and aioice) private name the relay depends on, in one place.

Written against aiortc 1.16.0 and aioice 0.13.0 (pyproject pins aiortc to >=1.16,<1.17); the tests in
``tests/test_relay_adapter.py`` exercise each hook on its own, so an aiortc upgrade that moves one of
these names fails there first. Nothing else in the code base touches aiortc's private names.

What it does, and why:
- ``tap_receiver``: take the encoded frames an ``RTCRtpReceiver`` assembles instead of letting them
  reach its decoder thread (no decoder is ever created), and replace its jitter buffer with one that
  releases a video frame as soon as its marker-bit packet completes it and passes audio straight
  through. aiortc's own buffer holds video one frame interval and audio several packets (~35-80 ms).
- ``send_pli``: ask a publisher for a keyframe (RTCP PLI upstream).
- ``on_keyframe_request``: route a subscriber's PLI/FIR to the relay; aiortc's sender would only set a
  flag for an encoder that forwarded media never uses.
- ``restrict_host_addresses``: gather ICE host candidates on the addresses the operator chose; aioice
  leaves 127.0.0.1 out, which loopback tests and demos need.
- ``negotiated_codecs`` / ``narrow_answer_codecs``: the codecs a transceiver settled on, and narrowing a
  subscriber's answer to exactly the publisher's codec.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcpeerconnection import filter_preferred_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

AIORTC_VERSION = "1.16.0"

FrameHandler = Callable[[RTCRtpCodecParameters, JitterFrame, int], None]
"""Called on the event loop with (codec, frame, media SSRC) for each complete encoded frame, in order.
``frame.timestamp`` is the publisher's RTP timestamp; ``frame.after_gap`` is True on the first frame
after frames were lost for good (the decoding chain is broken until the next keyframe)."""


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
                 window: int = 512, starts_frame: Callable[[RtpPacket], bool] | None = None) -> None:
        self._is_video = is_video
        self._deliver = deliver  # (frame, payload type, ssrc)
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
            frame = JitterFrame(data=b"".join(p._data for p in parts), timestamp=first.timestamp)  # type: ignore[attr-defined]
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


def packet_starts_frame(codec_name: str, payload: bytes) -> bool:
    """Whether an RTP payload certainly begins a frame.

    VP8 (RFC 7741): the payload descriptor's S bit with partition index 0. H.264 (RFC 6184): a packet
    that opens with SPS/PPS (alone or aggregated in STAP-A), the usual start of a keyframe's access unit.
    """
    if not payload:
        return False
    name = codec_name.lower()
    if name == "vp8":
        return bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0
    if name == "h264":
        nal_type = payload[0] & 0x1F
        if nal_type == 24 and len(payload) > 3:  # STAP-A: look at the first aggregated NAL unit
            nal_type = payload[3] & 0x1F
        return nal_type in (7, 8)
    return False


class FrameTap:
    """Stands where the receiver's decoder queue was, so its decoder thread never decodes: the thread's
    ``get`` blocks until the receiver stops (``put(None)``), then lets the thread end."""

    def __init__(self) -> None:
        self._stopped = threading.Event()

    def put(self, item: object) -> None:
        if item is None:
            self._stopped.set()

    def get(self) -> None:
        self._stopped.wait()
        return None


def tap_receiver(receiver: RTCRtpReceiver, kind: str, on_frame: FrameHandler) -> None:
    """Take over a receiver's frames. Call from ``pc.on("track")``, before ``receiver.receive()`` runs
    (aiortc fires "track" inside setRemoteDescription, before it starts the receiver)."""
    codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]

    def deliver(frame: JitterFrame, payload_type: int, ssrc: int) -> None:
        codec = codecs.get(payload_type)
        if codec is not None:
            on_frame(codec, frame, ssrc)

    def starts_frame(packet: RtpPacket) -> bool:
        codec = codecs.get(packet.payload_type)
        return codec is not None and packet_starts_frame(codec.name, packet.payload)

    receiver._RTCRtpReceiver__jitter_buffer = MarkerJitterBuffer(  # type: ignore[attr-defined]
        kind == "video", deliver, starts_frame=starts_frame)
    receiver._RTCRtpReceiver__decoder_queue = FrameTap()  # type: ignore[attr-defined]


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> asyncio.Task[None]:
    """Ask the publisher behind ``receiver`` for a keyframe."""
    return asyncio.ensure_future(receiver._send_rtcp_pli(media_ssrc))


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the subscriber behind ``sender`` sends PLI or FIR."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    return list(transceiver._codecs)


def narrow_answer_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """Apply codec preferences set after setRemoteDescription to what the answer will carry.

    aiortc settles an answerer's codecs inside setRemoteDescription, before the relay knows which
    publisher (and so which codec) the offer is for; this narrows them to the preferences now set."""
    transceiver._codecs = filter_preferred_codecs(transceiver._codecs, transceiver._preferred_codecs)
    return list(transceiver._codecs)


def restrict_host_addresses(pc: RTCPeerConnection, addresses: list[str]) -> None:
    """Make every ICE gatherer of ``pc`` offer host candidates on ``addresses`` only.

    Call after the transceivers exist (after setRemoteDescription / addTransceiver) and before
    setLocalDescription, which gathers."""
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.sender.transport.transport.iceGatherer
        connection: Any = gatherer._connection
        if getattr(connection, "_live_relay_addresses", None) is not None:
            continue
        connection._live_relay_addresses = list(addresses)

        async def gather(connection: Any = connection) -> None:
            if connection._local_candidates_start:
                return
            connection._local_candidates_start = True
            for component in connection._components:
                connection._local_candidates += await connection.get_component_candidates(
                    component=component, addresses=connection._live_relay_addresses)
            connection._local_candidates_end = True

        connection.gather_candidates = gather
