"""Each hook of ``rtc.adapter`` on its own, between two real aiortc peer connections on loopback (no
server): an aiortc upgrade that moves a private name fails here first, by name.

The jitter buffer and codec payload facts have their own table tests in tests/test_relay_units.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import RtcpSrPacket, RtpPacket

from clients.sources import CounterVideoTrack
from rtc import adapter
from rtc.codecs import is_keyframe
from rtc.ratecount import WindowRateCounter
from rtc.udpmux import UdpMux

LOOPBACK = ["127.0.0.1"]


def _vp8_only() -> list[Any]:
    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    yield sender, receiver
    await sender.close()
    await receiver.close()


async def _connect(sender: RTCPeerConnection, receiver: RTCPeerConnection, track: Any = None) -> str:
    """Offer from ``sender`` (a VP8 video track: ``track`` or a test pattern), answer from ``receiver``;
    both gather on loopback only. Returns the answer SDP."""
    transceiver = sender.addTransceiver(track or CounterVideoTrack(160, 120), direction="sendonly")
    transceiver.setCodecPreferences(_vp8_only())
    adapter.restrict_host_addresses(sender, LOOPBACK)
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    adapter.restrict_host_addresses(receiver, LOOPBACK)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return receiver.localDescription.sdp


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_restrict_host_addresses_offers_only_the_given_addresses(pair):
    sender, receiver = pair
    answer = await _connect(sender, receiver)
    assert _candidate_addresses(answer) == {"127.0.0.1"}  # aioice alone leaves loopback out
    assert _candidate_addresses(sender.localDescription.sdp) == {"127.0.0.1"}


async def test_tap_receiver_hands_over_encoded_frames_and_never_decodes(pair):
    sender, receiver = pair
    frames: list[tuple[str, bytes, int]] = []
    got_enough = asyncio.Event()

    @receiver.on("track")
    def on_track(track: Any) -> None:
        tapped = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)

        def on_frame(codec: Any, frame: Any, ssrc: int) -> None:
            frames.append((codec.name, frame.data, ssrc))
            if len(frames) >= 10:
                got_enough.set()

        adapter.tap_receiver(tapped, track.kind, on_frame)

    await _connect(sender, receiver)
    async with asyncio.timeout(20):
        await got_enough.wait()
    assert {name for name, _, _ in frames} == {"VP8"}
    assert is_keyframe("VP8", frames[0][1])  # the first complete frame the tap releases starts a chain
    assert len({ssrc for _, _, ssrc in frames}) == 1
    video = next(t.receiver for t in receiver.getTransceivers() if t.kind == "video")
    assert isinstance(video._RTCRtpReceiver__decoder_queue, adapter.FrameTap)  # type: ignore[attr-defined]


async def test_send_pli_reaches_the_sender_and_on_keyframe_request_catches_it(pair):
    sender, receiver = pair
    ssrcs: list[int] = []
    tapped: list[Any] = []
    requested = asyncio.Event()

    @receiver.on("track")
    def on_track(track: Any) -> None:
        rtp_receiver = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
        tapped.append(rtp_receiver)
        adapter.tap_receiver(rtp_receiver, track.kind, lambda codec, frame, ssrc: ssrcs.append(ssrc))

    await _connect(sender, receiver)
    rtp_sender = sender.getTransceivers()[0].sender
    adapter.on_keyframe_request(rtp_sender, requested.set)
    async with asyncio.timeout(20):
        while not ssrcs:  # noqa: ASYNC110 - frames arrive through a plain callback
            await asyncio.sleep(0.02)
        await adapter.send_pli(tapped[0], ssrcs[0])
        await requested.wait()


async def test_negotiated_and_narrowed_codecs(pair):
    sender, receiver = pair
    sender.addTransceiver(CounterVideoTrack(160, 120), direction="sendonly")  # offers every video codec
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(RTCSessionDescription(sdp=sender.localDescription.sdp, type="offer"))
    transceiver = receiver.getTransceivers()[0]
    offered = {c.mimeType.lower() for c in adapter.negotiated_codecs(transceiver)}
    assert {"video/vp8", "video/h264"} <= offered
    # The relay learns which codec the answer must carry only after setRemoteDescription: narrow to it.
    transceiver.setCodecPreferences(_vp8_only())
    narrowed = adapter.narrow_answer_codecs(transceiver)
    assert {c.mimeType.lower() for c in narrowed} == {"video/vp8", "video/rtx"}
    transceiver.direction = "recvonly"
    await receiver.setLocalDescription(await receiver.createAnswer())
    rtpmaps = [line for line in receiver.localDescription.sdp.splitlines() if line.startswith("a=rtpmap:")]
    assert rtpmaps and all("VP8" in line or "rtx" in line for line in rtpmaps)


class SilentVideoTrack(MediaStreamTrack):
    """A sender's track that never yields (as a relay's down-track): every packet comes from us."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def test_packet_output_writes_our_packets_and_the_sender_keeps_rtcp(pair):
    """Packets written with PacketOutput reach the far receiver (its packet tap sees them as sent); its
    NACK reaches on_nack; the sender's report carries what report_sent gave it."""
    sender, receiver = pair
    seen: list[RtpPacket] = []
    reports: list[Any] = []
    nacked: list[int] = []
    tapped: list[Any] = []

    @receiver.on("track")
    def on_track(track: Any) -> None:
        rtp_receiver = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
        tapped.append(rtp_receiver)
        adapter.tap_receiver(rtp_receiver, track.kind, lambda codec, frame, ssrc: None,
                             lambda codec, packet: seen.append(packet))

    await _connect(sender, receiver, SilentVideoTrack())
    transceiver = sender.getTransceivers()[0]
    params = adapter.send_parameters(transceiver)
    assert params is not None and params.ssrc == transceiver.sender._ssrc
    assert params.rtx_payload_type is not None and params.mid == transceiver.mid
    output = adapter.PacketOutput(transceiver.sender)
    adapter.on_nack(transceiver.sender, nacked.append)
    handle_rtcp = tapped[0]._handle_rtcp_packet

    async def watch_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            reports.append(packet.sender_info)
        await handle_rtcp(packet)

    tapped[0]._handle_rtcp_packet = watch_rtcp
    async with asyncio.timeout(20):
        while not output.write(_rtp(params, 1000, b"\x90\x80\x01\x10\x00")):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # until ICE and DTLS are up
        for seq in (1001, 1003):  # 1002 "lost"
            assert output.write(_rtp(params, seq, b"\x90\x80\x02\x11\x00"))
        while len(seen) < 3:  # noqa: ASYNC110 - packets arrive through a plain callback
            await asyncio.sleep(0.02)
        adapter.report_sent(transceiver.sender, 0x1234_5678_0000_0000, 4242, 3, 15)
        await tapped[0]._send_rtcp_nack(params.ssrc, [1002])
        while not nacked or not reports:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert [p.sequence_number for p in seen] == [1000, 1001, 1003]
    assert seen[0].payload == b"\x90\x80\x01\x10\x00" and seen[0].payload_type == params.payload_type
    assert set(nacked) == {1002}  # the receiver asked by itself too: it saw the gap
    assert (reports[-1].rtp_timestamp, reports[-1].packet_count, reports[-1].octet_count) == (4242, 3, 15)
    assert output.packets == 3


