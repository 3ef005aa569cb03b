"""A node that holds under overload: the saturation decision as a table, then a real server whose event
loop is made to run late (CPU-bound work on its loop, standing in for the hundreds of subscribers that do
it in production) refusing new subscriptions with a retry hint, over the WebSocket and WHEP, while the
viewer it already carries keeps its stream; and taking them again once the load is gone."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from clients.client import LiveClient, ServerError
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, read_frame
from protocol import ErrorCode, Role
from signaling.config import ServerConfig
from signaling.overload import LagGauge
from tests.conftest import SECRET


@pytest.mark.parametrize(("samples", "saturated", "changes"), [
    ([0.01] * 20, False, 0),  # a busy but keeping-up loop
    ([0.3] * 20, True, 1),  # far behind: saturated once
    ([0.3] * 20 + [0.06] * 5, True, 1),  # back to 60 ms: still over half of 100 ms, stays saturated (no flapping)
    ([0.3] * 20 + [0.0] * 30, False, 2),  # back to nothing: recovered
    ([0.5, 0.0, 0.0, 0.0, 0.0, 0.0], False, 0),  # one long pause is not saturation (smoothed)
])
def test_lag_gauge(samples, saturated, changes):
    gauge = LagGauge(high=0.1)
    seen = sum(gauge.observe(s) for s in samples)
    assert gauge.saturated is saturated and seen == changes


def test_a_gauge_with_no_threshold_never_saturates():
    gauge = LagGauge(high=0.0)
    assert not any(gauge.observe(5.0) for _ in range(50))
    assert gauge.retry_after_ms() == 1000


async def busy_loop(seconds: float) -> None:
    """CPU-bound work on the event loop (80 ms at a time): the loop runs every timer late."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.08)  # noqa: ASYNC251 - blocking on purpose: this is the load
        await asyncio.sleep(0)


async def test_a_saturated_node_refuses_new_subscribers_and_keeps_its_viewers(start_server):
    base = ServerConfig(secret=SECRET)
    server = await start_server(rooms=("show",), limits=dataclasses.replace(base.limits, overload_lag_ms=50))
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show") as early, LiveClient(server.ws_url, "show") as late:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
        kept = await MediaSession.subscribe(early, kinds=("video",))
        track = await kept.wait_track("video")
        before = read_frame(await asyncio.wait_for(track.recv(), 10))[0]
        load = asyncio.create_task(busy_loop(3.0))
        try:
            async with asyncio.timeout(10):
                while not server.relay.load.saturated:  # noqa: ASYNC110 - the gauge is sampled on a timer
                    await asyncio.sleep(0.05)
            with pytest.raises(ServerError) as refused:
                await MediaSession.subscribe(late, kinds=("video",))
            assert refused.value.code is ErrorCode.OVERLOADED
            assert refused.value.frame["retry_after_ms"] >= 1000
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with aiohttp.ClientSession() as http:
                response = await http.post(f"{server.base}/whep/show", data=pc.localDescription.sdp,
                                           headers={"Content-Type": "application/sdp"})
                assert response.status == 503 and int(response.headers["Retry-After"]) >= 1
                assert (await response.text()).startswith("overloaded:")
            await pc.close()
        finally:
            await load
        # The viewer it carried through all of it still gets the stream, later frames in order.
        after = read_frame(await asyncio.wait_for(track.recv(), 10))[0]
        assert after > before
        async with asyncio.timeout(20):  # recovered (under half the threshold): new subscribers are taken again
            while server.relay.load.saturated:  # noqa: ASYNC110 - the gauge is sampled on a timer
                await asyncio.sleep(0.1)
        fresh = await MediaSession.subscribe(late, kinds=("video",))
        assert read_frame(await asyncio.wait_for((await fresh.wait_track("video")).recv(), 10))[0] > after
        async with aiohttp.ClientSession() as http, http.get(f"{server.base}/healthz") as health:
            assert (await health.json())["saturated"] is False
        for session in (fresh, kept, publisher):
            await session.close()
