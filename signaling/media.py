"""Media signaling: the WebSocket side of the SFU.

Turns ``publish`` / ``subscribe`` / ``candidate`` / ``unpublish`` / ``unsubscribe`` messages into calls
on the relay's ``MediaRouter`` (role-checked, one media id per peer connection), answers with the SDP,
and turns the router's events (a publisher joined or left) into ``media`` events for the room. Closing a
connection closes its media sessions.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from protocol import ErrorCode, ProtocolError, Role, now_ms
from relay.router import MediaError, MediaRouter, Publisher
from signaling.brokers import Broker
from signaling.cascade import EdgeCascade
from signaling.session import Session

log = logging.getLogger(__name__)

_PUBLISHERS = (Role.HOST, Role.COHOST)


async def _no_rooms(room: str) -> tuple[str, ...]:
    return ()


class MediaSignaling:
    def __init__(self, router: MediaRouter, on_setup: Callable[[str, float], None], broker: Broker,
                 node_url: str, cascade: EdgeCascade | None = None) -> None:
        self.router = router
        self.broker = broker
        self.node_url = node_url  # how other nodes reach this one (the registry says where publishers are)
        self.cascade = cascade
        self._registered: dict[str, str] = {}  # this node's publishers: media id -> room
        # Rooms whose publishers a room's members may also subscribe to (PK links), set by the scenes.
        self.visible_rooms: Callable[[str], Awaitable[tuple[str, ...]]] = _no_rooms
        self._ids = itertools.count(1)
        self._on_setup = on_setup  # (kind, seconds from offer received to answer sent), for metrics
        self._owner: dict[str, Session] = {}

    async def publishers(self, room: str) -> list[dict[str, Any]]:
        """The room's publishers on every node (the broker's registry), for joined.state."""
        registry = await self.broker.get_publishers(room)
        return [{"publisher": pid, "user": info["user"], "kinds": info["kinds"]} for pid, info in registry.items()]

    async def _register(self, room: str, media_id: str) -> None:
        publisher = self.router.peers.get(media_id)
        if isinstance(publisher, Publisher):
            self._registered[media_id] = room
            await self.broker.set_publisher(room, media_id, {"user": publisher.user, "kinds": sorted(publisher.tracks),
                                                             "node": self.node_url})

    async def unregister(self, media_id: str) -> None:
        room = self._registered.pop(media_id, None)
        if room is not None:
            await self.broker.set_publisher(room, media_id, None)

    async def refresh_registrations(self) -> None:
        """Registrations go stale unless refreshed: a node that dies drops out of every room's list."""
        for media_id, room in list(self._registered.items()):
            if media_id in self.router.peers:
                await self._register(room, media_id)
            else:
                await self.unregister(media_id)

    async def _pull_if_remote(self, room: str, publisher: str | None, visible: tuple[str, ...]) -> str | None:
        """If the wanted publisher is served by another node, mirror it here; return the id to use.
        A named publisher may be in a linked room (PK), so those rooms' registries are searched too."""
        if publisher is not None and publisher in self.router.peers:
            return publisher
        if publisher is None and self.router.publishers_of(room):
            return None  # the room's first local publisher
        for candidate_room in (room, *visible) if publisher is not None else (room,):
            registry = await self.broker.get_publishers(candidate_room)
            if publisher is None:
                publisher = next(iter(registry), None)
            info = registry.get(publisher) if publisher else None
            if info is not None:
                if self.cascade is not None and info["node"] != self.node_url:
                    await self.cascade.ensure(candidate_room, publisher, info)
                break
        return publisher

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
                await self._register(room, media_id)
                self._answer(session, ref, media_id, sdp, kind, started)
            elif kind == "subscribe":
                media_id = f"{session.id}-sub{next(self._ids)}"
                self._owner[media_id] = session
                session.media.add(media_id)
                visible = await self.visible_rooms(room)
                publisher = await self._pull_if_remote(room, message.get("publisher"), visible)
                sdp = await self.router.subscribe(room, media_id, session.user, message["sdp"], publisher, visible)
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
        await self.unregister(media_id)

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

    def publications(self, session: Session) -> list[str]:
        """The media ids this connection publishes."""
        return [m for m in session.media if isinstance(self.router.peers.get(m), Publisher)]

    async def close_session(self, session: Session) -> None:
        for media_id in list(session.media):
            await self.close_media(media_id)

    async def close(self) -> None:
        if self.cascade is not None:
            await self.cascade.close()
        for media_id in list(self._registered):
            with contextlib.suppress(Exception):  # the broker may be gone at shutdown; entries go stale anyway
                await self.unregister(media_id)
        await self.router.close()
