"""Media signaling: the WebSocket side of the SFU.

Turns ``publish`` / ``subscribe`` / ``candidate`` / ``unpublish`` / ``unsubscribe`` messages into calls
on the relay's ``MediaRouter`` (role-checked, one media id per peer connection), answers with the SDP,
and turns the router's events (a publisher joined or left) into ``media`` events for the room. Closing a
connection closes its media sessions.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from relay.router import MediaError, MediaRouter
from signaling.protocol import ErrorCode, ProtocolError, Role, now_ms
from signaling.session import Session

log = logging.getLogger(__name__)

_PUBLISHERS = (Role.HOST, Role.COHOST)


class MediaSignaling:
    def __init__(self, router: MediaRouter, on_setup: Callable[[str, float], None]) -> None:
        self.router = router
        # Rooms whose publishers a room's members may also subscribe to (PK links), set by the scenes.
        self.visible_rooms: Callable[[str], tuple[str, ...]] = lambda room: ()
        self._ids = itertools.count(1)
        self._on_setup = on_setup  # (kind, seconds from offer received to answer sent), for metrics
        self._owner: dict[str, Session] = {}

    def publishers(self, room: str) -> list[dict[str, Any]]:
        media_room = self.router.rooms.get(room)
        if media_room is None:
            return []
        return [{"publisher": p.id, "user": p.user, "kinds": sorted(p.tracks)}
                for p in media_room.publishers.values()]

    async def handle(self, session: Session, message: dict[str, Any]) -> None:
        kind = message["type"]
        ref = message.get("id")
        room = session.room
        assert room is not None
        started = time.perf_counter()
        media_id: str | None = None
        try:
            if kind == "publish":
                if session.role not in _PUBLISHERS:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "only a host or co-host can publish", ref)
                media_id = f"{session.id}-pub{next(self._ids)}"
                self._owner[media_id] = session
                session.media.add(media_id)
                sdp = await self.router.publish(room, media_id, session.user, message["sdp"])
                self._answer(session, ref, media_id, sdp, kind, started)
            elif kind == "subscribe":
                media_id = f"{session.id}-sub{next(self._ids)}"
                self._owner[media_id] = session
                session.media.add(media_id)
                sdp = await self.router.subscribe(room, media_id, session.user, message["sdp"],
                                                  message.get("publisher"), self.visible_rooms(room))
                self._answer(session, ref, media_id, sdp, kind, started)
            elif kind == "candidate":
                self._check_owner(session, message["media"], ref)
                await self.router.add_candidate(message["media"], message["candidate"])
            else:  # unpublish / unsubscribe
                self._check_owner(session, message["media"], ref)
                await self.close_media(message["media"])
                session.send({"type": "closed_media", "id": ref, "media": message["media"]})
        except MediaError as exc:
            if media_id is not None and kind in ("publish", "subscribe"):
                self._owner.pop(media_id, None)
                session.media.discard(media_id)
            raise ProtocolError(ErrorCode(exc.code), exc.message, ref) from None

    def _check_owner(self, session: Session, media_id: str, ref: Any) -> None:
        if media_id not in session.media:
            raise ProtocolError(ErrorCode.UNKNOWN_MEDIA, "no such media session on this connection", ref)

    def _answer(self, session: Session, ref: Any, media_id: str, sdp: str, kind: str, started: float) -> None:
        if session.closing:
            return
        session.send({"type": "answer", "id": ref, "media": media_id, "sdp": sdp, "server_ts": now_ms()})
        self._on_setup(kind, time.perf_counter() - started)

    async def close_media(self, media_id: str) -> None:
        session = self._owner.pop(media_id, None)
        if session is not None:
            session.media.discard(media_id)
        await self.router.close_peer(media_id)

    async def close_cross_room(self, room: str, other: str) -> None:
        """Close ``room``'s subscriptions to publishers of ``other`` (a PK link ended)."""
        media_room = self.router.rooms.get(room)
        if media_room is None:
            return
        for subscriber in list(media_room.subscribers.values()):
            sources = {d.source.publisher_id for d in subscriber.down_tracks}
            publishers = self.router.rooms.get(other)
            if publishers is not None and sources & set(publishers.publishers):
                await self.close_media(subscriber.id)

    async def close_session(self, session: Session) -> None:
        for media_id in list(session.media):
            await self.close_media(media_id)

    async def close(self) -> None:
        await self.router.close()
