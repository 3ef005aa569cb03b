"""The set-up repairs of ``rtc.handshake``: their decisions as tables, then each repair between two real
aiortc peer connections whose path (a ``SlowPath`` of the test's own on loopback) loses the one datagram
the repair is for. What is asserted is what happened (counters, which packet arrived), never how long
it took."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aioice.stun
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender

from clients.sources import CounterVideoTrack
from rtc import adapter
from rtc.codecs import packet_starts_keyframe
from rtc.handshake import DEFAULT_RESEND, flight_key, resend_delay, set_stun_schedule
from tests.lossy_forwarder import SlowPath, route_through, server_port_in


@pytest.mark.parametrize(("rtt", "attempt", "expected"), [
    (None, 0, DEFAULT_RESEND),  # no round trip known yet
    (None, 1, 2 * DEFAULT_RESEND),  # doubling
    (0.1, 0, 0.125),  # a round trip and 25 ms
    (0.1, 2, 0.5),
    (0.001, 0, 0.05),  # loopback: not below 50 ms
    (2.0, 0, 1.0),  # a satellite link: not above 1 s
])
def test_resend_delay(rtt, attempt, expected):
    assert resend_delay(rtt, attempt) == pytest.approx(expected)


def _record(content_type: int, epoch: int, record_seq: int, body: bytes) -> bytes:
    return (bytes((content_type, 0xFE, 0xFD)) + epoch.to_bytes(2, "big") + record_seq.to_bytes(6, "big")
            + len(body).to_bytes(2, "big") + body)


def _handshake(msg_type: int, message_seq: int, offset: int = 0, fragment: bytes = b"x" * 20) -> bytes:
    return (bytes((msg_type,)) + (len(fragment)).to_bytes(3, "big") + message_seq.to_bytes(2, "big")
            + offset.to_bytes(3, "big") + len(fragment).to_bytes(3, "big") + fragment)


CLIENT_HELLO = _record(22, 0, 0, _handshake(1, 0))
CLIENT_HELLO_AGAIN = _record(22, 0, 1, _handshake(1, 0))  # OpenSSL's retransmission: a new record number
FINISHED_FLIGHT = _record(20, 0, 2, b"\x01") + _record(22, 1, 0, b"e" * 40)
FINISHED_FLIGHT_AGAIN = _record(20, 0, 3, b"\x01") + _record(22, 1, 1, b"f" * 40)


@pytest.mark.parametrize(("a", "b", "same"), [
    (CLIENT_HELLO, CLIENT_HELLO_AGAIN, True),  # a retransmission is the same flight
    (CLIENT_HELLO, _record(22, 0, 1, _handshake(1, 1)), False),  # the next message is not
    (CLIENT_HELLO, _record(22, 0, 0, _handshake(1, 0, offset=20)), False),  # another fragment is not
    (FINISHED_FLIGHT, FINISHED_FLIGHT_AGAIN, True),  # encrypted: the same lengths
    (FINISHED_FLIGHT, CLIENT_HELLO, False),
    (CLIENT_HELLO[:10], b"", True),  # records cut short say nothing
])
def test_flight_key(a, b, same):
    assert (flight_key(a) == flight_key(b)) is same


def test_stun_schedule_is_aioices():
    before = aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX
    try:
        set_stun_schedule(0.05, 8)
        assert (aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX) == (0.05, 8)
    finally:
        aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX = before


def _has_change_cipher_spec(data: bytes) -> bool:
    at = 0
    while at + 13 <= len(data):
        if data[at] == 20:
            return True
        at += 13 + int.from_bytes(data[at + 11:at + 13], "big")
    return False


async def _connect_through(path: SlowPath, received: list[Any]) -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """A publisher (offers, DTLS server, as our clients are) and a receiver (answers, DTLS client, as the
    relay is), every datagram between them through ``path``. The receiver's packets go to ``received``."""
    publisher, receiver = RTCPeerConnection(), RTCPeerConnection()
    transceiver = publisher.addTransceiver(CounterVideoTrack(160, 120), direction="sendonly")
    transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                     if c.mimeType.lower() in ("video/vp8", "video/rtx")])
    adapter.restrict_host_addresses(publisher, ["127.0.0.1"])
    adapter.quicken_handshakes(publisher)
    await publisher.setLocalDescription(await publisher.createOffer())
    path.client = ("127.0.0.1", server_port_in(publisher.localDescription.sdp))

    @receiver.on("track")
    def on_track(track: Any) -> None:
        rtp_receiver = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
        adapter.tap_receiver(rtp_receiver, "video", lambda *frame: None,
                             lambda codec, packet: received.append((codec.name, packet)))

    offer = type(publisher.localDescription)(sdp=route_through(publisher.localDescription.sdp, path.port),
                                             type="offer")
    await receiver.setRemoteDescription(offer)
    adapter.restrict_host_addresses(receiver, ["127.0.0.1"])
    adapter.quicken_handshakes(receiver)
    await receiver.setLocalDescription(await receiver.createAnswer())
    path.server = ("127.0.0.1", server_port_in(receiver.localDescription.sdp))
    answer = type(receiver.localDescription)(sdp=route_through(receiver.localDescription.sdp, path.port),
                                             type="answer")
    await publisher.setRemoteDescription(answer)
    return publisher, receiver


