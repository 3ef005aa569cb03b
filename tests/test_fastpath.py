"""SRTP straight from the socket to the receiver (rtc/fastpath.py): the eager runner, and a real publisher
whose packets take the direct way once its handshake is done."""

from __future__ import annotations

import asyncio
import logging

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack
from protocol import Role
from rtc import adapter
from rtc.fastpath import run_eagerly
from tests.test_sfu import read_counters


async def test_a_handler_that_never_suspends_runs_to_its_end_at_once():
    done = []

    async def handler() -> None:
        done.append(1)

    tasks: set[asyncio.Task[None]] = set()
    assert run_eagerly(handler(), tasks) is True
    assert done == [1] and not tasks


async def test_a_handler_that_suspends_is_finished_by_a_task():
    gate = asyncio.get_running_loop().create_future()
    done = []

    async def handler() -> None:
        done.append("started")
        done.append(await gate)
        await asyncio.sleep(0)  # a bare yield too
        done.append("ended")

    tasks: set[asyncio.Task[None]] = set()
    assert run_eagerly(handler(), tasks) is False
    assert done == ["started"] and len(tasks) == 1
    gate.set_result("value")
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert done == ["started", "value", "ended"] and not tasks


async def test_a_handler_that_fails_is_logged_and_nothing_else(caplog):
    async def handler() -> None:
        raise ValueError("malformed")

    with caplog.at_level(logging.ERROR, logger="rtc.fastpath"):
        assert run_eagerly(handler(), set()) is True
    assert "a packet handler failed" in caplog.text


async def test_a_publishers_packets_go_straight_to_the_relay_and_on_to_viewers(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show") as viewer:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
        subscription = await MediaSession.subscribe(viewer, kinds=("video",))
        counters = await read_counters(subscription, 30)
        assert counters == sorted(counters) and len(set(counters)) >= 25  # in order, whole
        relay_side = server.relay.media.router.peers[publisher.media_id].pc
        direct = sum(c._live_relay_direct_packets for c in adapter.ice_connections(relay_side))
        assert direct >= 30  # its media went the direct way, not through aiortc's queue
        await subscription.close()
        await publisher.close()
