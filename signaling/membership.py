"""Joining and leaving rooms: who a connection is (its grant, or an anonymous viewer), whether it may enter
(the room exists, a private call admits only its parties), and the ``joined`` answer with the room's state
and whatever the connection missed since its resume position, written before any live event.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from typing import Any

from protocol import ErrorCode, Grant, ProtocolError, Ref, Role, now_ms
from signaling.analytics import AnalyticsSink
from signaling.brokers import BrokerUnavailable, EventStream, Recovery, Registry, RoomStore, StreamPosition
from signaling.config import ServerConfig
from signaling.hub import Hub
from signaling.media import MediaSignaling
from signaling.metrics import ServerMetrics
from signaling.moderation import Moderation
from signaling.outbound import OutboundEvent
from signaling.room import ChatRoom
from signaling.scenes import Scenes
from signaling.session import Session

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, config: ServerConfig, hub: Hub, stream: EventStream, store: RoomStore, registry: Registry,
                 scenes: Scenes, media: MediaSignaling | None, metrics: ServerMetrics, moderation: Moderation,
                 analytics: AnalyticsSink | None = None) -> None:
        self.config = config
        self.hub = hub
        self.stream = stream
        self.store = store
        self.registry = registry
        self.scenes = scenes
        self.media = media
        self.metrics = metrics
        self.moderation = moderation
        self.analytics = analytics or AnalyticsSink()
        # TURN credentials for a user (the ICE servers its peer connections use), when TURN is configured.
        self.ice_servers: Callable[[str], list[dict[str, Any]]] | None = None
        # Anonymous viewers' ids only need to differ (nothing is granted by one): no syscall per join.
        self._anonymous_ids = random.Random(secrets.randbits(64))

    async def join(self, session: Session, room_name: str, grant: Grant | None, name: str | None,
                   resume: StreamPosition | None, ref: Ref, history: int = 0, source: str | None = None,
                   device: str | None = None) -> None:
        """Join ``session`` to a room and write ``joined`` plus recovered events. Raises ProtocolError."""
        if session.joined:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, "already joined a room", ref)
        self._identify(session, room_name, grant, name, ref)
        try:
            if grant is not None:
                await self.check_grant(room_name, grant, ref)
            room = await self._enter(session, room_name, ref)
            if not session.anonymous:
                await self.moderation.check_join(room_name, session.user, ref)
        except BrokerUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        opened_here = not room.sessions
        session.room = room_name
        session.hold()  # live events wait until the recovered ones are written
        room.add(session, self.config.room.presence_max_names)
        self.metrics.connections.inc()
        try:
            if opened_here:
                # The room exists room-wide from this moment, not from the next presence tick: a viewer
                # joining on another node right after the host is not told `unknown_room`.
                await self.store.set_presence(room_name, len(room), room.viewer_count)
            recovery = await self.stream.recover(room_name, resume)
            if resume is None and history and recovery.position.seq:
                # A fresh view asking for the recent past: the last `history` events, as kept.
                top = recovery.position
                past = await self.stream.recover(room_name, StreamPosition(max(0, top.seq - history), top.epoch))
                if past.recovered:  # (history may have aged out: then there is none to show)
                    recovery.publications = [p for p in past.publications if p.seq <= top.seq]
            recovery.publications = await self.moderation.visible_history(room_name, recovery.publications)
            joined = await self._joined_message(session, room, recovery)
        except BrokerUnavailable as exc:
            self.leave(session)
            log.warning("join failed: broker", extra={"room": room_name, "error": repr(exc)})
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        viewer = self.analytics.joined(session, room_name, recovery.position.epoch, source, device)
        if viewer:
            joined["viewer"] = viewer  # this viewer's pseudonym in the room (the page's Buy links carry it)
        if ref is not None:
            joined["id"] = ref
        session.send(joined)
        self._write_recovered(session, recovery, resume)
        log.info("joined", extra={"session": session.id, "room": room_name, "user": session.user,
                                  "role": str(session.role), "recovered": recovery.recovered})

    def _identify(self, session: Session, room_name: str, grant: Grant | None, name: str | None, ref: Ref) -> None:
        if grant is None:
            if not self.config.allow_anonymous:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "a token is required to join", ref)
            session.user = f"anon-{self._anonymous_ids.getrandbits(32):08x}"
            session.role, session.anonymous = Role.VIEWER, True
            session.name = name
            return
        if grant.room != room_name:
            raise ProtocolError(ErrorCode.WRONG_ROOM, "token is for another room", ref)
        session.user, session.role, session.anonymous = grant.user, grant.role, False
        session.grant = grant
        session.name = grant.name or name

    async def check_grant(self, room_name: str, grant: Grant, ref: Ref) -> None:
        """A token joins (or opens an HTTP media session) only if not revoked and, for a server-issued
        grant, while that grant is live. Raises ProtocolError(revoked) or BrokerUnavailable."""
        await self.moderation.check_token(room_name, grant, ref)
        if grant.grant_id is not None:
            await self.check_grant_live(room_name, grant, ref)

    async def check_grant_live(self, room_name: str, grant: Grant, ref: Ref) -> None:
        """A server-issued grant (a seat's co-host token, a call token) joins only while it is live."""
        assert grant.grant_id is not None
        record = await self.registry.get_grant(room_name, grant.grant_id)
        if record is None or record["user"] != grant.user:
            raise ProtocolError(ErrorCode.REVOKED, "this grant was taken back (left the stage, or the call ended)",
                                ref)

    async def _enter(self, session: Session, room_name: str, ref: Ref) -> ChatRoom:
        """The local room to join, after the admission checks. Raises ProtocolError or BrokerUnavailable."""
        try:
            private = await self.scenes.admit(room_name, None if session.anonymous else session.user)
        except ProtocolError as exc:
            exc.ref = ref
            raise
        room = self.hub.room(room_name)
        # A host opens a room; anyone else needs it to exist (members, kept history, configured, or a private
        # call the server set up).
        if (room is None and session.role is not Role.HOST and not private
                and not await self.registry.room_exists(room_name)):
            raise ProtocolError(ErrorCode.UNKNOWN_ROOM, f"no room {room_name!r}", ref)
        return await self.hub.open_room(room_name)

    async def _joined_message(self, session: Session, room: ChatRoom, recovery: Recovery) -> dict[str, Any]:
        name = room.name
        state = await self.store.get_state(name)
        likes = await self.store.get_likes(name)
        if not session.anonymous:
            await self.registry.set_user(name, session.user, {"name": session.name, "role": str(session.role)})
        stage = state.get("stage") or await self.scenes.stage_view(name)
        joined: dict[str, Any] = {
            "type": "joined", "room": name, "user": session.user, "role": str(session.role),
            "epoch": recovery.position.epoch, "seq": recovery.position.seq,
            "recovered": recovery.recovered, "missed": len(recovery.publications),
            "state": {"pinned": state.get("pinned"), "product": state.get("product"), "likes": likes,
                      "members": len(room), "viewers": room.viewer_count,
                      "publishers": await self.media.publishers(name) if self.media else [],
                      "stage": stage, "pk": state.get("pk"), "call": state.get("call"),
                      "recording": state.get("recording"), "assistant": state.get("assistant"),
                      "slow_mode_s": (await self.moderation.rules(name)).slow_mode_s},
            "server_ts": now_ms(),
        }
        if recovery.reason is not None:
            joined["reason"] = recovery.reason
        if self.config.failover_nodes:
            joined["nodes"] = list(self.config.failover_nodes)
        if self.ice_servers is not None:
            joined["ice_servers"] = self.ice_servers(session.user)
        return joined

    @staticmethod
    def _write_recovered(session: Session, recovery: Recovery, resume: StreamPosition | None) -> None:
        if recovery.publications:
            session.last_seq = recovery.publications[0].seq - 1
        else:
            session.last_seq = resume.seq if recovery.recovered and resume else recovery.position.seq
        for publication in recovery.publications:
            session.deliver(OutboundEvent(publication.data))
        for event in session.release():
            session.deliver(event)

    def leave(self, session: Session) -> None:
        if session.media and self.media is not None:
            self.hub.spawn(self.media.close_session(session), f"media-close-{session.id}")
        if session.room is None:
            return
        self.analytics.left(session)
        room_name = session.room
        room = self.hub.room(room_name)
        if room is not None and room.remove(session, self.config.room.presence_max_names):
            self.metrics.connections.dec()
        session.room = None
        if not self.hub.closed and not session.anonymous:
            self.hub.spawn(self._user_left(session, room_name), f"scenes-leave-{session.id}")

    async def _user_left(self, session: Session, room_name: str) -> None:
        room = self.hub.room(room_name)
        if room is None or not any(s.user == session.user for s in room.sessions.values()):
            await self.registry.set_user(room_name, session.user, None)
        await self.scenes.on_leave(session, room_name)
