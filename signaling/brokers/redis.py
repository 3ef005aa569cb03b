"""The Redis broker: rooms shared by several nodes (processes or machines) through one Redis.

redis-py's asyncio client (the maintained official client; coredis would do too, but redis-py is what
most operators already run and debug with). Per room, with a hash tag so a room's keys stay on one
Redis Cluster slot:

- ``lr:{room}:seq``   INCR counter: the room's sequence numbers.
- ``lr:{room}:epoch`` the stream's epoch: set once (SET NX); if Redis loses the room (restart without
  persistence, expiry) the key is gone and the next use makes a new epoch, so clients are told.
- ``lr:{room}:hist``  a Redis Stream whose entry IDs are ``<seq>-0``: history is read back by sequence
  number with XRANGE, bounded by MAXLEN (count) and checked against each entry's time (age).
- ``lr:{room}:ch``    pub/sub channel: every node subscribed to the room gets each publication.

Why a Lua script: INCR, the history write and the PUBLISH must be one atomic step, or two nodes could
publish seq 7 after seq 8, or a publication could be sequenced and lost before reaching history. The
script also splices ``seq`` and ``epoch`` into the event's JSON, so the payload is encoded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signaling.brokers.base import (
    Broker,
    BrokerUnavailable,
    GrantRecord,
    LiveRoomInfo,
    Publication,
    PublisherInfo,
    Recovery,
    StreamPosition,
    UserInfo,
)

log = logging.getLogger(__name__)

_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('INCR', KEYS[2])
local payload = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[2], 2)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], seq .. '-0', 'd', payload, 't', ARGV[5])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
redis.call('PUBLISH', KEYS[4], 'p' .. payload)
return {seq, epoch}
"""

PRESENCE_TTL_S = 15.0  # a node that stops reporting drops out of the room's counts after this
KEY_GRACE_S = 60  # a room's stream keys outlive its history's age limit by this much


LIVE_ROOMS_KEY = "lr:live-rooms"  # room -> JSON of LiveRoomInfo and its refresh time (one hash, every room)


def _keys(room: str) -> dict[str, str]:
    tag = f"lr:{{{room}}}"
    return {"epoch": f"{tag}:epoch", "seq": f"{tag}:seq", "hist": f"{tag}:hist", "ch": f"{tag}:ch",
            "state": f"{tag}:state", "likes": f"{tag}:likes", "presence": f"{tag}:presence",
            "publishers": f"{tag}:publishers", "users": f"{tag}:users", "grants": f"{tag}:grants",
            "revoked": f"{tag}:revoked"}