def _rtp(params: adapter.SendParameters, seq: int, payload: bytes) -> bytes:
    return bytes([0x80, 0x80 | params.payload_type]) + seq.to_bytes(2, "big") + (seq * 3000).to_bytes(4, "big") \
        + params.ssrc.to_bytes(4, "big") + payload


def test_simulcast_rids_are_read_from_the_offer_and_answered_in_its_section():
    offer = "\r\n".join([
        "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0", "a=rid:x send",
        "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:1", "a=rid:q send", "a=rid:h send", "a=rid:f send",
        "a=rid:z recv", "a=simulcast:send q;h,h2;~f", ""])
    # In the offer's order, first of each alternative, paused (~) ones and rids never declared left out.
    assert adapter.offered_rids(offer, "1") == ["q", "h"]
    assert adapter.offered_rids(offer, "0") == []  # no a=simulcast in the audio section
    answer = "\r\n".join(["v=0", "m=audio 9 X 111", "a=mid:0", "m=video 9 X 96", "a=mid:1", "a=sendrecv", ""])
    lines = adapter.answer_simulcast(answer, "1", ["q", "h"]).split("\r\n")
    assert lines[lines.index("a=mid:1") + 1:lines.index("a=mid:1") + 4] == ["a=rid:q recv", "a=rid:h recv",
                                                                             "a=simulcast:recv q;h"]
    assert lines.index("a=simulcast:recv q;h") > lines.index("m=video 9 X 96")


