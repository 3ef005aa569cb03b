"""Every aiortc (and aioice) private name the relay depends on, in one place.

Written against aiortc 1.16.0 and aioice 0.13.0 (pyproject pins aiortc to >=1.16,<1.17); the tests in
``tests/test_rtc_adapter.py`` exercise each hook on its own, so an aiortc upgrade that moves one of
these names fails there first. Nothing else in the code base touches aiortc's private names.

What it does, and why:
- ``tap_receiver``: take the encoded frames an ``RTCRtpReceiver`` assembles instead of letting them
  reach its decoder thread (no decoder is ever created), and replace its jitter buffer with one that
  releases a video frame as soon as its marker-bit packet completes it and passes audio straight
  through. aiortc's own buffer holds video one frame interval and audio several packets (~35-80 ms).
- ``release_frames_on_marker``: the same buffer in a client's decoding video receiver, so a frame is
  decoded when it is complete, not one frame interval later.
- ``repeat_nacks``: a video receiver asks again for a packet whose retransmission was lost too
  (``rtc.nack``); aiortc asks once.
- ``send_pli``: ask a publisher for a keyframe (RTCP PLI upstream).
- ``on_keyframe_request``: route a subscriber's PLI/FIR to the relay; aiortc's sender would only set a
  flag for an encoder that forwarded media never uses.
- ``restrict_host_addresses``: gather ICE host candidates on the addresses the operator chose; aioice
  leaves 127.0.0.1 out, which loopback tests and demos need. ``ice_connections``: the aioice connections
  the one-port mux (``rtc.udpmux``, which holds its own few aioice names) attaches to.
- ``negotiated_codecs`` / ``narrow_answer_codecs``: the codecs a transceiver settled on, and narrowing a
  subscriber's answer to exactly the publisher's codec.
- ``accept_red`` / ``enable_opus_fec``: audio that survives loss. aiortc knows no RED (RFC 2198), so a
  subscriber's offered ``red/48000/2`` is added to the answer by hand (the forwarder wraps Opus in it),
  and Opus answers say ``useinbandfec=1`` so a publisher's encoder adds in-band FEC when it sees loss.
- ``accept_simulcast`` / ``answer_simulcast`` / ``SimulcastDemux``: rid-based simulcast ingest (RFC 8853),
  which aiortc's SDP does not know: the rid header extensions are negotiated, the answer says
  ``a=rid:X recv`` and ``a=simulcast:recv``, and the single video receiver that aiortc routes every layer
  to (by payload type) learns which SSRC is which layer from the rid extensions, finds each layer's RTX
  stream by its repaired-rid; NACKs are kept per SSRC (``repeat_nacks``).
- ``quicken_handshakes`` / ``set_stun_retransmission_timeout``: a lost DTLS flight is sent again after
  about a round trip, or at once when the peer shows it lacks ours, instead of OpenSSL's 1 s (which
  pyOpenSSL cannot set), and a lost ICE check after 50 ms instead of aioice's 500 ms (``rtc.handshake``
  owns how): what call set-up costs on lossy links. Consent freshness as RFC 7675 says (``rtc.consent``):
  aioice's closes a connection whose checks are not answered within its first STUN timeout six times.
- ``end_ice_monitor_on_close``: aiortc's ICE transport watches its aioice connection in a loop that ends
  only on a ``ConnectionClosed`` event; a connection closed while that loop was not waiting (a peer
  connection closed as its ICE was starting) answers every later wait with None at once, and the loop spun
  a core forever. It now ends on None too.
- ``receive_synchronously``: a publisher's SRTP handled in the one-port mux's datagram callback (unprotect,
  parse, route, the receiver's steps), not through aioice's queue and the DTLS transport's task; the
  receiver's steps (``_ReceiverStep``) are aiortc's, without awaiting. ``rtp_hooks``: what sees each packet
  first on either path (the transport-cc recorder, the simulcast demux).
- ``PacketOutput`` (with ``send_parameters``, ``on_nack``, ``report_sent``): forward RTP packets to a
  subscriber ourselves, SRTP-protected and written straight to its ICE socket, instead of through the
  sender's per-subscriber task that re-packetizes every frame and awaits its way down to aioice per
  packet. The sender is kept for what it does well: SDP, RTCP (sender reports from the counters we give
  it, receiver reports, PLI/FIR routing) and BYE; NACKs are answered from the forwarder's own history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice.ice import ConnectionClosed
from aiortc import (
    RTCCertificate,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    clock,
)
from aiortc.codecs import depayload, is_rtx
from aiortc.exceptions import InvalidStateError
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcpeerconnection import filter_preferred_codecs
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)
from aiortc.sdp import SessionDescription

from rtc.codecs import codec_for, packet_starts_frame
from rtc.consent import keep_consent
from rtc.handshake import HandshakeRepair, RoundTrip, answer_sent, sample_ice_rtt, set_stun_schedule
from rtc.jitter import JitterBuffers, MarkerJitterBuffer
from rtc.nack import NacksPerSsrc
from rtc.ratecount import WindowRateCounter
from rtc.twcc import FEEDBACK_INTERVAL, TransportFeedback
from rtc.twcc import URI as TWCC_URI
from rtc.udpmux import MuxedProtocol, set_media_sink

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"

PacketHandler = Callable[[RTCRtpCodecParameters, RtpPacket], bool | None]
"""Called on the event loop with every RTP packet a receiver accepts (RTX already unwrapped, so a
retransmission arrives as the original packet, possibly late and out of order) and its codec; returns
False to keep the packet out of the frame assembly."""

FrameHandler = Callable[[RTCRtpCodecParameters, JitterFrame, int], None]
"""Called on the event loop with (codec, frame, media SSRC) for each complete encoded frame, in order.
``frame.timestamp`` is the publisher's RTP timestamp; ``frame.after_gap`` is True on the first frame
after frames were lost for good (the decoding chain is broken until the next keyframe)."""


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


def tap_receiver(receiver: RTCRtpReceiver, kind: str, on_frame: FrameHandler,
                 on_packet: PacketHandler | None = None) -> None:
    """Take over a receiver's frames (and, with ``on_packet``, see each of its packets first). Call from
    ``pc.on("track")``, before ``receiver.receive()`` runs (aiortc fires "track" inside
    setRemoteDescription, before it starts the receiver)."""
    codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]

    def deliver(frame: JitterFrame, payload_type: int, ssrc: int) -> None:
        codec = codecs.get(payload_type)
        if codec is not None:
            on_frame(codec, frame, ssrc)

    def starts_frame(packet: RtpPacket) -> bool:
        codec = codecs.get(packet.payload_type)
        return codec is not None and packet_starts_frame(codec.name, packet.payload)

    def frame_of(payload_type: int, payloads: list[bytes]) -> bytes:  # (VP9: its layer frames, a superframe)
        codec = codecs.get(payload_type)
        return codec_for(codec.name if codec is not None else None).assemble(payloads)

    # Per SSRC: a simulcast track's layers each assembled apart (those its ``on_packet`` lets through).
    buffer = JitterBuffers(lambda: MarkerJitterBuffer(kind == "video", deliver, starts_frame=starts_frame,
                                                      assemble=frame_of))
    if kind == "video":
        repeat_nacks(receiver)
    if on_packet is not None:
        assemble = buffer.add

        def add(packet: RtpPacket) -> tuple[bool, None]:
            codec = codecs.get(packet.payload_type)
            if codec is not None and on_packet(codec, packet) is False:
                return False, None  # not for the frame assembly (a layer nobody takes frames of)
            return assemble(packet)

        buffer.add = add  # type: ignore[method-assign]
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_queue = FrameTap()  # type: ignore[attr-defined]


def repeat_nacks(receiver: RTCRtpReceiver) -> NacksPerSsrc:
    """A video receiver asks again for packets still missing (``rtc.nack``), per SSRC, instead of once."""
    current = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
    if isinstance(current, NacksPerSsrc):
        return current
    nacks = NacksPerSsrc()
    receiver._RTCRtpReceiver__nack_generator = nacks  # type: ignore[attr-defined]
    return nacks


def release_frames_on_marker(receiver: RTCRtpReceiver) -> None:
    """A decoding video receiver hands each frame to its decoder the moment the frame's last packet (the
    marker bit) arrives, as a browser's receiver does, instead of when the next frame's first packet
    comes: aiortc's buffer holds every frame one frame interval (~33 ms at 30 fps), the first one too.
    Call from ``pc.on("track")`` for a video track that is decoded (not tapped)."""
    codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]

    def deliver(frame: JitterFrame, payload_type: int, ssrc: int) -> None:
        codec = codecs.get(payload_type)
        if codec is None or not receiver._RTCRtpReceiver__decoder_thread:  # type: ignore[attr-defined]
            return
        frame.timestamp = receiver._RTCRtpReceiver__timestamp_mapper.map(frame.timestamp)  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__decoder_queue.put((codec, frame))  # type: ignore[attr-defined]

    def starts_frame(packet: RtpPacket) -> bool:
        codec = codecs.get(packet.payload_type)
        return codec is not None and packet_starts_frame(codec.name, packet.payload)

    receiver._RTCRtpReceiver__jitter_buffer = MarkerJitterBuffer(  # type: ignore[attr-defined]
        True, deliver, starts_frame=starts_frame)
    repeat_nacks(receiver)


def demux_by_mid(pc: RTCPeerConnection) -> None:
    """Route incoming RTP to receivers by its MID header extension first (RFC 8843's BUNDLE demultiplexing),
    as browsers do. aiortc gives a packet of an unknown SSRC to the one receiver of its payload type: a
    stream added by renegotiation whose first packets come before the answer is applied (its receiver not
    registered yet) was taken for the other stream of that type, and its keyframe broke that stream's
    decoder. A packet whose MID names no receiver yet is dropped (the sender's repairs bring it back)."""
    for transceiver in pc.getTransceivers():
        router: Any = transceiver.receiver.transport._rtp_router
        if getattr(router, "_live_relay_by_mid", False):
            continue
        by_type = router.route_rtp

        def route(packet: RtpPacket, router: Any = router, by_type: Any = by_type) -> Any:
            mid = packet.extensions.mid
            if not mid:
                return by_type(packet)
            receiver = router.mid_table.get(mid)
            if receiver is not None:
                router.ssrc_table[packet.ssrc] = receiver
            return receiver

        router.route_rtp = route
        router._live_relay_by_mid = True


def rtp_hooks(receiver: RTCRtpReceiver) -> list[Callable[[RtpPacket], None]]:
    """The callbacks that see each RTP packet routed to ``receiver`` (RTX not unwrapped yet) before aiortc
    handles it, on either receive path (aiortc's or ``receive_synchronously``'s); append to add one."""
    hooks: list[Callable[[RtpPacket], None]] | None = getattr(receiver, "_live_relay_rtp_hooks", None)
    if hooks is None:
        hooks = []
        receiver._live_relay_rtp_hooks = hooks  # type: ignore[attr-defined]
        handle = receiver._handle_rtp_packet

        async def handle_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            for hook in hooks:
                hook(packet)
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp  # type: ignore[method-assign]
    return hooks


class _ReceiverStep:
    """aiortc 1.16's ``RTCRtpReceiver._handle_rtp_packet`` for a tapped receiver, without awaiting: the same
    steps in the same order (its bitrate estimate and REMB, statistics for receiver reports, RTX unwrapped,
    NACKs, depayloading, the jitter buffer and PLI), the RTCP it sends scheduled as tasks (a few a second).
    The source list ``getSynchronizationSources`` reads is refreshed once a second per SSRC, not per packet
    (a timezone-aware ``datetime.now`` a packet cost more than the rest of the bookkeeping)."""

    def __init__(self, receiver: RTCRtpReceiver, spawn: Callable[[Any], None]) -> None:
        self.receiver = receiver
        self._spawn = spawn
        self._hooks = rtp_hooks(receiver)
        self._codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        self._streams: dict[int, Any] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        self._rtx_ssrc: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        self._active: dict[int, Any] = receiver._RTCRtpReceiver__active_ssrc  # type: ignore[attr-defined]
        self._active_at: dict[int, float] = {}
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        if estimator is not None and not isinstance(estimator.incoming_bitrate, WindowRateCounter):
            estimator.incoming_bitrate = WindowRateCounter(1000, 8000)  # aiortc's RateCounter(1000, 8000), cheaper

    def __call__(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        receiver: Any = self.receiver
        if not receiver._enabled:
            return
        for hook in self._hooks:
            hook(packet)
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator
        if estimator is not None and packet.extensions.abs_send_time is not None:
            self._estimate(estimator, packet, arrival_time_ms)
        now = time.monotonic()
        if now - self._active_at.get(packet.ssrc, -1.0) >= 1.0:
            self._active_at[packet.ssrc] = now
            self._active[packet.ssrc] = clock.current_datetime()
        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stats = self._streams.get(packet.ssrc)
        if stats is None:
            stats = self._streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        if is_rtx(codec):
            unwrapped = self._unwrap(packet, codec)
            if unwrapped is None:
                return
            packet, codec = unwrapped
        nacks = receiver._RTCRtpReceiver__nack_generator
        if nacks is not None and nacks.add(packet):
            self._spawn(receiver._send_rtcp_nack(packet.ssrc, sorted(nacks.missing)))
        try:
            packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return
        pli, frame = receiver._RTCRtpReceiver__jitter_buffer.add(packet)
        self._after_buffer(packet, codec, pli, frame)

    def _unwrap(self, packet: RtpPacket,
                codec: RTCRtpCodecParameters) -> tuple[RtpPacket, RTCRtpCodecParameters] | None:
        """A retransmission as the packet it repairs, with that packet's codec (None: not one we can place)."""
        original_ssrc = self._rtx_ssrc.get(packet.ssrc)
        apt = codec.parameters.get("apt")
        if original_ssrc is None or len(packet.payload) < 2 or not isinstance(apt, int) or apt not in self._codecs:
            return None
        return unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc), self._codecs[apt]

    def _after_buffer(self, packet: RtpPacket, codec: RTCRtpCodecParameters, pli: bool, frame: Any) -> None:
        receiver: Any = self.receiver
        if receiver._RTCRtpReceiver__decoder_error.is_set():
            receiver._RTCRtpReceiver__decoder_error.clear()
            pli = pli or receiver._RTCRtpReceiver__kind == "video"
        if pli:
            self._spawn(receiver._send_rtcp_pli(packet.ssrc))
        if frame is not None and receiver._RTCRtpReceiver__decoder_thread:
            frame.timestamp = receiver._RTCRtpReceiver__timestamp_mapper.map(frame.timestamp)
            receiver._RTCRtpReceiver__decoder_queue.put((codec, frame))

    def _estimate(self, estimator: Any, packet: RtpPacket, arrival_time_ms: int) -> None:
        remb = estimator.add(abs_send_time=packet.extensions.abs_send_time, arrival_time_ms=arrival_time_ms,
                             payload_size=len(packet.payload) + packet.padding_size, ssrc=packet.ssrc)
        rtcp_ssrc = self.receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
        if rtcp_ssrc is not None and remb is not None:
            self._spawn(self.receiver._send_rtcp(RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))))


