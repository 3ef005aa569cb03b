"""The hub: this node's rooms and their local connections, and the sink of what the broker delivers.

It keeps the registry of ``ChatRoom``s (one per room with a local presence), fans publications and
broadcasts out to their connections (after the scenes have looked at each broadcast), closes connections
off the hot path, and runs side work as tracked background tasks. It is also the scenes' view of this
node's members (``signaling.scenes.LocalMembers``). The rules of what clients may send live in
``channel`` (chat), ``membership`` (join/leave), ``scenes`` and ``media``; periodic work in ``ticker``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from protocol import CloseCode, now_ms
from signaling.brokers import EventStream, Publication
from signaling.metrics import ServerMetrics
from signaling.outbound import OutboundBatch, OutboundEvent
from signaling.room import ChatRoom, FanoutResult
from signaling.scenes import Member
from signaling.session import Session

log = logging.getLogger(__name__)

BroadcastObserver = Callable[[str, dict[str, Any]], bool]
"""(room, broadcast) -> True if it consumed the broadcast (it is then not fanned out)."""


class Hub:
    def __init__(self, stream: EventStream, metrics: ServerMetrics, shutdown_timeout: float = 5.0) -> None:
        self.stream = stream
        self.metrics = metrics
        self.shutdown_timeout = shutdown_timeout
        self.rooms: dict[str, ChatRoom] = {}
        self.closed = False
        self._observers: list[BroadcastObserver] = []
        self._publication_observers: list[Callable[[str, dict[str, Any]], object]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        stream.set_handlers(self._on_publication, self._on_broadcast, self._on_reset)

    def observe_broadcasts(self, observer: BroadcastObserver) -> None:
        self._observers.append(observer)

    def observe_publications(self, observer: Callable[[str, dict[str, Any]], object]) -> None:
        """Also see every durable event of this node's rooms (a recording's event log)."""
        self._publication_observers.append(observer)

    # -- rooms ----------------------------------------------------------------------------------------------

    def room(self, name: str) -> ChatRoom | None:
        return self.rooms.get(name)

    async def open_room(self, name: str) -> ChatRoom:
        """The local room ``name``, created (and followed in the broker) if this node had none."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = ChatRoom(name, self._record_fanout)
            await self.stream.subscribe(name)
        return room

    async def close_room(self, name: str) -> None:
        """Stop following an empty room here (the ticker's garbage collection)."""
        if self.rooms.pop(name, None) is not None:
            await self.stream.unsubscribe(name)

    # -- LocalMembers (the scenes' view of this node) -------------------------------------------------------

    def room_names(self) -> list[str]:
        return list(self.rooms)

    def members(self, room: str) -> list[Member]:
        chat = self.rooms.get(room)
        return list(chat.sessions.values()) if chat else []

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Background work (closing, media events while the broker is down) must not fail unseen.
            log.warning("background task failed: %s: %r", task.get_name(), task.exception())

    async def disconnect(self, member: Member, code: CloseCode, reason: str) -> None:
        assert isinstance(member, Session)  # the hub's members are its sessions
        self.metrics.disconnects.labels(code.name.lower()).inc()
        log.info("closing connection", extra={"session": member.id, "room": member.room,
                                              "code": int(code), "reason": reason})
        await member.close(code, reason)

    def kick(self, session: Session, code: CloseCode, reason: str) -> None:
        """Called by a session that must go (slow consumer): close it off the hot path."""
        self.spawn(self.disconnect(session, code, reason), f"close-{session.id}")

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def close(self, code: CloseCode = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close every connection with ``code`` (after their buffered writes), then await side work.
        Idempotent."""
        if self.closed:
            return
        self.closed = True
        sessions = [s for room in self.rooms.values() for s in room.sessions.values()]
        await asyncio.gather(*(s.close(code, reason, self.shutdown_timeout) for s in sessions),
                             return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- from the broker --------------------------------------------------------------------------------------

    def _on_publication(self, room_name: str, publication: Publication) -> None:
        for observe in self._publication_observers:
            observe(room_name, publication.data)
        self._fanout(room_name, OutboundEvent(publication.data))

    def _on_broadcast(self, room_name: str, data: dict[str, Any]) -> None:
        for observer in self._observers:
            if observer(room_name, data):
                return
        self._fanout(room_name, OutboundEvent(data))

    def _on_reset(self, room_name: str) -> None:
        """The broker lost the room's stream: local clients reconnect, resume, and learn the new epoch."""
        room = self.rooms.get(room_name)
        if room is None:
            return
        log.warning("room stream lost; asking its clients to resume", extra={"room": room_name})
        for session in list(room.sessions.values()):
            self.kick(session, CloseCode.GOING_AWAY, "room history lost; reconnect and resume")

    def _fanout(self, room_name: str, event: OutboundEvent) -> None:
        room = self.rooms.get(room_name)
        if room is not None:
            room.fanout(event)

    def _record_fanout(self, batch: OutboundBatch, result: FanoutResult) -> None:
        for kind, count in result.written.items():
            self.metrics.messages_out.labels(kind).inc(count)
        for reason, count in result.dropped.items():
            self.metrics.drops.labels(reason).inc(count)
        done = now_ms()
        for event in batch.events:
            received = event.message.get("server_ts")
            if event.seq is not None and received is not None:
                self.metrics.fanout_latency.labels(event.kind).observe(max(0.0, done - received) / 1000.0)