def with_vp9(offer: str, first: bool) -> str:
    """An aiortc offer's video section with VP9 (profile 0, and its RTX) added, first or last, as a
    browser lists it."""
    out = []
    for line in offer.split("\r\n"):
        if line.startswith("m=video "):
            head, formats = line.split(" ", 3)[:3], line.split(" ", 3)[3]
            line = " ".join([*head, f"120 {formats} 121" if first else f"{formats} 120 121"])
        out.append(line)
        if line.startswith("a=mid:") and any(x.startswith("m=video") for x in out):
            out += ["a=rtpmap:120 VP9/90000", "a=rtcp-fb:120 nack", "a=rtcp-fb:120 nack pli",
                    "a=rtcp-fb:120 transport-cc", "a=fmtp:120 profile-id=0", "a=rtpmap:121 rtx/90000",
                    "a=fmtp:121 apt=120"]
    return "\r\n".join(out)


@pytest.mark.parametrize(("first", "only", "first_only", "answered"), [
    (True, False, True, ["VP9", "rtx", "VP8"]),  # a publisher that prefers VP9 sends it
    (False, False, True, ["VP8"]),  # one that lists it last keeps what aiortc chose
    (False, True, False, ["VP9", "rtx"]),  # a subscriber of a VP9 publisher gets VP9 alone
])
async def test_vp9_is_answered_as_the_offer_lists_it(first, only, first_only, answered):
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    offerer.addTransceiver("video", direction="recvonly")
    await offerer.setLocalDescription(await offerer.createOffer())
    offer = with_vp9(offerer.localDescription.sdp, first)
    await answerer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    [transceiver] = answerer.getTransceivers()
    assert adapter.accept_offered_codec(transceiver, offer, "video/VP9", only=only, first_only=first_only) is \
        (answered[0] == "VP9")
    names = [c.mimeType.split("/")[1] for c in adapter.negotiated_codecs(transceiver)]
    assert names[:len(answered)] == answered
    if answered[0] == "VP9":
        assert transceiver._codecs[0].payloadType == 120 and transceiver._codecs[1].parameters == {"apt": 120}
        answer = await answerer.createAnswer()
        assert "a=rtpmap:120 VP9/90000" in answer.sdp
    await offerer.close()
    await answerer.close()