_NTP_OFFSET_MS = 2_208_988_800_000  # 1900-01-01 to 1970-01-01: aiortc's arrival times count from NTP's epoch


class SyncReceive:
    """A peer connection's incoming SRTP handled where the datagram arrives, in the mux's callback: unprotected,
    parsed, routed and given to its receiver (``_ReceiverStep``) with no queue and no task switch between.
    aiortc's path for the same packet puts it in aioice's queue, wakes the DTLS transport's task, and awaits
    through five coroutines (a publisher's packets were a quarter of the node's CPU before any viewer came).
    DTLS and SRTCP keep aiortc's path. ``stats`` counts what it handled and dropped."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._dtls: Any = next(t.receiver.transport for t in pc.getTransceivers())
        self._steps: dict[int, _ReceiverStep] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self.packets = 0
        self.dropped = 0  # failed SRTP authentication or RTP parsing, or routed to no receiver
        self.failed = 0  # a step raised (logged once); the packet is lost, the connection kept

    def __call__(self, data: bytes) -> bool:
        dtls = self._dtls
        srtp = dtls._rx_srtp
        if srtp is None or dtls._state is not DtlsState.CONNECTED or is_rtcp(data):
            return False
        arrival_time_ms = int(time.time() * 1000) + _NTP_OFFSET_MS
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        try:
            packet = RtpPacket.parse(srtp.unprotect(data), dtls._rtp_header_extensions_map)
        except (pylibsrtp.Error, ValueError):
            self.dropped += 1
            return True
        receiver = dtls._rtp_router.route_rtp(packet)
        if receiver is None:
            self.dropped += 1
            return True
        step = self._steps.get(id(receiver))
        if step is None:
            step = self._steps[id(receiver)] = _ReceiverStep(receiver, self._spawn)
        self.packets += 1
        try:
            step(packet, arrival_time_ms)
        except Exception:
            self.failed += 1
            if self.failed == 1:
                log.exception("receiving a packet failed")
        return True

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def receive_synchronously(pc: RTCPeerConnection) -> SyncReceive | None:
    """Take ``pc``'s incoming SRTP off aiortc's task-per-transport path (``SyncReceive``) where its ICE
    connection is on the one-port mux. For receivers that are tapped (``tap_receiver``) or decode with
    ``release_frames_on_marker``; call after the answer is made (its ICE connection exists). Returns the
    receive path (its counters), or None when the connection is not on the mux (aiortc's path stays)."""
    connections = ice_connections(pc)
    if len(connections) != 1 or not any(isinstance(p, MuxedProtocol) for p in connections[0]._protocols):
        return None
    sink = SyncReceive(pc)
    set_media_sink(connections[0], sink)
    return sink


def count_rtp(pc: RTCPeerConnection, on_rtp: Callable[[bytes], None]) -> None:
    """Hand every RTP packet the connection receives, decrypted, to ``on_rtp`` (raw bytes: the caller reads
    the header) instead of aiortc's receive path (parsing, jitter buffer, NACKs, its estimate): a load
    generator's subscriber that counts and checks packets costs a few microseconds a packet, so one machine
    can hold hundreds beside the relay. Call once the answer is applied (before SRTP flows); RTCP is
    untouched."""
    for transceiver in pc.getTransceivers():
        dtls: Any = transceiver.receiver.transport
        if getattr(dtls, "_live_relay_counted", False):
            continue

        async def handle(data: bytes, arrival_time_ms: int) -> None:
            on_rtp(data)

        dtls._handle_rtp_data = handle
        dtls._live_relay_counted = True


async def _monitor_ending_on_close(self: Any) -> None:
    while True:
        event = await self._connection.get_event()
        if event is None or isinstance(event, ConnectionClosed):  # (None: closed while nobody was waiting)
            if self.state == "completed":
                self._RTCIceTransport__setState("failed")
            return


def end_ice_monitor_on_close() -> None:
    """Make every ``RTCIceTransport``'s monitor end when its connection is closed, however the close came (see
    the module). Idempotent; the media router and the clients call it before they make peer connections."""
    if RTCIceTransport._monitor is not _monitor_ending_on_close:
        RTCIceTransport._monitor = _monitor_ending_on_close  # type: ignore[method-assign]


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> asyncio.Task[None]:
    """Ask the publisher behind ``receiver`` for a keyframe."""
    return asyncio.ensure_future(receiver._send_rtcp_pli(media_ssrc))


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the subscriber behind ``sender`` sends PLI or FIR."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    return list(transceiver._codecs)


# Codecs the relay forwards that aiortc does not know (it neither offers nor answers them): taken from the
# offer as it lists them. A publisher gets one only when it lists it first (it prefers it).
FORWARDED_ONLY = {"video/vp9": {"profile-id": "0"}}
_FEEDBACK = {("nack", None), ("nack", "pli"), ("goog-remb", None), ("transport-cc", None)}


def _offered_codec(media: Any, mime: str, wanted: dict[str, str]) -> tuple[Any, Any] | None:
    """The offer's first ``mime`` codec whose fmtp has ``wanted``'s values (an absent one: its default),
    and its RTX (or None); None when the offer has no such codec."""
    primary = [c for c in media.rtp.codecs if not c.mimeType.lower().endswith("/rtx")]
    chosen = next((c for c in primary if c.mimeType.lower() == mime.lower()
                   and all(str(c.parameters.get(k, v)) == v for k, v in wanted.items())), None)
    if chosen is None:
        return None
    rtx = next((c for c in media.rtp.codecs if c.mimeType.lower().endswith("/rtx")
                and str(c.parameters.get("apt")) == str(chosen.payloadType)), None)
    return chosen, rtx


def _preferred(media: Any) -> Any:
    """The offer's preferred codec: the first of its m-line's formats (not the first rtpmap line)."""
    by_type = {c.payloadType: c for c in media.rtp.codecs if not c.mimeType.lower().endswith("/rtx")}
    return next((by_type[int(f)] for f in media.fmt if int(f) in by_type), None)


def accept_offered_codec(transceiver: RTCRtpTransceiver, offer_sdp: str, mime: str, *, only: bool,
                         first_only: bool = False) -> bool:
    """Answer with ``mime`` (a ``FORWARDED_ONLY`` codec) as the offer lists it, with its RTX: in front of
    the codecs aiortc settled, or (``only``) alone. With ``first_only`` only when the offer lists it
    first. Returns whether it is in. Call after setRemoteDescription, before createAnswer."""
    media = _offered_media(offer_sdp, transceiver.mid)
    wanted = FORWARDED_ONLY.get(mime.lower())
    found = None if media is None or wanted is None else _offered_codec(media, mime, wanted)
    if found is None:
        return False
    chosen, rtx = found
    if first_only and _preferred(media) is not chosen:
        return False  # the publisher prefers another codec
    feedback = [f for f in chosen.rtcpFeedback if (f.type, f.parameter) in _FEEDBACK]
    codecs = [RTCRtpCodecParameters(mimeType=chosen.mimeType, clockRate=chosen.clockRate,
                                    payloadType=chosen.payloadType, rtcpFeedback=feedback,
                                    parameters=dict(chosen.parameters))]
    if rtx is not None:
        codecs.append(RTCRtpCodecParameters(mimeType=rtx.mimeType, clockRate=rtx.clockRate,
                                            payloadType=rtx.payloadType, parameters={"apt": chosen.payloadType}))
    taken = {c.payloadType for c in codecs}
    transceiver._codecs = codecs + ([] if only else [c for c in transceiver._codecs if c.payloadType not in taken])
    return True


def narrow_answer_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """Apply codec preferences set after setRemoteDescription to what the answer will carry.

    aiortc settles an answerer's codecs inside setRemoteDescription, before the relay knows which
    publisher (and so which codec) the offer is for; this narrows them to the preferences now set."""
    transceiver._codecs = filter_preferred_codecs(transceiver._codecs, transceiver._preferred_codecs)
    return list(transceiver._codecs)


def ice_connections(pc: RTCPeerConnection) -> list[Any]:
    """The aioice ``Connection`` of each of ``pc``'s ICE transports (one with BUNDLE), once the
    transceivers exist: what ``rtc.udpmux.UdpMux.attach`` takes."""
    seen: dict[int, Any] = {}
    dtls_transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    for dtls in dtls_transports:
        connection = dtls.transport.iceGatherer._connection
        seen.setdefault(id(connection), connection)
    return list(seen.values())


def restrict_host_addresses(pc: RTCPeerConnection, addresses: list[str],
                            ports: PortRange | None = None) -> None:
    """Make every ICE gatherer of ``pc`` offer host candidates on ``addresses`` only, on a port of
    ``ports`` when given (an operator's firewall opens that range; otherwise any port).

    Call after the transceivers exist (after setRemoteDescription / addTransceiver) and before
    setLocalDescription, which gathers."""
    for connection in ice_connections(pc):
        if getattr(connection, "_live_relay_addresses", None) is not None:
            continue
        connection._live_relay_addresses = list(addresses)

        async def gather(connection: Any = connection) -> None:
            if connection._local_candidates_start:
                return
            connection._local_candidates_start = True
            for component in connection._components:
                if ports is None:
                    connection._local_candidates += await connection.get_component_candidates(
                        component=component, addresses=connection._live_relay_addresses)
                else:
                    connection._local_candidates += await _candidates_in_range(
                        connection, component, connection._live_relay_addresses, ports)
            connection._local_candidates_end = True

        connection.gather_candidates = gather


class PortRange:
    """``first..last`` (inclusive); hands out ports round-robin so a port freed a moment ago is the last
    to be tried again."""

    def __init__(self, first: int, last: int) -> None:
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"not a port range: {first}-{last}")
        self.first, self.last = first, last
        self._next = first

    def __len__(self) -> int:
        return self.last - self.first + 1

    def ports(self) -> list[int]:
        start = self._next
        self._next = self.first + (start - self.first + 1) % len(self)
        return [self.first + (start - self.first + i) % len(self) for i in range(len(self))]