def drop_once(matches: Any) -> Any:
    """A ``SlowPath`` drop rule that drops the first datagram ``matches(data, from_client)`` picks, once;
    its ``dropped`` attribute says whether it did."""

    def drop(data: bytes, from_client: bool) -> bool:
        if not drop.dropped and matches(data, from_client):  # type: ignore[attr-defined]
            drop.dropped = True  # type: ignore[attr-defined]
            return True
        return False

    drop.dropped = False  # type: ignore[attr-defined]
    return drop


@contextlib.asynccontextmanager
async def connected_through(path: SlowPath) -> Any:
    """(publisher, receiver, the receiver's packets) connected through ``path``; all closed after."""
    received: list[Any] = []
    publisher, receiver = await _connect_through(path, received)
    try:
        yield publisher, receiver, received
    finally:
        await publisher.close()
        await receiver.close()
        path.close()


async def _wait(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - aiortc's own states, no event to wait on
            await asyncio.sleep(0.01)


async def test_a_lost_final_flight_is_repaired_and_the_media_that_overtook_it_is_kept():
    """The publisher's last DTLS flight (ChangeCipherSpec + Finished) is lost once: the publisher is done
    and sends its first keyframe, which reaches the receiver still handshaking. The receiver keeps that
    SRTP, sends its own flight again at once (a reaction, not a timer), the publisher answers the repeat
    with its last flight, and the receiver's first packet is the publisher's first keyframe."""
    drop = drop_once(lambda data, from_client: from_client and _has_change_cipher_spec(data))
    async with connected_through(await SlowPath.start(one_way=0.02, drop=drop)) as (publisher, receiver, received):
        await _wait(lambda: receiver.connectionState == "connected" and len(received) > 3)
        assert drop.dropped
        publisher_repair, = adapter.quicken_handshakes(publisher)
        receiver_repair, = adapter.quicken_handshakes(receiver)
        assert receiver_repair.early_srtp >= 1  # media came before the handshake was done, and was kept
        assert receiver_repair.resends_reaction >= 1  # our flight again because media showed the peer done
        assert publisher_repair.resends_reaction >= 1  # it answered the repeat with its last flight
        codec, first = received[0]
        # The first packet the receiver handed on is where the publisher began: its first keyframe.
        assert packet_starts_keyframe(codec, first.payload, True)


async def test_a_lost_first_flight_is_sent_again_on_the_timer_and_checks_time_the_round_trip():
    """The receiver's ClientHello is lost once: nothing can react to that, so its timer sends it again
    (after a round trip and 25 ms, which the ICE checks measured: at least the path's 40 ms)."""
    drop = drop_once(lambda data, from_client: not from_client and flight_key(data)[:1] != ()
                     and flight_key(data)[0][:3] == (22, 0, 1))
    async with connected_through(await SlowPath.start(one_way=0.02, drop=drop)) as (publisher, receiver, _):
        await _wait(lambda: receiver.connectionState == "connected" and publisher.connectionState == "connected")
        assert drop.dropped
        receiver_repair, = adapter.quicken_handshakes(receiver)
        publisher_repair, = adapter.quicken_handshakes(publisher)
        assert receiver_repair.resends_timer >= 1
        assert publisher_repair.rtt.seconds is not None and publisher_repair.rtt.seconds >= 0.04