def test_a_connection_offers_rsa_authenticated_dtls_suites_with_its_own_certificate():
    # GStreamer's webrtcbin presents an RSA certificate: with aiortc's ECDSA-only suites its DTLS server found
    # "no shared cipher" (the interop test connects webrtcbin for real).
    from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80
    from OpenSSL import SSL

    pc = RTCPeerConnection()
    own = pc._RTCPeerConnection__certificates[0]
    before = [f.value for f in own.getFingerprints()]
    adapter.accept_rsa_certificates(pc)
    now = pc._RTCPeerConnection__certificates[0]
    assert [f.value for f in now.getFingerprints()] == before  # the same certificate: the SDP's fingerprint holds
    offered = [c for c in SSL.Connection(now._create_ssl_context([SRTP_AES128_CM_SHA1_80])).get_cipher_list()
               if c.startswith("ECDHE")]  # (the TLS 1.3 names OpenSSL lists too play no part in DTLS 1.2)
    assert "ECDHE-RSA-AES128-GCM-SHA256" in offered and offered[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


ICE_CLOSED_AS_IT_STARTS = """
import asyncio
from aiortc import RTCIceGatherer, RTCIceParameters, RTCIceTransport
from rtc import adapter

async def main():
    adapter.end_ice_monitor_on_close()
    gatherer = RTCIceGatherer()
    await gatherer.gather()
    transport = RTCIceTransport(gatherer)
    await transport._connection.close()  # closed while nobody waits for its event
    await transport.start(RTCIceParameters(usernameFragment="abcd", password="p" * 22))
    await asyncio.wait_for(transport._RTCIceTransport__monitor_task, 5)
    print("monitor ended:", transport.state)

asyncio.run(main())
"""


def test_an_ice_transport_closed_as_it_starts_does_not_spin_forever() -> None:
    """aiortc's ICE monitor took aioice's None (closed while nobody waited) for an event and looped at full
    speed, never yielding: the whole process hung at 100% CPU (found in a browser test's server). In a
    child process, so that the old behaviour fails here by its timeout instead of hanging the suite."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ICE_CLOSED_AS_IT_STARTS], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and "monitor ended: failed" in done.stdout, done.stderr[-2000:]


async def test_receive_synchronously_takes_a_muxed_publishers_srtp_where_it_arrives(pair):
    """A publisher's SRTP handled in the mux's datagram callback: the tapped receiver still gets whole
    frames (a keyframe first), its statistics reach the sender as receiver reports, its bitrate estimate
    runs (on the cheaper counter), and nothing is dropped; a connection off the mux keeps aiortc's path."""
    sender, receiver = pair
    frames: list[bytes] = []
    got_enough = asyncio.Event()

    @receiver.on("track")
    def on_track(track: Any) -> None:
        tapped = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)

        def on_frame(codec: Any, frame: Any, ssrc: int) -> None:
            frames.append(frame.data)
            if len(frames) >= 30:
                got_enough.set()

        adapter.tap_receiver(tapped, track.kind, on_frame)

    mux = await UdpMux.open(LOOPBACK, 0)
    try:
        transceiver = sender.addTransceiver(CounterVideoTrack(160, 120), direction="sendonly")
        transceiver.setCodecPreferences(_vp8_only())
        adapter.restrict_host_addresses(sender, LOOPBACK)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        for connection in adapter.ice_connections(receiver):
            mux.attach(connection)
        await receiver.setLocalDescription(await receiver.createAnswer())
        path = adapter.receive_synchronously(receiver)
        assert path is not None
        await sender.setRemoteDescription(receiver.localDescription)
        async with asyncio.timeout(20):
            await got_enough.wait()
        assert is_keyframe("VP8", frames[0])
        assert path.packets >= 30 and path.dropped == 0 and path.failed == 0
        video = next(t.receiver for t in receiver.getTransceivers() if t.kind == "video")
        estimator = video._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        assert isinstance(estimator.incoming_bitrate, WindowRateCounter)
        inbound = [s for s in (await receiver.getStats()).values() if s.type == "inbound-rtp"]
        assert inbound and inbound[0].packetsReceived >= path.packets - 5
        async with asyncio.timeout(10):  # our receiver reports (from the statistics the path kept) reach it
            while not [s for s in (await sender.getStats()).values()  # noqa: ASYNC110 - aiortc's statistics have no event
                       if s.type == "remote-inbound-rtp" and s.packetsLost is not None]:
                await asyncio.sleep(0.2)
    finally:
        await receiver.close()  # before the mux's socket goes
        mux.close()
    off_mux_a, off_mux_b = RTCPeerConnection(), RTCPeerConnection()
    try:
        await _connect(off_mux_a, off_mux_b)
        assert adapter.receive_synchronously(off_mux_b) is None
    finally:
        await off_mux_a.close()
        await off_mux_b.close()
