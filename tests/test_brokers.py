"""One contract suite, run against every broker (as centrifuge does): the in-process one and a real
redis-server. Every method of every interface (EventStream, RoomStore, Registry) and the lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from signaling.brokers import Broker, BrokerUnavailable, MemoryBroker, StreamPosition
from tests import redis_server
from tests.conftest import require_dependency

BrokerFactory = Callable[..., Awaitable[Broker]]
# For what only a shared broker has (other nodes, a server that can go away): the in-process broker has
# one node and lives as long as the process.
ONLY_REDIS = pytest.mark.parametrize("make_broker", ["redis"], indirect=True)


@pytest.fixture(scope="module")
def redis():
    require_dependency(None if redis_server.available() else "redis-server (apt-get install redis-server)")
    server = redis_server.RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def make_broker(request) -> AsyncIterator[BrokerFactory]:
    """Builds started brokers of the parametrized kind (several share one Redis: several nodes)."""
    made: list[Broker] = []

    async def make(history_size: int = 5, history_ttl: float = 60, **kwargs: Any) -> Broker:
        received: list[tuple[Any, ...]] = []
        if request.param == "memory":
            b: Broker = MemoryBroker(history_size=history_size, history_ttl=history_ttl)
        else:
            from signaling.brokers.redis import RedisBroker

            b = RedisBroker(request.getfixturevalue("redis").url, history_size=history_size,
                            history_ttl=history_ttl, **kwargs)
        b.set_handlers(lambda room, pub: received.append(("pub", room, pub.seq, pub.data)),
                       lambda room, data: received.append(("bcast", room, data)),
                       lambda room: received.append(("reset", room)))
        b.received = received  # type: ignore[attr-defined]
        await b.start()
        made.append(b)
        return b

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for b in made:
        await b.close()


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Broker:
    return await make_broker()


def room_name(request) -> str:
    return f"r-{request.node.name.replace('[', '-').replace(']', '')}"


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a plain callback's list, no event to wait on
            await asyncio.sleep(0.01)


# -- lifecycle ------------------------------------------------------------------------------------------------


async def test_lifecycle_healthy_and_close_twice(make_broker: BrokerFactory) -> None:
    b = await make_broker()
    assert b.healthy
    await b.close()
    await b.close()


# -- EventStream ----------------------------------------------------------------------------------------------


async def test_publish_sequences_and_delivers_in_order(broker, request):
    room = room_name(request)
    await broker.subscribe(room)
    first = await broker.recover(room, None)
    pubs = [await broker.publish(room, {"type": "comment", "text": f"c{n}"}) for n in range(3)]
    assert [p.seq for p in pubs] == [first.position.seq + 1, first.position.seq + 2, first.position.seq + 3]
    assert {p.epoch for p in pubs} == {first.position.epoch}
    assert pubs[0].data["seq"] == pubs[0].seq and pubs[0].data["epoch"] == pubs[0].epoch
    await until(lambda: len([r for r in broker.received if r[0] == "pub"]) == 3)
    assert [r[3]["text"] for r in broker.received if r[0] == "pub"] == ["c0", "c1", "c2"]


async def test_recover_exactly_the_missed_ones_or_say_why(broker, request):
    room = room_name(request)
    start = await broker.recover(room, None)
    assert start.publications == [] and not start.recovered and start.reason is None
    for n in range(3):
        await broker.publish(room, {"type": "comment", "text": f"c{n}"})
    got = await broker.recover(room, StreamPosition(start.position.seq + 1, start.position.epoch))
    assert got.recovered and [p.data["text"] for p in got.publications] == ["c1", "c2"]
    assert got.position == StreamPosition(start.position.seq + 3, start.position.epoch)
    top = await broker.recover(room, StreamPosition(start.position.seq + 3, start.position.epoch))
    assert top.recovered and top.publications == []
    changed = await broker.recover(room, StreamPosition(1, "other-epoch"))
    # The whole of the new epoch's history is still kept: the client gets all of it, and is told why.
    assert changed.reason == "epoch_changed" and [p.seq for p in changed.publications] == [1, 2, 3]
    assert (await broker.recover(room, StreamPosition(10**6, start.position.epoch))).reason == "unknown_position"
    for n in range(10):  # history keeps 5
        await broker.publish(room, {"type": "comment", "text": f"more{n}"})
    assert (await broker.recover(room, StreamPosition(start.position.seq, start.position.epoch))).reason == "too_old"
    assert (await broker.recover(room, StreamPosition(1, "other-epoch"))).publications == []  # seq 1 is gone


async def test_history_age_limit(make_broker: BrokerFactory, request) -> None:
    b = await make_broker(history_ttl=0.3)
    room = room_name(request)
    start = await b.recover(room, None)
    await b.publish(room, {"type": "comment", "text": "old"})
    await asyncio.sleep(0.5)
    assert (await b.recover(room, start.position)).reason == "too_old"


async def test_unsubscribe_stops_delivery_but_keeps_the_stream(broker, request):
    room = room_name(request)
    await broker.subscribe(room)
    await broker.publish(room, {"type": "comment", "text": "seen"})
    await until(lambda: any(r[0] == "pub" for r in broker.received))
    await broker.unsubscribe(room)
    await broker.publish(room, {"type": "comment", "text": "unseen"})
    await broker.broadcast(room, {"type": "likes", "total": 1})
    await asyncio.sleep(0.2)  # bounded wait for something that must not arrive
    assert [r[3]["text"] for r in broker.received if r[0] == "pub"] == ["seen"]
    assert not any(r[0] == "bcast" for r in broker.received)
    assert (await broker.recover(room, None)).position.seq == 2


async def test_broadcast_reaches_every_subscribed_node_without_a_sequence(make_broker: BrokerFactory, request):
    room = room_name(request)
    a = await make_broker()
    await a.subscribe(room)
    others = [a]
    if make_broker.kind == "redis":  # type: ignore[attr-defined]
        b = await make_broker()
        await b.subscribe(room)
        others.append(b)
    await a.broadcast(room, {"type": "likes", "total": 5})
    for node in others:
        await until(lambda node=node: any(r[0] == "bcast" for r in node.received))
        bcast = next(r for r in node.received if r[0] == "bcast")
        assert bcast[1] == room and bcast[2] == {"type": "likes", "total": 5}
    assert (await a.recover(room, None)).position.seq == 0


@ONLY_REDIS
async def test_publications_reach_other_nodes_in_one_order(make_broker: BrokerFactory, request):
    room = room_name(request)
    a, b = await make_broker(), await make_broker()
    await a.subscribe(room)
    await b.subscribe(room)
    await asyncio.gather(*(node.publish(room, {"type": "comment", "text": f"{i}"})
                           for i in range(10) for node in (a, b)))
    for node in (a, b):
        await until(lambda node=node: len([r for r in node.received if r[0] == "pub"]) == 20)
    assert [r[2] for r in a.received if r[0] == "pub"] == [r[2] for r in b.received if r[0] == "pub"] \
        == list(range(1, 21))


async def test_gc_forgets_expired_unsubscribed_rooms(make_broker: BrokerFactory, request):
    b = await make_broker(history_ttl=0.2, key_grace=0)
    room, kept = room_name(request), room_name(request) + "-kept"
    await b.subscribe(kept)
    for r in (room, kept):
        await b.publish(r, {"type": "comment", "text": "x"})
    assert await b.room_exists(room)
    async with asyncio.timeout(5):
        while room not in await b.gc():  # noqa: ASYNC110 - expiry happens inside the broker; nothing to await
            await asyncio.sleep(0.2)
    assert not await b.room_exists(room)
    assert kept not in await b.gc()  # subscribed here: kept


async def test_gc_keeps_a_room_whose_state_is_fresh(make_broker: BrokerFactory, request):
    """A room may be only state (a private call room is a `private` value and nothing else): collecting
    expired history must not forget it, or the room would open to anyone."""
    b = await make_broker(history_ttl=0.2, key_grace=0)
    room = room_name(request)
    await b.set_state(room, "private", {"users": ["a", "b"], "show": "show"})
    await asyncio.sleep(0.3)
    await b.gc()
    assert (await b.get_state(room))["private"] == {"users": ["a", "b"], "show": "show"}


@ONLY_REDIS
async def test_reset_when_the_stream_is_lost_under_a_subscribed_room(make_broker: BrokerFactory, request):
    server = request.getfixturevalue("redis")
    b = await make_broker()
    room = room_name(request)
    await b.subscribe(room)
    await b.recover(room, None)
    await b.publish(room, {"type": "comment", "text": "before"})
    server.stop()  # no persistence: the room's stream is gone
    with pytest.raises(BrokerUnavailable):
        await b.publish(room, {"type": "comment", "text": "lost"})
    assert not b.healthy
    server.start()
    await until(lambda: ("reset", room) in b.received, timeout=10)
    assert b.healthy


# -- RoomStore ------------------------------------------------------------------------------------------------


async def test_state_values(broker, request):
    room = room_name(request)
    assert await broker.get_state(room) == {}
    await broker.set_state(room, "pinned", {"text": "hi"})
    await broker.set_state(room, "product", {"id": "p1"})
    assert await broker.get_state(room) == {"pinned": {"text": "hi"}, "product": {"id": "p1"}}
    await broker.set_state(room, "pinned", None)
    assert await broker.get_state(room) == {"product": {"id": "p1"}}
    await broker.set_state(room, "never-set", None)  # deleting what is not there is fine


async def test_likes(make_broker: BrokerFactory, request):
    room = room_name(request)
    a = await make_broker()
    assert await a.get_likes(room) == 0
    assert await a.add_likes(room, 3) == 3 and await a.add_likes(room, 2) == 5
    assert await a.get_likes(room) == 5
    if make_broker.kind == "redis":  # type: ignore[attr-defined]
        b = await make_broker()
        assert await b.add_likes(room, 1) == 6 and await a.get_likes(room) == 6  # room-wide


async def test_presence_sums_fresh_node_reports(make_broker: BrokerFactory, request):
    room = room_name(request)
    a = await make_broker()
    assert await a.set_presence(room, 4, 3) == (4, 3)
    assert await a.set_presence(room, 2, 1) == (2, 1)  # a node's new report replaces its old one
    if make_broker.kind == "redis":  # type: ignore[attr-defined]
        b = await make_broker(presence_ttl=0.3)
        assert await b.set_presence(room, 5, 5) == (7, 6)
        await asyncio.sleep(0.5)  # a's report is now older than b's freshness window
        assert await b.set_presence(room, 5, 5) == (5, 5)


# -- Registry -------------------------------------------------------------------------------------------------


async def test_publishers(make_broker: BrokerFactory, request):
    room = room_name(request)
    b = await make_broker()
    assert await b.get_publishers(room) == {}
    info = {"user": "host", "kinds": ["audio", "video"], "node": "ws://127.0.0.1:1/ws"}
    await b.set_publisher(room, "p1", info)  # type: ignore[arg-type]
    await b.set_publisher(room, "p2", {**info, "user": "cohost"})  # type: ignore[typeddict-item]
    assert await b.get_publishers(room) == {"p1": info, "p2": {**info, "user": "cohost"}}
    await b.set_publisher(room, "p1", None)
    assert list(await b.get_publishers(room)) == ["p2"]
    if make_broker.kind == "redis":  # type: ignore[attr-defined]
        stale = await make_broker(presence_ttl=0.2)
        await asyncio.sleep(0.4)  # p2 was not refreshed: a dead node's publishers drop out
        assert await stale.get_publishers(room) == {}


async def test_live_rooms(make_broker: BrokerFactory, request):
    room = room_name(request)
    b = await make_broker()
    await b.set_live_room(room, {"host": "amy", "name": "Amy", "node": "ws://127.0.0.1:1/ws"})
    await b.set_live_room(room + "-2", {"host": "bo", "node": "ws://127.0.0.1:1/ws"})
    live = await b.get_live_rooms()
    assert live[room] == {"host": "amy", "name": "Amy", "node": "ws://127.0.0.1:1/ws"} and room + "-2" in live
    assert len(await b.get_live_rooms(limit=1)) == 1
    await b.set_live_room(room, None)
    assert room not in await b.get_live_rooms() and room + "-2" in await b.get_live_rooms()
    if make_broker.kind == "redis":  # type: ignore[attr-defined]
        stale = await make_broker(presence_ttl=0.2)
        await asyncio.sleep(0.4)  # not refreshed: a dead node's rooms drop out (and are taken out)
        assert room + "-2" not in await stale.get_live_rooms()
        assert room + "-2" not in await b.get_live_rooms()
    else:
        await b.set_live_room(room + "-2", None)


async def test_users(broker, request):
    room = room_name(request)
    assert await broker.get_users(room) == {} and await broker.get_user(room, "alice") is None
    await broker.set_user(room, "alice", {"name": "Alice", "role": "viewer"})
    await broker.set_user(room, "bob", {"name": None, "role": "cohost"})
    assert await broker.get_user(room, "alice") == {"name": "Alice", "role": "viewer"}
    assert await broker.get_users(room) == {"alice": {"name": "Alice", "role": "viewer"},
                                            "bob": {"name": None, "role": "cohost"}}
    await broker.set_user(room, "alice", None)
    assert await broker.get_user(room, "alice") is None and list(await broker.get_users(room)) == ["bob"]


async def test_revocations_reach_every_node_move_on_and_expire(make_broker: BrokerFactory, request):
    import time

    room = room_name(request)
    a = await make_broker()
    nodes = [a, await make_broker()] if make_broker.kind == "redis" else [a]  # type: ignore[attr-defined]
    assert await a.get_revocations(room, ["*", "user:eve"]) == {}
    now = time.time()
    await a.revoke(room, "user:eve", now - 10, None)
    await a.revoke(room, "user:eve", now - 100, None)  # an older cutoff never moves it back
    await a.revoke(room, "jti:abc", now, now + 3600)
    await a.revoke(room, "jti:old", now, now - 1)  # every token it covered has expired
    for node in nodes:
        assert await node.get_revocations(room, ["*", "user:eve", "jti:abc", "jti:old"]) == {
            "user:eve": now - 10, "jti:abc": now}
    assert await a.get_revocations("another-" + room, ["user:eve"]) == {}


async def test_grants_live_until_taken_back_or_expired(make_broker: BrokerFactory, request):
    import time

    room = room_name(request)
    a = await make_broker()
    assert await a.get_grant(room, "g1") is None
    record = {"user": "fan", "role": "cohost", "expires": time.time() + 3600}
    await a.set_grant(room, "g1", record)  # type: ignore[arg-type]
    await a.set_grant(room, "g2", {**record, "expires": time.time() - 1})  # type: ignore[typeddict-item]
    assert await a.get_grant(room, "g1") == record
    assert await a.get_grant(room, "g2") is None  # expired
    nodes = [a, await make_broker()] if make_broker.kind == "redis" else [a]  # type: ignore[attr-defined]
    await nodes[-1].set_grant(room, "g1", None)  # taken back on one node: gone on every node
    for node in nodes:
        assert await node.get_grant(room, "g1") is None


async def test_room_exists(broker, request):
    room = room_name(request)
    assert not await broker.room_exists(room)
    await broker.publish(room, {"type": "comment", "text": "x"})
    assert await broker.room_exists(room)
    other = room + "-present"
    await broker.set_presence(other, 1, 1)
    assert await broker.room_exists(other)


@ONLY_REDIS
async def test_unreachable_broker_raises_broker_unavailable(make_broker: BrokerFactory, request):
    from signaling.brokers.redis import RedisBroker
    from tests.conftest import free_port

    dead = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")
    await dead.start()
    try:
        assert not dead.healthy
        for call in (dead.publish("r", {"type": "comment"}), dead.get_state("r"), dead.get_publishers("r"),
                     dead.add_likes("r", 1), dead.room_exists("r")):
            with pytest.raises(BrokerUnavailable):
                await call
    finally:
        await dead.close()
