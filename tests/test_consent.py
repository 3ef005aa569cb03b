"""Consent freshness (``rtc.consent``): a connection over a path longer than the STUN schedule's first
timeout stays up (aioice's own checks close it), and one whose peer stops answering is closed. Two real
aiortc peer connections through a ``SlowPath`` of the test's own on loopback; the consent interval and
expiry are shortened for the test (the decision is the same)."""

from __future__ import annotations

import asyncio

import aioice.ice
import aioice.stun
import pytest
from aiortc import RTCPeerConnection

from rtc import consent
from rtc.consent import consent_expired
from tests.lossy_forwarder import SlowPath
from tests.test_handshake import _connect_through, _wait


@pytest.mark.parametrize(("last", "now", "expired"), [(0.0, 29.9, False), (0.0, 30.0, True), (10.0, 12.0, False)])
def test_consent_expires_thirty_seconds_after_the_last_answer(last, now, expired):
    assert consent_expired(last, now) is expired


@pytest.fixture
def quick_consent(monkeypatch):
    monkeypatch.setattr(consent, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(consent, "CONSENT_EXPIRY", 2.0)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)  # the schedule the relay and its clients run
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 8)


async def _states_after(path: SlowPath, seconds: float, cut_after: float | None = None) -> list[str]:
    received: list = []
    publisher, receiver = await _connect_through(path, received)
    try:
        await _wait(lambda: receiver.connectionState == "connected" and publisher.connectionState == "connected")
        if cut_after is not None:
            await asyncio.sleep(cut_after)
            path.drop = lambda data, from_client: True
        await asyncio.sleep(seconds)
        return [publisher.connectionState, receiver.connectionState]
    finally:
        await publisher.close()
        await receiver.close()
        path.close()


async def test_a_long_path_keeps_its_connections(quick_consent):
    """200 ms round trip, four times the first STUN timeout: every check needs a retransmission's time."""
    path = await SlowPath.start(one_way=0.1)
    assert await _states_after(path, 3.0) == ["connected", "connected"]


async def test_aioices_own_checks_would_close_it(quick_consent, monkeypatch):
    """The control: the same path with aioice's consent checks (what the relay ran before) loses the
    connection, so the test above can fail."""
    import rtc.adapter

    monkeypatch.setattr(rtc.adapter, "keep_consent", lambda connection: None)
    path = await SlowPath.start(one_way=0.1)
    states = await _states_after(path, 3.0)
    assert "connected" not in states, states


async def test_a_peer_that_stops_answering_loses_consent(quick_consent):
    path = await SlowPath.start(one_way=0.01)
    states = await _states_after(path, 4.0, cut_after=0.5)
    assert "connected" not in states, states


async def test_keep_consent_replaces_aioices_checks():
    from rtc import adapter

    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("video")
        adapter.quicken_handshakes(pc)
        connection = adapter.ice_connections(pc)[0]
        assert connection.query_consent.__qualname__.startswith("keep_consent")
    finally:
        await pc.close()