async def _candidates_in_range(connection: Any, component: int, addresses: list[str],
                               ports: PortRange) -> list[Any]:
    """aioice's host-candidate gathering, on a free port of ``ports`` per address. Raises OSError when
    the range is full."""
    from aioice import Candidate
    from aioice.candidate import candidate_foundation, candidate_priority
    from aioice.ice import StunProtocol

    loop = asyncio.get_running_loop()
    candidates = []
    for address in addresses:
        for port in ports.ports():
            try:
                _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection),
                                                                  local_addr=(address, port))
                break
            except OSError:
                continue
        else:
            raise OSError(f"every port of {ports.first}-{ports.last} is in use on {address}")
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", address), component=component, transport="udp",
            priority=candidate_priority(component, "host"), host=address, port=port, type="host")
        connection._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    return candidates


def _offered_media(offer_sdp: str, mid: str | None) -> Any:
    for media in SessionDescription.parse(offer_sdp).media:
        if media.rtp.muxId == mid:
            return media
    return None


def accept_transport_cc(transceiver: RTCRtpTransceiver, offer_sdp: str, kinds: tuple[str, ...] = ("video",)) -> bool:
    """Answer an m-section of one of ``kinds`` with transport-wide congestion control when the offer has
    both its header extension and ``rtcp-fb transport-cc`` (browsers do). A publisher then estimates its
    uplink from our feedback (``TransportFeedbackSender``) instead of our REMB; a subscriber acknowledges
    what we send it (``on_transport_feedback``). Call after setRemoteDescription."""
    media = _offered_media(offer_sdp, transceiver.mid)
    if transceiver.kind not in kinds or media is None:
        return False
    offered = next((ext for ext in media.rtp.headerExtensions if ext.uri == TWCC_URI), None)
    if offered is None or not any(fb.type == "transport-cc" for c in media.rtp.codecs for fb in c.rtcpFeedback):
        return False
    if all(ext.uri != TWCC_URI for ext in transceiver._headerExtensions):
        transceiver._headerExtensions.append(RTCRtpHeaderExtensionParameters(id=offered.id, uri=TWCC_URI))
    for codec in transceiver._codecs:
        if not codec.mimeType.lower().endswith("/rtx") and all(fb.type != "transport-cc" for fb in codec.rtcpFeedback):
            codec.rtcpFeedback.append(RTCRtcpFeedback(type="transport-cc"))
    return True


