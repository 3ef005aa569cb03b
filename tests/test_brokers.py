"""One contract suite, run against every broker (as centrifuge does): the in-process one and Redis."""

from __future__ import annotations

import asyncio

import pytest

from signaling.brokers import Broker, MemoryBroker, StreamPosition
from tests import redis_server


@pytest.fixture(scope="module")
def redis():
    if not redis_server.available():
        pytest.skip("needs redis-server (apt-get install redis-server; .ci/run installs it)")
    server = redis_server.RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def broker(request):
    received: list = []
    if request.param == "memory":
        b: Broker = MemoryBroker(history_size=5, history_ttl=60)
    else:
        from signaling.brokers.redis import RedisBroker

        b = RedisBroker(request.getfixturevalue("redis").url, history_size=5, history_ttl=60)
    b.set_handlers(lambda room, pub: received.append(("pub", room, pub.seq, pub.data)),
                   lambda room, data: received.append(("bcast", room, data)))
    await b.start()
    b.received = received  # type: ignore[attr-defined]
    yield b
    await b.close()


def room_name(request) -> str:
    return f"r-{request.node.name.replace('[', '-').replace(']', '')}"


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a plain callback's list, no event to wait on
            await asyncio.sleep(0.01)


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
    for n in range(3):
        await broker.publish(room, {"type": "comment", "text": f"c{n}"})
    got = await broker.recover(room, StreamPosition(start.position.seq + 1, start.position.epoch))
    assert got.recovered and [p.data["text"] for p in got.publications] == ["c1", "c2"]
    top = await broker.recover(room, StreamPosition(start.position.seq + 3, start.position.epoch))
    assert top.recovered and top.publications == []
    assert (await broker.recover(room, StreamPosition(1, "other-epoch"))).reason == "epoch_changed"
    assert (await broker.recover(room, StreamPosition(10**6, start.position.epoch))).reason == "unknown_position"
    for n in range(10):  # history keeps 5
        await broker.publish(room, {"type": "comment", "text": f"more{n}"})
    assert (await broker.recover(room, StreamPosition(start.position.seq, start.position.epoch))).reason == "too_old"


async def test_state_likes_presence_and_broadcast(broker, request):
    room = room_name(request)
    await broker.subscribe(room)
    await broker.recover(room, None)
    await broker.set_state(room, "pinned", {"text": "hi"})
    assert (await broker.get_state(room))["pinned"] == {"text": "hi"}
    await broker.set_state(room, "pinned", None)
    assert "pinned" not in await broker.get_state(room)
    assert await broker.add_likes(room, 3) == 3 and await broker.add_likes(room, 2) == 5
    assert await broker.get_likes(room) == 5
    assert await broker.set_presence(room, 4, 3) == (4, 3)
    assert await broker.room_exists(room)
    await broker.broadcast(room, {"type": "likes", "total": 5})
    await until(lambda: any(r[0] == "bcast" for r in broker.received))
