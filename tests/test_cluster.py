"""Several nodes sharing rooms through a real redis-server: cross-node delivery, order, resume on another
node, room-wide presence and likes, and a Redis restart in the middle with no product push lost."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from clients.client import ConnectionClosed, LiveClient, ServerError
from protocol import Role
from tests import redis_server
from tests.conftest import assert_one_order, eventually, require_dependency


@pytest.fixture(autouse=True, scope="module")
def _needs_redis() -> None:
    require_dependency(None if redis_server.available() else "redis-server (apt-get install redis-server)")

PRODUCT = {"title": "t", "price": "1.00", "currency": "EUR", "url": "https://x.test/p", "image": "https://x.test/i"}


async def test_comments_cross_nodes_in_one_order_with_the_same_seq(nodes):
    """Senders on both nodes; node A's viewer and node B's viewer see the same events, numbers and order."""
    a, b = nodes
    senders = [LiveClient(n.ws_url, "show", n.token("show", f"s{i}")) for i, n in enumerate((a, b, a, b))]
    await assert_one_order(senders, [LiveClient(n.ws_url, "show") for n in (a, b)], rounds=3)


async def test_a_seat_taken_back_on_one_node_is_refused_on_the_other(nodes):
    from tests.test_hostile import _join_refused, _seat

    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST)) as host:
        fan, cohost_token = await _seat(a, host, "fan")
        async with LiveClient(b.ws_url, "show", cohost_token) as on_b:  # the grant is good room-wide
            assert on_b.joined["role"] == "cohost"
        await host.request({"type": "stage_remove", "user": "fan"})
        await fan.next_event("grant")
        await fan.close()
        code, _ = await _join_refused(b.ws_url, "show", cohost_token)
        assert code == "revoked"


async def test_a_room_opened_on_one_node_exists_on_the_other_at_once(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "pop-up", a.token("pop-up", "host", Role.HOST)) as host:
        async with LiveClient(b.ws_url, "pop-up") as viewer:  # right away: no presence tick in between
            assert viewer.joined["room"] == "pop-up"
            await host.comment("hello from A")
            assert (await viewer.next_event("comment"))["text"] == "hello from A"


async def test_a_client_given_several_nodes_fails_over_and_resumes(nodes):
    a, b = nodes
    async with LiveClient(b.ws_url, "show", b.token("show", "host", Role.HOST)) as host:
        viewer = LiveClient([a.ws_url, b.ws_url], "show", reconnect=True, max_backoff=0.3)
        await viewer.connect()
        await host.comment("before")
        assert (await viewer.next_event("comment"))["text"] == "before"
        await a.shutdown()  # the viewer's node goes away
        await host.comment("while moving")
        assert (await viewer.next_event("comment", timeout=15))["text"] == "while moving"  # resumed on B
        assert viewer.url == b.ws_url and viewer.reconnects == 1
        await viewer.close()


async def test_resume_on_another_node_misses_nothing(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "h", Role.HOST)) as host:
        viewer = LiveClient(a.ws_url, "show")
        await viewer.connect()
        await host.comment("before")
        await viewer.next_event("comment")
        position = (viewer.epoch, viewer.seq)
        await viewer.close()
        for n in range(4):
            await host.comment(f"missed {n}")
        async with aiohttp.ClientSession() as http, http.ws_connect(b.ws_url) as ws:
            await ws.send_json({"type": "join", "room": "show", "resume": {"epoch": position[0], "seq": position[1]}})
            joined = await ws.receive_json()
            assert joined["recovered"] is True and joined["missed"] == 4
            texts = [(await ws.receive_json())["text"] for _ in range(4)]
            assert texts == [f"missed {n}" for n in range(4)]


async def test_presence_likes_and_state_are_room_wide(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "h", Role.HOST)) as host:
        await host.announce("pinned on node A", pinned=True)
        async with LiveClient(a.ws_url, "show") as va, LiveClient(b.ws_url, "show") as vb:
            assert vb.joined["state"]["pinned"]["text"] == "pinned on node A"
            async with asyncio.timeout(15):
                while (await host.next_event("presence"))["viewers"] != 2:
                    pass
            await va.like(3)
            await vb.like(4)
            async with asyncio.timeout(10):
                while (await host.next_event("likes"))["total"] != 7:
                    pass


async def _health(node) -> dict:
    async with aiohttp.ClientSession() as http, http.get(node.base + "/healthz") as r:
        return await r.json()


async def _broker_ok(node, expected: bool) -> bool:
    return (await _health(node))["broker_ok"] is expected


async def test_redis_restart_loses_no_acknowledged_product_push(nodes, redis):
    a, b = nodes
    host = LiveClient(a.ws_url, "show", a.token("show", "h", Role.HOST), reconnect=True)
    viewer = LiveClient(b.ws_url, "show", reconnect=True, queue_size=100_000)
    await host.connect()
    await viewer.connect()
    acked: list[str] = []
    refused = 0

    async def push(product_id: str) -> None:
        nonlocal refused
        try:
            await host.push_product({**PRODUCT, "id": product_id})
            acked.append(product_id)
        except (ServerError, ConnectionClosed, TimeoutError):
            refused += 1  # refused with an error: never acknowledged, so never promised

    try:
        for n in range(3):
            await push(f"before-{n}")
        redis.stop()
        await eventually(lambda: _broker_ok(a, False))
        assert (await _health(a))["status"] == "degraded"
        for n in range(3):
            await push(f"during-{n}")
        assert refused >= 3 and not [p for p in acked if p.startswith("during")]
        redis.start()
        await eventually(lambda: _broker_ok(a, True), timeout=20)
        await eventually(lambda: _broker_ok(b, True), timeout=20)
        for n in range(5):
            for _ in range(20):  # the host may be reconnecting right now: retry until acknowledged
                before = len(acked)
                await push(f"after-{n}")
                if len(acked) > before:
                    break
                await asyncio.sleep(0.2)
        got: set[str] = set()
        try:
            async with asyncio.timeout(20):
                while not set(acked) <= got:
                    event = await viewer.next_event("product", timeout=20)
                    got.add(event["product"]["id"])
        except TimeoutError:
            print("MISSING", set(acked) - got, "GOT", got, "viewer seq", viewer.epoch, viewer.seq)
            raise
        print(f"restart test: acked {len(acked)}, refused {refused}, viewer reconnects {viewer.reconnects}, "
              f"host reconnects {host.reconnects}")
        assert {f"before-{n}" for n in range(3)} | {f"after-{n}" for n in range(5)} <= set(acked)
    finally:
        await host.close()
        await viewer.close()


async def test_viewers_on_an_edge_get_the_origins_video_through_one_upstream_link(nodes):
    """The host publishes on node A (the origin); viewers on node B (an edge) decode its frames by content,
    B pulls the stream from A once for all of them, drops the link when they leave, and learns when the
    host leaves."""
    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack
    from tests.test_sfu import read_counters

    a, b = nodes
    host = LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST))
    await host.connect()
    publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240, start=300_000)])
    viewers = [LiveClient(b.ws_url, "show") for _ in range(2)]
    subscriptions = []
    try:
        for v in viewers:
            await v.connect()
            assert v.joined["state"]["publishers"][0]["publisher"] == publisher.media_id  # room-wide list
            subscriptions.append(await MediaSession.subscribe(v, kinds=("video",)))
        for s in subscriptions:
            counters = await read_counters(s, 10)
            assert min(counters) >= 300_000 and counters == sorted(counters)
        origin_room = a.relay.media.router.rooms["show"]
        assert len(origin_room.subscribers) == 1  # one origin->edge stream serves both edge viewers
        assert b.relay.media.router.rooms["show"].publishers[publisher.media_id].subscriber_count == 2
        for s in subscriptions:
            await s.close()
        await eventually(lambda: _no_subscribers(a), timeout=15)  # the edge dropped its upstream link
        # A new edge viewer brings the link back; then the host leaves and the edge viewer is told.
        again = await MediaSession.subscribe(viewers[0], kinds=("video",))
        await read_counters(again, 3)
        await publisher.close()
        while (event := await viewers[0].next_event("media", timeout=15))["event"] != "publisher_left":
            pass
        assert event["publisher"] == publisher.media_id
        await again.close()
    finally:
        for v in viewers:
            await v.close()
        await host.close()


async def _no_subscribers(node) -> bool:
    room = node.relay.media.router.rooms.get("show")
    return room is None or not room.subscribers


async def test_serve_with_two_workers_shares_the_port_and_the_room(redis, tmp_path):
    """`live-relay serve --workers 2 --redis URL`: two processes on one port (SO_REUSEPORT), one room."""
    import os
    import signal
    import sys

    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack
    from protocol import issue_token
    from tests.conftest import SECRET, free_port
    from tests.test_sfu import read_counters

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--workers", "2", "--port",
        str(port), "--redis", redis.url, "--secret", SECRET, "--room", "show", env={**os.environ})
    url = f"ws://127.0.0.1:{port}/ws"

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    viewers = [LiveClient(url, "show") for _ in range(8)]
    try:
        await eventually(up, timeout=20)
        await asyncio.sleep(1.0)  # both workers listening
        host = LiveClient(url, "show", issue_token(SECRET, "show", "host", Role.HOST))
        await host.connect()
        for v in viewers:
            await v.connect()
        await host.comment("to every worker")
        for v in viewers:
            assert (await v.next_event("comment", timeout=10))["text"] == "to every worker"
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240, start=900_000)])
        subs = [await MediaSession.subscribe(v, kinds=("video",)) for v in viewers[:4]]
        for s in subs:
            assert min(await read_counters(s, 3)) >= 900_000
        for s in subs:
            await s.close()
        await publisher.close()
        await host.close()
    finally:
        for v in viewers:
            await v.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_an_origin_that_dies_is_reported_to_edge_viewers(nodes):
    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack
    from tests.test_sfu import read_counters

    a, b = nodes
    host = LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST))
    await host.connect()
    publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
    async with LiveClient(b.ws_url, "show") as viewer:
        subscription = await MediaSession.subscribe(viewer, kinds=("video",))
        await read_counters(subscription, 3)
        await a.shutdown()  # node A goes away with its host
        while (event := await viewer.next_event("media", timeout=20))["event"] != "publisher_left":
            pass
        assert event["publisher"] == publisher.media_id
        await subscription.close()
    await publisher.pc.close()
    await host.close()


async def test_scenes_work_across_nodes(nodes):
    """A viewer on node B joins the stage of a host on node A; the audience on A sees and decodes the new
    co-host (served from B through the cascade); a PK links a room hosted on A with one hosted on B; a
    private call joins a host on A and a viewer on B."""
    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack
    from tests.test_sfu import read_counters

    a, b = nodes
    host = LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST))
    guest = LiveClient(b.ws_url, "show", b.token("show", "gina", Role.VIEWER, name="Gina"))
    audience = LiveClient(a.ws_url, "show")
    host_b = LiveClient(b.ws_url, "other", b.token("other", "bob", Role.HOST))
    clients = [host, guest, audience, host_b]
    sessions: list[MediaSession] = []
    try:
        for c in clients:
            await c.connect()
        sessions.append(await MediaSession.publish(host, [CounterVideoTrack(320, 240, start=0)]))
        # Stage across nodes.
        await guest.request({"type": "stage_request"})
        assert (await host.next_event("stage_requested"))["user"] == "gina"
        await host.request({"type": "stage_accept", "user": "gina"})
        assert (await guest.next_event("grant"))["role"] == "cohost"
        cohost = await MediaSession.publish(guest, [CounterVideoTrack(320, 240, start=100_000)])
        sessions.append(cohost)
        async with asyncio.timeout(15):
            while True:
                stage = await audience.next_event("stage")
                if stage["state"]["seats"] and stage["state"]["seats"][0]["publishers"]:
                    break
        assert stage["state"]["seats"][0]["publishers"] == [cohost.media_id]
        view = await MediaSession.subscribe(audience, publisher=cohost.media_id, kinds=("video",))
        sessions.append(view)
        assert min(await read_counters(view, 5)) >= 100_000
        # PK across nodes.
        sessions.append(await MediaSession.publish(host_b, [CounterVideoTrack(320, 240, start=500_000)]))
        await host.request({"type": "pk_invite", "room": "other"})
        assert (await host_b.next_event("pk_invited"))["from_room"] == "show"
        await host_b.request({"type": "pk_answer", "room": "show", "accept": True})
        pk = (await audience.next_event("pk", timeout=10))["state"]
        other_side = next(s for s in pk["sides"] if s["room"] == "other")
        cross = await MediaSession.subscribe(audience, publisher=other_side["publishers"][0], kinds=("video",))
        sessions.append(cross)
        assert min(await read_counters(cross, 5)) >= 500_000
        await host_b.request({"type": "pk_end"})
        assert (await audience.next_event("pk_ended", timeout=10))["reason"] == "ended by bob"
        # A private call between a host on A and a viewer on B.
        await host.request({"type": "call_invite", "user": "gina"})
        await guest.next_event("call_invited", timeout=10)
        await guest.request({"type": "call_answer", "accept": True})
        grant = await guest.next_event("call_grant", timeout=10)
        assert (await host.next_event("call_grant", timeout=10))["call_room"] == grant["call_room"]
        await host.request({"type": "call_end"})
        assert (await guest.next_event("call_ended", timeout=10))["reason"] == "ended by host"
    finally:
        for s in sessions:
            await s.pc.close()
        for c in clients:
            await c.close()
