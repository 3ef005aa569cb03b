"""Every aiortc (and aioice) private name the relay depends on, in one place.

Written against aiortc 1.16.0 and aioice 0.13.0 (pyproject pins aiortc to >=1.16,<1.17); the tests in
``tests/test_rtc_adapter.py`` exercise each hook on its own, so an aiortc upgrade that moves one of
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

from rtc.codecs import packet_starts_frame
from rtc.jitter import MarkerJitterBuffer

AIORTC_VERSION = "1.16.0"

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
