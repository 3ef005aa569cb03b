"""The hub: a node's rooms and the rules of the message channel.

It joins sessions to rooms (with recovery), applies roles, limits and rate limits to what clients send,
publishes through the broker, and fans what the broker delivers out to local connections. The WebSocket
loop (``app.py``) decodes frames and hands validated messages here; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from protocol import (
    SCENE_KINDS,
    CloseCode,
    ErrorCode,
    Grant,
    ProtocolError,
    Role,
    ack_message,
    now_ms,
)
from signaling.brokers import Broker, Publication, StreamPosition
from signaling.config import ServerConfig
from signaling.media import MediaSignaling
from signaling.metrics import ServerMetrics
from signaling.outbound import OutboundBatch, OutboundEvent
from signaling.ratelimit import TokenBucket
from signaling.room import ChatRoom, FanoutResult
from signaling.scenes import Scenes
from signaling.session import Session

log = logging.getLogger(__name__)

_PUBLISHERS = (Role.HOST, Role.COHOST)
_MEDIA_MESSAGES = frozenset({"publish", "subscribe", "candidate", "unpublish", "unsubscribe"})


class Hub:
    def __init__(self, config: ServerConfig, broker: Broker, metrics: ServerMetrics,
                 media: MediaSignaling | None = None) -> None:
        self.config = config
        self.broker = broker
        self.metrics = metrics
        self.media = media
        self.scenes = Scenes(self, invite_ttl=config.room.invite_ttl, max_seats=config.room.stage_seats)
        if media is not None:
            media.visible_rooms = self.scenes.visible_rooms
        self.rooms: dict[str, ChatRoom] = {}
        self._user_buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        broker.set_handlers(self._on_publication, self._on_broadcast, self._on_reset)
        self._presence_reported: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()
        for room in self.config.rooms:
            await self.broker.subscribe(room)  # configured rooms exist from the start
            self.rooms.setdefault(room, ChatRoom(room, self._record_fanout))
        self._ticker = asyncio.create_task(self._tick_loop(), name="hub-ticker")

    async def close(self, code: CloseCode = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close every connection with ``code`` (after their buffered writes), then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        sessions = [s for room in self.rooms.values() for s in room.sessions.values()]
        timeout = self.config.shutdown_timeout
        await asyncio.gather(*(s.close(code, reason, timeout) for s in sessions), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.media is not None:
            await self.media.close()
        await self.broker.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Background work (closing, media events while the broker is down) must not fail unseen.
            log.warning("background task failed: %s: %r", task.get_name(), task.exception())

    def kick(self, session: Session, code: CloseCode, reason: str) -> None:
        """Called by a session that must go (slow consumer): close it off the hot path."""
        self._spawn(self.disconnect(session, code, reason), f"close-{session.id}")

    async def disconnect(self, session: Session, code: CloseCode, reason: str) -> None:
        self.metrics.disconnects.labels(code.name.lower()).inc()
        log.info("closing connection", extra={"session": session.id, "room": session.room,
                                              "code": int(code), "reason": reason})
        await session.close(code, reason)

    # -- membership -------------------------------------------------------------------------------------

    async def join(self, session: Session, room_name: str, grant: Grant | None, name: str | None,
                   resume: StreamPosition | None, ref: Any) -> None:
        """Join ``session`` to a room and write ``joined`` plus recovered events. Raises ProtocolError."""
        if session.joined:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, "already joined a room", ref)
        if grant is None:
            if not self.config.allow_anonymous:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "a token is required to join", ref)
            session.user, session.role, session.anonymous = f"anon-{secrets.token_hex(4)}", Role.VIEWER, True
            session.name = name
        else:
            if grant.room != room_name:
                raise ProtocolError(ErrorCode.WRONG_ROOM, "token is for another room", ref)
            session.user, session.role, session.anonymous = grant.user, grant.role, False
            session.name = grant.name or name
        try:
            private = await self.scenes.private_users(room_name)
        except Exception:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        if private is not None and (grant is None or grant.user not in private):
            raise ProtocolError(ErrorCode.FORBIDDEN, "a private call: only its two parties may join", ref)
        room = self.rooms.get(room_name)
        if room is None:
            # A host opens a room; anyone else needs it to exist (members, kept history, configured, or a
            # private call the server set up).
            if (session.role is not Role.HOST and private is None
                    and not await self.broker.room_exists(room_name)):
                raise ProtocolError(ErrorCode.UNKNOWN_ROOM, f"no room {room_name!r}", ref)
            room = self.rooms.get(room_name)  # another join may have created it meanwhile
            if room is None:
                room = self.rooms[room_name] = ChatRoom(room_name, self._record_fanout)
                await self.broker.subscribe(room_name)
        session.room = room_name
        session.hold()  # live events wait until the recovered ones are written
        room.add(session, self.config.room.presence_max_names)
        self.metrics.connections.inc()
        try:
            recovery = await self.broker.recover(room_name, resume)
            state = await self.broker.get_state(room_name)
            likes = await self.broker.get_likes(room_name)
            if not session.anonymous:
                await self.broker.set_user(room_name, session.user, {"name": session.name, "role": str(session.role)})
            stage = state.get("stage") or await self.scenes.stage_state(room_name)
        except Exception as exc:
            self.leave(session)
            log.warning("join failed: broker", extra={"room": room_name, "error": repr(exc)})
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        joined: dict[str, Any] = {
            "type": "joined", "room": room_name, "user": session.user, "role": str(session.role),
            "epoch": recovery.position.epoch, "seq": recovery.position.seq,
            "recovered": recovery.recovered, "missed": len(recovery.publications),
            "state": {"pinned": state.get("pinned"), "product": state.get("product"), "likes": likes,
                      "members": len(room), "viewers": room.viewer_count,
                      "publishers": await self.media.publishers(room_name) if self.media else [],
                      "stage": stage,
                      "pk": state.get("pk"), "call": state.get("call")},
            "server_ts": now_ms(),
        }
        if recovery.reason is not None:
            joined["reason"] = recovery.reason
        if ref is not None:
            joined["id"] = ref
        session.send(joined)
        if recovery.publications:
            session.last_seq = recovery.publications[0].seq - 1
        else:
            session.last_seq = resume.seq if recovery.recovered and resume else recovery.position.seq
        for publication in recovery.publications:
            session.deliver(OutboundEvent(publication.data))
        for event in session.release():
            session.deliver(event)
        log.info("joined", extra={"session": session.id, "room": room_name, "user": session.user,
                                  "role": str(session.role), "recovered": recovery.recovered})

    def leave(self, session: Session) -> None:
        if session.media and self.media is not None:
            self._spawn(self.media.close_session(session), f"media-close-{session.id}")
        if session.room is None:
            return
        room_name = session.room
        room = self.rooms.get(room_name)
        if room is not None and room.remove(session, self.config.room.presence_max_names):
            self.metrics.connections.dec()
        session.room = None
        if not self._closed and not session.anonymous:
            self._spawn(self._user_left(session, room_name), f"scenes-leave-{session.id}")

    # -- client messages --------------------------------------------------------------------------------

    async def handle(self, session: Session, message: dict[str, Any]) -> None:
        """Apply one validated message from a joined session. Raises ProtocolError."""
        kind = message["type"]
        ref = message.get("id")
        room = session.room
        assert room is not None
        limits = self.config.limits
        received = now_ms()
        if kind == "comment":
            if session.anonymous:
                raise ProtocolError(ErrorCode.FORBIDDEN, "anonymous viewers cannot comment", ref)
            text = message["text"]
            if len(text) > limits.max_comment_chars:
                raise ProtocolError(ErrorCode.TOO_LARGE,
                                    f"comment longer than {limits.max_comment_chars} characters", ref)
            # Hosts and co-hosts are the operator's own people: only the audience is rate-limited.
            if session.role is Role.VIEWER and not self._bucket(room, session.user, "comment",
                                                               limits.comment_rate, limits.comment_burst):
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many comments; slow down", ref)
            await self._publish(session, room, {"type": "comment", "text": text}, message, received)
        elif kind == "like":
            count = message.get("count", 1)
            if count > limits.max_like_count:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"count must be at most {limits.max_like_count}", ref)
            if not session.like_bucket.take():
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many likes; slow down", ref)
            self.rooms[room].pending_likes += count
        elif kind == "product":
            if session.role not in _PUBLISHERS:
                raise ProtocolError(ErrorCode.FORBIDDEN, "only a host or co-host can push products", ref)
            if not self._bucket(room, session.user, "product", limits.product_rate, limits.product_burst):
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many product pushes", ref)
            event = await self._publish(session, room, {"type": "product", "product": message["product"]},
                                        message, received)
            await self.broker.set_state(room, "product", event)
        elif kind == "announce":
            if session.role is not Role.HOST:
                raise ProtocolError(ErrorCode.FORBIDDEN, "only the host can announce", ref)
            text = message["text"]
            if len(text) > limits.max_announce_chars:
                raise ProtocolError(ErrorCode.TOO_LARGE,
                                    f"announcement longer than {limits.max_announce_chars} characters", ref)
            if not self._bucket(room, session.user, "product", limits.product_rate, limits.product_burst):
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many announcements", ref)
            pinned = message.get("pinned", False)
            event = await self._publish(session, room, {"type": "announce", "text": text, "pinned": pinned},
                                        message, received)
            if pinned:
                # Pinning an empty text clears the pinned message.
                await self.broker.set_state(room, "pinned", event if text else None)
        elif kind == "client_stats":
            if "call_setup_ms" in message:
                self.metrics.client_call_setup.observe(max(0.0, message["call_setup_ms"]) / 1000.0)
            if "first_frame_ms" in message:
                self.metrics.client_first_frame.observe(max(0.0, message["first_frame_ms"]) / 1000.0)
        elif kind in SCENE_KINDS:
            await self.scenes.handle(session, message)
        elif kind in _MEDIA_MESSAGES:
            if self.media is None:
                raise ProtocolError(ErrorCode.MEDIA_UNAVAILABLE, "this server runs without media", ref)
            await self.media.handle(session, message)
        else:  # join/leave/ping are handled by the connection loop
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unexpected {kind!r}", ref)
        self.metrics.messages_in.labels(kind).inc()

    def _bucket(self, room: str, user: str, what: str, rate: float, burst: int) -> bool:
        key = (room, user, what)
        bucket = self._user_buckets.get(key)
        if bucket is None:
            bucket = self._user_buckets[key] = TokenBucket(rate, burst)
        return bucket.take()

    async def _publish(self, session: Session, room: str, event: dict[str, Any], message: dict[str, Any],
                       received: float) -> dict[str, Any]:
        event["user"] = session.user
        event["role"] = str(session.role)
        if session.name:
            event["name"] = session.name
        sent = message.get("ts")
        if sent is not None:
            event["ts"] = sent
            self.metrics.uplink_latency.labels(event["type"]).observe(max(0.0, received - sent) / 1000.0)
        event["server_ts"] = received
        try:
            publication = await self.broker.publish(room, event)
        except Exception as exc:
            log.warning("broker publish failed", extra={"room": room, "error": repr(exc)})
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", message.get("id")) \
                from None
        ref = message.get("id")
        if ref is not None:
            session.send(ack_message(ref, publication.seq, publication.epoch))
        return publication.data

    # -- from the broker --------------------------------------------------------------------------------

    def _on_publication(self, room_name: str, publication: Publication) -> None:
        self._fanout(room_name, OutboundEvent(publication.data))

    def on_media_event(self, room_name: str, event: dict[str, Any]) -> None:
        """From the media router (publisher joined/left): tell the room."""
        message = {"type": "media", "room": room_name, **{("event" if k == "type" else k): v
                                                         for k, v in event.items()}, "server_ts": now_ms()}
        self._spawn(self._media_event(room_name, message), f"media-event-{room_name}")

    async def _media_event(self, room_name: str, message: dict[str, Any]) -> None:
        if message.get("event") == "publisher_left" and self.media is not None:
            await self.media.unregister(message["publisher"])
        await self.broker.broadcast(room_name, message)
        await self.scenes.on_publisher_change(room_name)

    async def _user_left(self, session: Session, room_name: str) -> None:
        room = self.rooms.get(room_name)
        if room is None or not any(s.user == session.user for s in room.sessions.values()):
            await self.broker.set_user(room_name, session.user, None)
        await self.scenes.on_leave(session, room_name)

    def _deliver_direct(self, room_name: str, envelope: dict[str, Any]) -> None:
        """A scene message for some users or roles of a room: deliver it to this node's connections and apply
        its side effects here (see signaling/scenes.py)."""
        actions = envelope.get("actions") or {}
        mute = actions.get("mute")
        if mute and self.media is not None:  # acts where the publisher is; a no-op elsewhere
            self.media.router.set_muted(room_name, mute["user"], mute["kind"], mute["muted"])
        room = self.rooms.get(room_name)
        users, roles = envelope.get("users"), envelope.get("roles")
        if room is None or (users is None and roles is None):
            return
        event = OutboundEvent(envelope["message"]) if envelope.get("message") else None
        for session in list(room.sessions.values()):
            if not ((users and session.user in users and not session.anonymous) or (roles and session.role in roles)):
                continue
            if "set_role" in actions:
                session.role = Role(actions["set_role"])
                self._spawn(self.broker.set_user(room_name, session.user, {"name": session.name,
                                                                            "role": str(session.role)}),
                            f"user-role-{session.id}")
            if actions.get("unpublish") and self.media is not None:
                for media_id in self.media.publications(session):
                    self._spawn(self.media.close_media(media_id), f"unpublish-{media_id}")
            if event is not None:
                session.deliver(event)
            if actions.get("close"):
                self._spawn(self.disconnect(session, CloseCode.NORMAL, actions["close"]), f"close-{session.id}")

    def _on_reset(self, room_name: str) -> None:
        """The broker lost the room's stream: local clients reconnect, resume, and learn the new epoch."""
        room = self.rooms.get(room_name)
        if room is None:
            return
        log.warning("room stream lost; asking its clients to resume", extra={"room": room_name})
        for session in list(room.sessions.values()):
            self.kick(session, CloseCode.GOING_AWAY, "room history lost; reconnect and resume")

    def _on_broadcast(self, room_name: str, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "_direct":
            self._deliver_direct(room_name, data)
            return
        if kind == "pk_ended" and self.media is not None:
            # Every node closes its own subscriptions across the link that ended.
            for other in data.get("rooms", []):
                if other != room_name:
                    self._spawn(self.media.close_cross_room(room_name, other), f"pk-close-{room_name}")
        self._fanout(room_name, OutboundEvent(data))

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

    # -- periodic work ----------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        cfg = self.config.room
        interval = min(cfg.likes_interval, cfg.presence_interval)
        next_presence = next_gc = next_scenes = next_registry = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            try:
                await self._flush_likes()
                if now >= next_scenes:
                    next_scenes = now + 0.5
                    await self.scenes.sweep()
                    await self.scenes.pk_tick()
                if now >= next_registry and self.media is not None:
                    next_registry = now + 5.0
                    await self.media.refresh_registrations()
                if now >= next_presence:
                    next_presence = now + cfg.presence_interval
                    await self._flush_presence()
                if now >= next_gc:
                    next_gc = now + 5.0
                    await self._collect_garbage()
            except Exception:
                # A broker hiccup must not end the ticker: log it and try again next tick.
                log.exception("hub tick failed")

    async def _flush_likes(self) -> None:
        for room in list(self.rooms.values()):
            if not room.pending_likes:
                continue
            delta, room.pending_likes = room.pending_likes, 0
            try:
                total = await self.broker.add_likes(room.name, delta)
            except Exception:
                room.pending_likes += delta  # kept for the next tick, not lost
                raise
            await self.broker.broadcast(room.name, {"type": "likes", "room": room.name, "total": total,
                                                    "delta": delta, "server_ts": now_ms()})

    async def _flush_presence(self) -> None:
        now = time.monotonic()
        for room in list(self.rooms.values()):
            # Report at least every few seconds even when nothing changed here: with several nodes the
            # room-wide counts are the sum of fresh reports.
            stale = now - self._presence_reported.get(room.name, 0.0) > 5.0
            if not room.presence_dirty and not stale:
                continue
            self._presence_reported[room.name] = now
            if not room.presence_dirty:
                await self.broker.set_presence(room.name, len(room), room.viewer_count)
                continue
            joined, left, overflowed = room.take_presence_changes()
            members, viewers = await self.broker.set_presence(room.name, len(room), room.viewer_count)
            await self.broker.broadcast(room.name, {
                "type": "presence", "room": room.name, "members": members, "viewers": viewers,
                "joined": joined, "left": left, "truncated": overflowed, "server_ts": now_ms()})

    async def _collect_garbage(self) -> None:
        for name, room in list(self.rooms.items()):
            if not room.sessions and not room.pending_likes and name not in self.config.rooms:
                del self.rooms[name]
                self._presence_reported.pop(name, None)
                await self.broker.unsubscribe(name)
        await self.broker.gc()
        self.metrics.rooms.set(len(self.rooms))
        for key, bucket in list(self._user_buckets.items()):
            if bucket.full:
                del self._user_buckets[key]

    async def room_count(self) -> int:
        return len(self.rooms)