class TransportFeedbackSender:
    """Feedback on every packet with a transport-wide sequence number a video receiver gets (``rtc.twcc``),
    sent every ``FEEDBACK_INTERVAL`` while packets come. aiortc's own REMB for that receiver is turned off:
    a sender with transport-cc takes a REMB as a cap, and aiortc's starts low and grows slowly.
    ``close()`` stops it (the peer connection's end)."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self.feedback = TransportFeedback()
        self.packets_sent = 0
        self._receiver = receiver
        self._media_ssrc = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Future[None]] = set()
        self._closed = False
        receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
        rtp_hooks(receiver).append(self._on_rtp)

    def _on_rtp(self, packet: RtpPacket) -> None:
        seq = packet.extensions.transport_sequence_number
        if seq is not None:
            self.feedback.record(seq, time.monotonic_ns() // 1000)
            if not self._media_ssrc:
                self._media_ssrc = packet.ssrc
            if self._timer is None and not self._closed:
                self._timer = asyncio.get_running_loop().call_later(FEEDBACK_INTERVAL, self._send)

    def _send(self) -> None:
        self._timer = None
        sender_ssrc = self._receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
        transport = self._receiver.transport
        if self._closed or sender_ssrc is None or transport.state != "connected":
            return
        for packet in self.feedback.build(sender_ssrc, self._media_ssrc):
            self.packets_sent += 1
            task = asyncio.ensure_future(_send_rtcp_bytes(transport, packet))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def split_transport_feedback(data: bytes) -> tuple[list[bytes], bytes]:
    """A compound RTCP datagram's transport feedback packets (RTPFB, FMT 15), and the rest of it as it was.
    aiortc reads FMT 15 as a NACK list (and a padded one fails its parsing, losing the whole datagram)."""
    feedback, rest, pos = [], b"", 0
    while pos + 4 <= len(data):
        end = pos + (int.from_bytes(data[pos + 2:pos + 4], "big") + 1) * 4
        if end > len(data):
            break  # malformed: aiortc's parser says so for what is left
        if data[pos + 1] == 205 and data[pos] & 0x1F == 15:
            feedback.append(data[pos:end])
        else:
            rest += data[pos:end]
        pos = end
    return feedback, rest + data[pos:]


def on_transport_feedback(sender: RTCRtpSender, callback: Callable[[bytes], None]) -> None:
    """Hand every transport feedback packet the subscriber sends on ``sender``'s transport to ``callback``
    (raw bytes: ``rtc.twcc.parse_feedback`` reads them); aiortc gets the rest of each datagram."""
    dtls = sender.transport
    handle = dtls._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        feedback, rest = split_transport_feedback(data)
        for packet in feedback:
            callback(packet)
        if rest:
            await handle(rest)

    dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]


async def _send_rtcp_bytes(transport: Any, data: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        await transport._send_rtp(data)


def accept_red(transceiver: RTCRtpTransceiver, offer_sdp: str) -> int | None:
    """Answer an audio transceiver with RED (RFC 2198) over its Opus when the offer lists
    ``red/48000/2``; returns RED's payload type, or None when the offer has none. Call after
    setRemoteDescription and the codec narrowing, before createAnswer."""
    opus = next((c for c in transceiver._codecs if c.mimeType.lower() == "audio/opus"), None)
    media = _offered_media(offer_sdp, transceiver.mid)
    if opus is None or media is None:
        return None
    red = next((c for c in media.rtp.codecs if c.mimeType.lower() == "audio/red" and c.clockRate == 48000), None)
    if red is None or red.payloadType is None:
        return None
    transceiver._codecs.append(RTCRtpCodecParameters(
        mimeType="audio/red", clockRate=48000, channels=2, payloadType=red.payloadType,
        parameters={f"{opus.payloadType}/{opus.payloadType}": None}))
    return int(red.payloadType)


def enable_opus_fec(transceiver: RTCRtpTransceiver) -> None:
    """Say ``useinbandfec=1`` (and Opus's usual ``minptime=10``) in the answer, which aiortc leaves out."""
    for codec in transceiver._codecs:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters = {"minptime": 10, "useinbandfec": 1, **codec.parameters}


RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_SIMULCAST_LAYERS = 4  # a publisher's further rids are declined in the answer (bounded per-layer state)


def offered_rids(offer_sdp: str, mid: str | None) -> list[str]:
    """The rids an offer's m-section (by mid) says it sends as simulcast, in its ``a=simulcast`` order."""
    section_mid: str | None = None
    rids: list[str] = []
    order: list[str] = []
    for line in offer_sdp.splitlines():
        if line.startswith("m="):
            if section_mid == mid and order:
                break
            section_mid, rids, order = None, [], []
        elif line.startswith("a=mid:"):
            section_mid = line[6:].strip()
        elif line.startswith("a=rid:") and line.split()[1:2] == ["send"]:
            rids.append(line[6:].split()[0])
        elif line.startswith("a=simulcast:send "):
            # "q;h;f" or with alternatives "q,q2;h": the first of each, paused ones (~) left out.
            order = [alt.split(",")[0] for alt in line.split(" ", 1)[1].strip().split(";")]
            order = [r for r in order if not r.startswith("~")]
    if section_mid != mid:
        return []
    return [r for r in order if r in rids]


def accept_simulcast(transceiver: RTCRtpTransceiver, offer_sdp: str) -> list[str]:
    """Accept the simulcast an offer's video m-section sends: negotiate its rid header extensions (so
    the receiver parses them) and return its rids (empty: no simulcast). Call after setRemoteDescription."""
    rids = offered_rids(offer_sdp, transceiver.mid)[:MAX_SIMULCAST_LAYERS]
    media = _offered_media(offer_sdp, transceiver.mid)
    if len(rids) < 2 or media is None:
        return []
    known = {ext.uri for ext in transceiver._headerExtensions}
    wanted = [ext for ext in media.rtp.headerExtensions if ext.uri in (RID_URI, REPAIRED_RID_URI)]
    if not any(ext.uri == RID_URI for ext in wanted):
        return []
    transceiver._headerExtensions += [RTCRtpHeaderExtensionParameters(id=ext.id, uri=ext.uri)
                                      for ext in wanted if ext.uri not in known]
    return rids


def answer_simulcast(answer_sdp: str, mid: str | None, rids: list[str]) -> str:
    """Add ``a=rid:X recv`` and ``a=simulcast:recv`` for ``rids`` to the answer's m-section ``mid``."""
    lines, out, in_section = answer_sdp.split("\r\n"), [], False
    for line in lines:
        if line.startswith("m="):
            in_section = False
        if line == f"a=mid:{mid}":
            in_section = True
        out.append(line)
        if in_section and line == f"a=mid:{mid}":
            out += [f"a=rid:{rid} recv" for rid in rids] + [f"a=simulcast:recv {';'.join(rids)}"]
    return "\r\n".join(out)


class SimulcastDemux:
    """Which layer each SSRC arriving on a simulcast receiver belongs to (index into ``rids``), learnt from
    the rid header extensions; RTX streams are mapped to their layer's SSRC so the receiver unwraps them."""

    def __init__(self, receiver: RTCRtpReceiver, rids: list[str]) -> None:
        self.rids = rids
        self.layer_of: dict[int, int] = {}
        self._ssrc_of_rid: dict[str, int] = {}
        self._rtx_map: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        repeat_nacks(receiver)
        rtp_hooks(receiver).append(self._on_rtp)

    def _on_rtp(self, packet: RtpPacket) -> None:
        extensions = packet.extensions
        if extensions.rtp_stream_id is not None and packet.ssrc not in self.layer_of:
            rid = extensions.rtp_stream_id
            if rid in self.rids:
                self.layer_of[packet.ssrc] = self.rids.index(rid)
                self._ssrc_of_rid[rid] = packet.ssrc
        elif extensions.repaired_rtp_stream_id is not None and packet.ssrc not in self._rtx_map:
            media_ssrc = self._ssrc_of_rid.get(extensions.repaired_rtp_stream_id)
            if media_ssrc is not None:
                self._rtx_map[packet.ssrc] = media_ssrc


def quicken_handshakes(pc: RTCPeerConnection) -> list[HandshakeRepair]:
    """Repair lost ICE checks and DTLS flights fast (``rtc.handshake``): each ICE transport's checks are
    timed, and its DTLS datagrams pass through a ``HandshakeRepair``; its consent checks are RFC 7675's
    (``rtc.consent``), which no busy loop or long path breaks. Call after the transceivers exist,
    before the transport connects. Returns the repairs (their counters say what they did)."""
    repairs = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        ice: Any = dtls.transport
        repair = getattr(ice, "_live_relay_repair", None)
        if repair is None:
            rtt = RoundTrip()
            sample_ice_rtt(ice._connection, rtt)
            def handshaking(dtls: Any = dtls) -> bool:
                return bool(dtls.state in ("new", "connecting"))

            repair = HandshakeRepair(ice._send, ice._recv, handshaking, rtt)
            ice._send, ice._recv = repair.send, repair.receive
            ice._live_relay_repair = repair
            # aioice's consent checks time out on the STUN schedule's first timeout (50 ms now) and close
            # the connection after six: ours allow a long path and a busy loop (rtc.consent).
            keep_consent(ice._connection)
        if repair not in repairs:
            repairs.append(repair)
    return repairs


class SilenceWatch:
    """How long nothing (SRTP or SRTCP) has arrived on a peer connection, read from aiortc's DTLS transports'
    receive counters: call ``quiet_for`` about once a second; a count that moved since the last call is now."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._pc = pc
        self._count = -1
        self._since = time.monotonic()

    def quiet_for(self, now: float) -> float:
        count = sum(t.sender.transport._RTCDtlsTransport__rx_packets  # type: ignore[attr-defined]
                    for t in self._pc.getTransceivers())
        if count != self._count:
            self._count, self._since = count, now
        return now - self._since


def connect_quietly(pc: RTCPeerConnection) -> None:
    """aiortc starts ICE and DTLS in a task nobody awaits, which raises when the connection is closed under
    it (a WHIP client that DELETEs right after it connects, a viewer leaving mid-handshake): asyncio then
    logged "Task exception was never retrieved" with a traceback at ERROR for each. Closed while connecting
    is an outcome, not an error; anything else still raises."""
    connect = pc._RTCPeerConnection__connect  # type: ignore[attr-defined]

    async def guarded() -> None:
        try:
            await connect()
        except (InvalidStateError, ConnectionError):
            if not pc._RTCPeerConnection__isClosed:  # type: ignore[attr-defined]
                raise

    pc._RTCPeerConnection__connect = guarded  # type: ignore[attr-defined]


# aiortc's DTLS offers suites authenticated by ECDSA alone, what its own certificate is. Stacks whose
# certificate is RSA (GStreamer's webrtcbin, as DTLS server when we answer active) then find "no shared
# cipher" and the connection fails: the same suites with RSA authentication are offered after them.
# Where we are the DTLS server our certificate (ECDSA) picks among the first ones, as before.
DTLS_CIPHERS = b":".join((
    b"ECDHE-ECDSA-AES128-GCM-SHA256", b"ECDHE-ECDSA-CHACHA20-POLY1305", b"ECDHE-ECDSA-AES128-SHA",
    b"ECDHE-ECDSA-AES256-SHA", b"ECDHE-RSA-AES128-GCM-SHA256", b"ECDHE-RSA-CHACHA20-POLY1305",
    b"ECDHE-RSA-AES128-SHA", b"ECDHE-RSA-AES256-SHA"))


class _Certificate(RTCCertificate):
    """aiortc's certificate, its DTLS context offering ``DTLS_CIPHERS``."""

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> Any:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(DTLS_CIPHERS)
        return context


def accept_rsa_certificates(pc: RTCPeerConnection) -> None:
    """Let ``pc``'s DTLS connect to peers with an RSA certificate (``DTLS_CIPHERS``): its own certificate,
    same key, same fingerprint."""
    own = pc._RTCPeerConnection__certificates[0]  # type: ignore[attr-defined]
    pc._RTCPeerConnection__certificates = [_Certificate(key=own._key, cert=own._cert)]  # type: ignore[attr-defined]


def one_fingerprint(sdp: str) -> str:
    """``sdp`` with one certificate fingerprint per section, SHA-256 (what browsers, Janus and mediasoup
    send). aiortc lists SHA-256, -384 and -512; libdatachannel (OBS's WHIP output, 0.24) then failed about
    one DTLS handshake in ten with "unknown CA" / "certificate verify failed", in both directions (6 of 60
    WHIP sessions; none of 160 with the one line)."""
    return "\r\n".join(line for line in sdp.split("\r\n")
                        if not line.startswith("a=fingerprint:") or line.startswith("a=fingerprint:sha-256 "))


def answer_leaves(pc: RTCPeerConnection) -> None:
    """The answer SDP is on its way to the offerer now: its first ICE check times the round trip."""
    for connection in ice_connections(pc):
        answer_sent(connection)


def set_stun_retransmission_timeout(seconds: float = 0.05) -> None:
    """aioice retransmits an unanswered STUN check after 500 ms (doubling, 7 tries); libwebrtc pings a
    pair that is not writable yet every 48 ms. Ours: ``seconds``, doubling, 8 tries. A module setting
    of aioice's, so it holds for every peer connection of the process."""
    set_stun_schedule(seconds)


MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class SendParameters:
    """What a subscriber's answer settled for one sender: what forwarded packets must carry."""

    __slots__ = ("abs_send_time_id", "mid", "mid_id", "payload_type", "red_payload_type", "rtx_payload_type",
                 "rtx_ssrc", "ssrc", "transport_cc_id")

    def __init__(self, ssrc: int, rtx_ssrc: int, payload_type: int, rtx_payload_type: int | None,
                 mid: str | None, mid_id: int | None, abs_send_time_id: int | None,
                 red_payload_type: int | None = None, transport_cc_id: int | None = None) -> None:
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.mid = mid
        self.mid_id = mid_id
        self.abs_send_time_id = abs_send_time_id
        self.red_payload_type = red_payload_type  # audio wrapped in RED (RFC 2198), when negotiated
        self.transport_cc_id = transport_cc_id  # the transport-wide sequence number's id (send-side estimation)


def send_parameters(transceiver: RTCRtpTransceiver) -> SendParameters | None:
    """The sender's SSRCs, payload types and header extension ids, once the answer is set."""
    codecs = list(transceiver._codecs)
    media = [c for c in codecs if not c.mimeType.lower().endswith(("/rtx", "/red"))]
    if not media:
        return None
    rtx = next((c.payloadType for c in codecs if c.mimeType.lower().endswith("/rtx")
                and c.parameters.get("apt") == media[0].payloadType), None)
    red = next((c.payloadType for c in codecs if c.mimeType.lower() == "audio/red"), None)
    ids = {ext.uri: ext.id for ext in transceiver._headerExtensions}
    sender = transceiver.sender
    return SendParameters(sender._ssrc, sender._rtx_ssrc, media[0].payloadType or 0, rtx, transceiver.mid,
                          ids.get(MID_URI), ids.get(ABS_SEND_TIME_URI), red, ids.get(TWCC_URI))


class PacketOutput:
    """Writes finished RTP packets to one subscriber: SRTP protect and a non-blocking sendto on the ICE
    pair's socket, synchronously, with no task and no await. Binds itself on first use after DTLS is up.

    ``write`` returns False (and sends nothing) while the transport is not connected yet or when the
    socket's own buffer holds more than ``max_buffered`` bytes: a subscriber that cannot take more
    loses packets here rather than growing memory or delaying anyone else."""

    def __init__(self, sender: RTCRtpSender, max_buffered: int = 256 * 1024) -> None:
        self._dtls = sender.transport
        self._max_buffered = max_buffered
        self._protect: Callable[[bytes], bytes] | None = None
        self._nominated: dict[int, Any] = {}
        self._pair: Any = None
        self._socket: Any = None
        self._address: Any = None
        self.packets = 0
        self.octets = 0

    def _bind(self) -> bool:
        dtls = self._dtls
        if dtls.state != "connected" or dtls._tx_srtp is None:
            return False
        self._protect = dtls._tx_srtp.protect
        self._nominated = dtls.transport._connection._nominated
        return True

    @property
    def ready(self) -> bool:
        return self._protect is not None or self._bind()

    def write(self, data: bytes) -> bool:
        if self._protect is None and not self._bind():
            return False
        pair = self._nominated.get(1)
        if pair is not self._pair:  # (re)nominated: follow ICE to the pair it chose
            if pair is None:
                return False
            self._pair, self._socket, self._address = pair, pair.protocol.transport, pair.remote_addr
        socket = self._socket
        if socket.is_closing() or socket.get_write_buffer_size() > self._max_buffered:
            return False
        try:
            socket.sendto(self._protect(data), self._address)  # type: ignore[misc]
        except (pylibsrtp.Error, OSError):
            return False  # this subscriber's session or socket refused it; the others are not concerned
        self.packets += 1
        self.octets += len(data)
        return True

    def close(self) -> None:
        self._protect = None
        self._nominated = {}
        self._pair = self._socket = None


def on_nack(sender: RTCRtpSender, callback: Callable[[int], object]) -> None:
    """Answer the subscriber's NACKs (one call per lost sequence number) with ``callback`` instead of the
    sender's history, which holds nothing when the relay forwards packets itself."""

    async def retransmit(sequence_number: int) -> None:
        callback(sequence_number)

    sender._retransmit = retransmit  # type: ignore[method-assign]


class LinkReport:
    """What a subscriber's receiver said of its link in its last RTCP: loss since the previous report (0-1),
    cumulative packets lost, interarrival jitter (in the codec's clock units), the round-trip time aiortc
    worked out from it (seconds, or None), and the receiver's own bandwidth estimate (REMB, bit/s, or None).
    ``is_estimate`` says which of the two the current call is about: a REMB (True) or a receiver report."""

    __slots__ = ("fraction_lost", "is_estimate", "jitter", "packets_lost", "remb_bps", "rtt")

    def __init__(self) -> None:
        self.is_estimate = False
        self.fraction_lost = 0.0
        self.packets_lost = 0
        self.jitter = 0
        self.rtt: float | None = None
        self.remb_bps: int | None = None


def on_link_report(sender: RTCRtpSender, callback: Callable[[LinkReport], None]) -> None:
    """Call ``callback`` after each receiver report or REMB the subscriber sends about ``sender``'s stream
    (aiortc's own handling, RTT included, runs first)."""
    handle = sender._handle_rtcp_packet
    report = LinkReport()

    async def handle_rtcp(packet: Any) -> None:
        await handle(packet)
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            mine = [r for r in packet.reports if r.ssrc == sender._ssrc]
            if not mine:
                return
            report.fraction_lost = mine[0].fraction_lost / 256
            report.packets_lost = mine[0].packets_lost
            report.jitter = mine[0].jitter
            report.rtt = sender._RTCRtpSender__rtt  # type: ignore[attr-defined]
            report.is_estimate = False
            callback(report)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if sender._ssrc in ssrcs:
                report.remb_bps = bitrate
                report.is_estimate = True
                callback(report)

    sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]


def report_sent(sender: RTCRtpSender, ntp_timestamp: int, rtp_timestamp: int, packets: int, octets: int) -> None:
    """Give the sender's RTCP task what its next sender report says: this NTP time matched this RTP
    timestamp, after this many packets and payload octets."""
    sender._RTCRtpSender__ntp_timestamp = ntp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]