class RedisBroker(Broker):
    def __init__(self, url: str, history_size: int = 1000, history_ttl: float = 300.0,
                 presence_ttl: float = PRESENCE_TTL_S, key_grace: int = KEY_GRACE_S) -> None:
        self.url = url
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.presence_ttl = presence_ttl
        self.key_ttl = max(1, int(history_ttl) + key_grace)
        self._known: set[str] = set()  # rooms this node touched: gc reports them once they are gone
        self.node_id = secrets.token_hex(6)
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._rooms: set[str] = set()
        self._last_seq: dict[str, tuple[str, int]] = {}  # room -> (epoch, last seq delivered here)
        self._reader: asyncio.Task[None] | None = None
        self._healthy = False
        self._closed = False
        self._script: Any = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=3,
                                              health_check_interval=5)
        self._script = self._client.register_script(_PUBLISH)
        try:
            await self._client.ping()
            self._healthy = True
        except RedisError as exc:
            log.warning("redis unavailable at start; will keep trying", extra={"error": repr(exc)})
        self._reader = asyncio.create_task(self._read_loop(), name="redis-pubsub")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        if self._redis is not None:
            await self._client.aclose()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise BrokerUnavailable("the Redis broker is not started")
        return self._redis

    def _mark(self, healthy: bool, error: Exception | None = None) -> None:
        if healthy != self._healthy:
            log.warning("redis %s", "back" if healthy else "lost", extra={"error": repr(error) if error else None})
        self._healthy = healthy

    async def _call(self, coro: Any) -> Any:
        """Await one Redis command; a connection or server failure becomes ``BrokerUnavailable``."""
        try:
            result = await coro
        except (RedisError, OSError) as exc:
            self._mark(False, exc)
            raise BrokerUnavailable(f"redis: {exc}") from exc
        self._mark(True)
        return result

    # -- pub/sub --------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Deliver publications; on a lost connection, reconnect, resubscribe and recover what was missed."""
        backoff = 0.1
        while not self._closed:
            try:
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                if self._rooms:
                    await self._pubsub.subscribe(*(_keys(r)["ch"] for r in self._rooms))
                await self._catch_up()
                backoff = 0.1
                while True:
                    if not self._rooms:
                        await asyncio.sleep(0.05)
                        continue
                    message = await self._pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message)
            except (RedisError, OSError, BrokerUnavailable) as exc:
                self._mark(False, exc)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.aclose()
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        room = channel[len("lr:{"):-len("}:ch")]
        data = message["data"]
        kind, payload = data[:1], json.loads(data[1:])
        if kind == b"p":
            self._deliver(room, payload)
        elif kind == b"b":
            self._on_broadcast(room, payload)

    def _deliver(self, room: str, payload: dict[str, Any]) -> None:
        epoch, seq = payload["epoch"], payload["seq"]
        known = self._last_seq.get(room)
        if known is not None and known[0] == epoch and seq <= known[1]:
            return  # already delivered (a catch-up overlapping live messages)
        self._last_seq[room] = (epoch, seq)
        self._on_publication(room, Publication(seq, epoch, payload, time.monotonic()))

    async def _catch_up(self) -> None:
        """After (re)connecting: deliver what each subscribed room published while we could not listen;
        a room whose epoch changed is reset (its clients reconnect and are told)."""
        for room, (epoch, seq) in list(self._last_seq.items()):
            if room not in self._rooms:
                continue
            recovery = await self.recover(room, StreamPosition(seq, epoch))
            if not recovery.recovered:
                self._last_seq.pop(room, None)
                if self.on_reset is not None:
                    self.on_reset(room)
                continue
            for publication in recovery.publications:
                self._deliver(room, publication.data)

    async def subscribe(self, room: str) -> None:
        self._rooms.add(room)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):  # the read loop resubscribes after a reconnect
                await self._pubsub.subscribe(_keys(room)["ch"])

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        self._last_seq.pop(room, None)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(_keys(room)["ch"])

    # -- the contract ---------------------------------------------------------------------------------

    async def publish(self, room: str, data: dict[str, Any]) -> Publication:
        self._known.add(room)
        k = _keys(room)
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        seq, epoch = await self._call(self._script(
            keys=[k["epoch"], k["seq"], k["hist"], k["ch"]],
            args=[secrets.token_hex(4), body, self.history_size, self.key_ttl,
                  int(time.time() * 1000)]))
        data["seq"], data["epoch"] = int(seq), epoch.decode()
        return Publication(int(seq), data["epoch"], data, time.monotonic())

    async def broadcast(self, room: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        await self._call(self._client.publish(_keys(room)["ch"], "b" + body))

    async def recover(self, room: str, since: StreamPosition | None) -> Recovery:
        self._known.add(room)
        k = _keys(room)
        await self._call(self._client.set(k["epoch"], secrets.token_hex(4), nx=True, ex=self.key_ttl))
        epoch_raw, top_raw = await self._call(self._client.mget(k["epoch"], k["seq"]))
        epoch = epoch_raw.decode()
        top = int(top_raw or 0)
        position = StreamPosition(top, epoch)
        if room in self._rooms and room not in self._last_seq:
            self._last_seq[room] = (epoch, top)
        if since is None:
            return Recovery(position)
        if since.epoch != epoch:
            # The client's stream is gone. If the new epoch's whole history is still here, it missed
            # exactly all of it: give it that (still saying why), so nothing published since is lost.
            return Recovery(position, await self._history_from(room, 1, epoch) or [], reason="epoch_changed")
        if since.seq > top:
            return Recovery(position, reason="unknown_position")
        if since.seq == top:
            return Recovery(position, recovered=True)
        publications = await self._history_from(room, since.seq + 1, epoch)
        if publications is None:
            return Recovery(position, reason="too_old")
        return Recovery(position, publications, recovered=True)

    async def _history_from(self, room: str, first: int, epoch: str) -> list[Publication] | None:
        """Publications from ``first`` on, or None if ``first`` is no longer in history (count or age)."""
        entries = await self._call(self._client.xrange(_keys(room)["hist"], min=f"{first}-0", max="+",
                                                       count=self.history_size + 10))
        horizon_ms = (time.time() - self.history_ttl) * 1000
        kept = [(int(entry_id.split(b"-")[0]), fields) for entry_id, fields in entries
                if int(fields[b"t"]) >= horizon_ms]
        if not kept or kept[0][0] != first:
            return None
        return [Publication(seq, epoch, json.loads(fields[b"d"]), time.monotonic()) for seq, fields in kept]

    async def room_exists(self, room: str) -> bool:
        k = _keys(room)
        return bool(await self._call(self._client.exists(k["seq"], k["presence"], k["publishers"])))

    async def gc(self) -> list[str]:
        gone = []
        for room in list(self._known - self._rooms):
            if not await self.room_exists(room):  # its keys expired: no history, nobody present
                self._known.discard(room)
                gone.append(room)
        return gone

    async def set_state(self, room: str, key: str, value: dict[str, Any] | None) -> None:
        k = _keys(room)["state"]
        if value is None:
            await self._call(self._client.hdel(k, key))
        else:
            await self._call(self._client.hset(k, key, json.dumps(value)))
            await self._call(self._client.expire(k, self.key_ttl + 3600))

    async def get_state(self, room: str) -> dict[str, Any]:
        raw = await self._call(self._client.hgetall(_keys(room)["state"]))
        return {key.decode(): json.loads(value) for key, value in raw.items()}

    async def add_likes(self, room: str, count: int) -> int:
        return int(await self._call(self._client.incrby(_keys(room)["likes"], count)))

    async def get_likes(self, room: str) -> int:
        return int(await self._call(self._client.get(_keys(room)["likes"])) or 0)

    async def set_presence(self, room: str, node_members: int, node_viewers: int) -> tuple[int, int]:
        k = _keys(room)["presence"]
        now = time.time()
        await self._call(self._client.hset(k, self.node_id, f"{node_members},{node_viewers},{now}"))
        await self._call(self._client.expire(k, max(1, int(self.presence_ttl * 4))))
        members = viewers = 0
        for value in (await self._call(self._client.hgetall(k))).values():
            m, v, stamp = value.decode().split(",")
            if now - float(stamp) <= self.presence_ttl:
                members += int(m)
                viewers += int(v)
        return members, viewers

    async def set_publisher(self, room: str, publisher: str, info: PublisherInfo | None) -> None:
        k = _keys(room)["publishers"]
        if info is None:
            await self._call(self._client.hdel(k, publisher))
            return
        await self._call(self._client.hset(k, publisher, json.dumps({**info, "ts": time.time()})))
        await self._call(self._client.expire(k, max(1, int(self.presence_ttl * 4))))

    async def get_publishers(self, room: str) -> dict[str, PublisherInfo]:
        now = time.time()
        out = {}
        for key, value in (await self._call(self._client.hgetall(_keys(room)["publishers"]))).items():
            info = json.loads(value)
            if now - info.pop("ts", 0) <= self.presence_ttl:
                out[key.decode()] = info
        return out

    async def set_live_room(self, room: str, info: LiveRoomInfo | None) -> None:
        if info is None:
            await self._call(self._client.hdel(LIVE_ROOMS_KEY, room))
            return
        await self._call(self._client.hset(LIVE_ROOMS_KEY, room, json.dumps({**info, "ts": time.time()})))

    async def get_live_rooms(self, limit: int = 100) -> dict[str, LiveRoomInfo]:
        now = time.time()
        live: dict[str, LiveRoomInfo] = {}
        stale: list[str] = []
        for key, value in (await self._call(self._client.hgetall(LIVE_ROOMS_KEY))).items():
            info = json.loads(value)
            if now - info.pop("ts", 0) <= self.presence_ttl:
                live[key.decode()] = info
            else:
                stale.append(key.decode())
        if stale:  # a dead node's rooms: dropped here, since nobody else will
            await self._call(self._client.hdel(LIVE_ROOMS_KEY, *stale))
        return {room: live[room] for room in sorted(live)[:limit]}

    async def set_user(self, room: str, user: str, info: UserInfo | None) -> None:
        k = _keys(room)["users"]
        if info is None:
            await self._call(self._client.hdel(k, user))
            return
        await self._call(self._client.hset(k, user, json.dumps(info)))
        await self._call(self._client.expire(k, self.key_ttl + 3600))

    async def set_grant(self, room: str, grant_id: str, record: GrantRecord | None) -> None:
        k = _keys(room)["grants"]
        if record is None:
            await self._call(self._client.hdel(k, grant_id))
            return
        await self._call(self._client.hset(k, grant_id, json.dumps(record)))
        # The hash lives as long as its longest grant (a shorter grant written later must not cut it).
        ttl = int(record["expires"] - time.time()) + 60
        if int(await self._call(self._client.ttl(k))) < ttl:
            await self._call(self._client.expire(k, ttl))

    async def get_grant(self, room: str, grant_id: str) -> GrantRecord | None:
        raw = await self._call(self._client.hget(_keys(room)["grants"], grant_id))
        record: GrantRecord | None = json.loads(raw) if raw else None
        return record if record is not None and record["expires"] > time.time() else None

    async def revoke(self, room: str, scope: str, cutoff: float, expires: float | None) -> None:
        # No key expiry: revocations outlive the room's other keys (entries expire one by one, on read).
        k = _keys(room)["revoked"]
        raw = await self._call(self._client.hget(k, scope))
        if raw:
            old_cutoff, old_expires = json.loads(raw)
            cutoff = max(cutoff, old_cutoff)
            expires = None if expires is None or old_expires is None else max(expires, old_expires)
        await self._call(self._client.hset(k, scope, json.dumps([cutoff, expires])))

    async def get_revocations(self, room: str, scopes: list[str]) -> dict[str, float]:
        k = _keys(room)["revoked"]
        values = await self._call(self._client.hmget(k, scopes))
        now, found, stale = time.time(), {}, []
        for scope, raw in zip(scopes, values, strict=True):
            if raw:
                cutoff, expires = json.loads(raw)
                if expires is None or expires > now:
                    found[scope] = float(cutoff)
                else:
                    stale.append(scope)
        if stale:
            await self._call(self._client.hdel(k, *stale))
        return found

    async def get_user(self, room: str, user: str) -> UserInfo | None:
        raw = await self._call(self._client.hget(_keys(room)["users"], user))
        return json.loads(raw) if raw else None

    async def get_users(self, room: str) -> dict[str, UserInfo]:
        raw = await self._call(self._client.hgetall(_keys(room)["users"]))
        return {key.decode(): json.loads(value) for key, value in raw.items()}
