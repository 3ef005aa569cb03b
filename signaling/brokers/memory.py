"""The in-process broker: the default, for a single node. Nothing survives a restart, so every
stream gets a fresh random epoch when it is created. It never raises ``BrokerUnavailable``."""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import Any

from signaling.brokers.base import (
    Broker,
    GrantRecord,
    LiveRoomInfo,
    Publication,
    PublisherInfo,
    Recovery,
    StreamPosition,
    UserInfo,
)


class _Stream:
    __slots__ = ("epoch", "grants", "history", "likes", "members", "publishers", "seq", "state", "state_written",
                 "subscribed", "users", "viewers")

    def __init__(self, history_size: int) -> None:
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.history: deque[Publication] = deque(maxlen=history_size)
        self.state: dict[str, Any] = {}
        self.state_written = 0.0  # monotonic time of the last state write
        self.likes = 0
        self.subscribed = False
        self.members = 0
        self.viewers = 0
        self.publishers: dict[str, PublisherInfo] = {}
        self.users: dict[str, UserInfo] = {}
        self.grants: dict[str, GrantRecord] = {}


class MemoryBroker(Broker):
    def __init__(self, history_size: int = 1000, history_ttl: float = 300.0, state_ttl: float | None = None) -> None:
        self._history_size = history_size
        self._history_ttl = history_ttl
        # Room state outlives history, as the Redis broker's keys do: a private call room is only state.
        self._state_ttl = history_ttl + 3660 if state_ttl is None else state_ttl
        self._streams: dict[str, _Stream] = {}
        # Revocations outlive rooms (a revoked token must not come back once its room was forgotten); they
        # are made by the operator only. (room, scope) -> (cutoff, expires).
        self._revoked: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._live_rooms: dict[str, LiveRoomInfo] = {}  # (one node: its own hosts, taken out as they stop)

    def _stream(self, room: str) -> _Stream:
        stream = self._streams.get(room)
        if stream is None:
            stream = self._streams[room] = _Stream(self._history_size)
        return stream

    def _trim(self, stream: _Stream) -> None:
        horizon = time.monotonic() - self._history_ttl
        history = stream.history
        while history and history[0].created < horizon:
            history.popleft()

    async def subscribe(self, room: str) -> None:
        self._stream(room).subscribed = True

    async def unsubscribe(self, room: str) -> None:
        stream = self._streams.get(room)
        if stream is not None:
            stream.subscribed = False

    async def publish(self, room: str, data: dict[str, Any]) -> Publication:
        stream = self._stream(room)
        stream.seq += 1
        data["seq"] = stream.seq
        data["epoch"] = stream.epoch
        publication = Publication(stream.seq, stream.epoch, data, time.monotonic())
        stream.history.append(publication)
        if stream.subscribed:
            self._on_publication(room, publication)
        return publication

    async def broadcast(self, room: str, data: dict[str, Any]) -> None:
        stream = self._streams.get(room)
        if stream is not None and stream.subscribed:
            self._on_broadcast(room, data)

    async def recover(self, room: str, since: StreamPosition | None) -> Recovery:
        stream = self._stream(room)
        self._trim(stream)
        position = StreamPosition(stream.seq, stream.epoch)
        if since is None:
            return Recovery(position)
        if since.epoch != stream.epoch:
            # As the Redis broker does: if the new epoch's whole history is kept, the client missed all of it.
            whole = list(stream.history) if stream.history and stream.history[0].seq == 1 else []
            return Recovery(position, whole, reason="epoch_changed")
        if since.seq > stream.seq:
            return Recovery(position, reason="unknown_position")
        if since.seq == stream.seq:
            return Recovery(position, recovered=True)
        first_kept = stream.history[0].seq if stream.history else stream.seq + 1
        if since.seq + 1 < first_kept:
            return Recovery(position, reason="too_old")
        missed = [p for p in stream.history if p.seq > since.seq]
        return Recovery(position, missed, recovered=True)

    async def room_exists(self, room: str) -> bool:
        return room in self._streams

    async def set_state(self, room: str, key: str, value: dict[str, Any] | None) -> None:
        stream = self._stream(room)
        stream.state_written = time.monotonic()
        state = stream.state
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value

    async def get_state(self, room: str) -> dict[str, Any]:
        stream = self._streams.get(room)
        return dict(stream.state) if stream is not None else {}

    async def add_likes(self, room: str, count: int) -> int:
        stream = self._stream(room)
        stream.likes += count
        return stream.likes

    async def get_likes(self, room: str) -> int:
        stream = self._streams.get(room)
        return stream.likes if stream is not None else 0

    async def set_presence(self, room: str, node_members: int, node_viewers: int) -> tuple[int, int]:
        stream = self._stream(room)
        stream.members, stream.viewers = node_members, node_viewers
        return node_members, node_viewers

    async def set_publisher(self, room: str, publisher: str, info: PublisherInfo | None) -> None:
        publishers = self._stream(room).publishers
        if info is None:
            publishers.pop(publisher, None)
        else:
            publishers[publisher] = info

    async def get_publishers(self, room: str) -> dict[str, PublisherInfo]:
        stream = self._streams.get(room)
        return dict(stream.publishers) if stream is not None else {}

    async def set_live_room(self, room: str, info: LiveRoomInfo | None) -> None:
        if info is None:
            self._live_rooms.pop(room, None)
        else:
            self._live_rooms[room] = info

    async def get_live_rooms(self, limit: int = 100) -> dict[str, LiveRoomInfo]:
        return {room: dict(self._live_rooms[room]) for room in sorted(self._live_rooms)[:limit]}  # type: ignore[misc]

    async def set_user(self, room: str, user: str, info: UserInfo | None) -> None:
        users = self._stream(room).users
        if info is None:
            users.pop(user, None)
        else:
            users[user] = info

    async def get_user(self, room: str, user: str) -> UserInfo | None:
        stream = self._streams.get(room)
        return stream.users.get(user) if stream is not None else None

    async def get_users(self, room: str) -> dict[str, UserInfo]:
        stream = self._streams.get(room)
        return dict(stream.users) if stream is not None else {}

    async def set_grant(self, room: str, grant_id: str, record: GrantRecord | None) -> None:
        stream = self._stream(room)
        if record is None:
            stream.grants.pop(grant_id, None)
            return
        stream.grants[grant_id] = record
        stream.state_written = time.monotonic()  # a live grant keeps the room's state alive

    async def get_grant(self, room: str, grant_id: str) -> GrantRecord | None:
        stream = self._streams.get(room)
        record = stream.grants.get(grant_id) if stream is not None else None
        return record if record is not None and record["expires"] > time.time() else None

    async def revoke(self, room: str, scope: str, cutoff: float, expires: float | None) -> None:
        old = self._revoked.get((room, scope))
        if old is not None:
            cutoff = max(cutoff, old[0])
            expires = None if expires is None or old[1] is None else max(expires, old[1])
        self._revoked[(room, scope)] = (cutoff, expires)

    async def get_revocations(self, room: str, scopes: list[str]) -> dict[str, float]:
        now = time.time()
        found = {}
        for scope in scopes:
            entry = self._revoked.get((room, scope))
            if entry is not None and (entry[1] is None or entry[1] > now):
                found[scope] = entry[0]
        return found

    async def gc(self) -> list[str]:
        dropped = []
        for room, stream in list(self._streams.items()):
            if stream.subscribed or stream.publishers:  # a room whose only member is a WHIP stream exists
                continue
            self._trim(stream)
            state_fresh = (stream.state or stream.grants) and time.monotonic() - stream.state_written < self._state_ttl
            if not stream.history and not state_fresh:
                del self._streams[room]
                dropped.append(room)
        return dropped

    @property
    def room_count(self) -> int:
        return len(self._streams)
