"""Media signaling: the WebSocket side of the SFU.

Turns ``publish`` / ``subscribe`` / ``candidate`` / ``unpublish`` / ``unsubscribe`` messages into calls
on the relay's ``MediaRouter`` (role-checked, one media id per peer connection), answers with the SDP,
registers this node's publishers room-wide (the registry says which node serves each, for the cascade),
and turns the router's events (a publisher joined or left) into ``media`` events for the room. Closing a
connection closes its media sessions. It is also the scenes' media port (mute, unpublish, close the
subscriptions across a PK link). It uses only the router's public commands and queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from protocol import ErrorCode, ProtocolError, Ref, Role, now_ms
from relay.router import MediaError, MediaRouter
from signaling.brokers import BrokerUnavailable, EventStream, LiveRoomInfo, PublisherInfo, Registry
from signaling.cascade import EdgeCascade
from signaling.config import LimitsConfig
from signaling.overload import LagGauge
from signaling.scenes.port import Member
from signaling.session import Session

log = logging.getLogger(__name__)

_PUBLISHERS = (Role.HOST, Role.COHOST)

MediaHandler = Callable[[Session, dict[str, Any]], Awaitable[None]]


async def _no_rooms(room: str) -> tuple[str, ...]:
    return ()


async def _a_show(room: str) -> bool:
    return True


class MediaSignaling:
    def __init__(self, router: MediaRouter, registry: Registry, stream: EventStream, node_url: str,
                 limits: LimitsConfig, on_setup: Callable[[str, float], None],
                 on_candidate_denied: Callable[[float], None],
                 spawn: Callable[[Coroutine[Any, Any, None], str], None],
                 cascade: EdgeCascade | None = None, load: LagGauge | None = None) -> None:
        self.router = router
        self.registry = registry
        self.stream = stream
        self.node_url = node_url  # how other nodes reach this one (the registry says where publishers are)
        self.limits = limits
        self._by_address: Counter[str] = Counter()  # media sessions held, by the owner's remote address
        self.cascade = cascade
        self.load = load  # the node's saturation: new subscriptions are refused while it lasts
        self.refused_overloaded = 0
        self._spawn = spawn
        self._registered: dict[str, str] = {}  # this node's publishers: media id -> room
        # Rooms whose publishers a room's members may also subscribe to (PK links): the scenes say.
        self.visible_rooms: Callable[[str], Awaitable[tuple[str, ...]]] = _no_rooms
        # Whether a room is a show (not a private call room): a show whose host publishes is in the index of
        # live rooms hosts pick a PK opponent from. The scenes say.
        self.is_show: Callable[[str], Awaitable[bool]] = _a_show
        self._live: dict[str, str] = {}  # this node's hosts on air in a show: media id -> room
        # Told when a room's publishers changed (the scenes re-announce seats and PK sides).
        self.on_publishers_changed: Callable[[str], Awaitable[None]] | None = None
        self._ids = itertools.count(1)
        self._on_setup = on_setup  # (kind, seconds from offer received to answer sent), for metrics
        self._on_candidate_denied = on_candidate_denied
        self._owner: dict[str, Session] = {}
        self._http_owner: dict[str, str] = {}  # WHIP/WHEP sessions: media id -> remote address
        self._http_prefix = secrets.token_hex(4)  # media ids are unique room-wide (several nodes)
        self._pending: dict[str, str] = {}  # media sessions not yet connected: media id -> owner's address
        # Subscriptions waiting for a user's publication, woken when a publisher joins their room.
        self._publication_waiters: dict[str, asyncio.Event] = {}

    def handlers(self) -> dict[str, MediaHandler]:
        return {"publish": self.publish, "subscribe": self.subscribe, "candidate": self.candidate,
                "unpublish": self.close_own, "unsubscribe": self.close_own, "video_quality": self.video_quality}

    # -- messages -------------------------------------------------------------------------------------------

    async def publish(self, session: Session, message: dict[str, Any]) -> None:
        ref, room = message.get("id"), _room_of(session)
        if session.role not in _PUBLISHERS:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a host or co-host can publish", ref)
        if self.limits.max_publish_per_conn and sum(
                1 for m in session.media if "-pub" in m) >= self.limits.max_publish_per_conn:
            raise ProtocolError(ErrorCode.TOO_MANY_MEDIA,
                                f"at most {self.limits.max_publish_per_conn} publications per connection", ref)
        started = time.perf_counter()
        media_id = self._adopt(session, "pub", ref)
        sdp = await self._start_publish(room, media_id, session.user, message["sdp"], ref, session.role)
        self._answer(session, ref, media_id, sdp, "publish", started)

    async def subscribe(self, session: Session, message: dict[str, Any]) -> None:
        ref, room = message.get("id"), _room_of(session)
        self._refuse_if_saturated(ref)
        started = time.perf_counter()
        if "media" in message:
            await self._renegotiate(session, message, started)
            return
        media_id = self._adopt(session, "sub", ref)
        publisher, user = message.get("publisher"), message.get("user")
        if publisher is None and user is not None:
            # The other side may not have published yet: answer once it has (off this connection's loop).
            self._spawn(self._subscribe_to_user(session, room, media_id, user, message["sdp"], ref, started),
                        f"subscribe-{media_id}")
            return
        sdp = await self._start_subscribe(room, media_id, session.user, message["sdp"], publisher, ref,
                                          keep=bool(message.get("keep")))
        self._answer(session, ref, media_id, sdp, "subscribe", started)

    async def _renegotiate(self, session: Session, message: dict[str, Any], started: float) -> None:
        """``subscribe`` with ``media``: a new offer on one of this connection's subscriptions, whose new
        sections carry the publisher asked for (no new handshake)."""
        ref, media_id, room = message.get("id"), message["media"], _room_of(session)
        self._check_owner(session, media_id, ref)
        if "user" in message:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "name a 'publisher' to add to a session, not a 'user'", ref)
        try:
            with self._counting_denied():
                visible = await self.visible_rooms(room)
                source = await self._pull_if_remote(room, message.get("publisher"), visible)
                sdp = await self.router.renegotiate(media_id, message["sdp"], source, visible)
        except MediaError as exc:
            if self.router.link_view(media_id) is None:
                self._forget(media_id)  # the offer broke the session: it is closed (peer_closed follows)
            raise ProtocolError(exc.code, exc.message, ref) from None
        self._answer(session, ref, media_id, sdp, "renegotiate", started)

    async def _subscribe_to_user(self, session: Session, room: str, media_id: str, user: str, offer: str,
                                 ref: Ref, started: float) -> None:
        try:
            wait = self.limits.publication_wait_s
            publisher = await self._publication_of(room, user, wait)
            if publisher is None:
                self._forget(media_id)
                raise ProtocolError(ErrorCode.NO_PUBLISHER, f"{user!r} did not publish within {wait:g} s", ref)
            sdp = await self._start_subscribe(room, media_id, session.user, offer, publisher, ref)
        except ProtocolError as exc:
            if not session.closing:
                session.send_error(exc.code, exc.message, ref)
            return
        self._answer(session, ref, media_id, sdp, "subscribe", started)

    async def _publication_of(self, room: str, user: str, timeout: float) -> str | None:
        """The id of ``user``'s publication in ``room`` (this node's, or another's through the registry),
        waiting up to ``timeout`` seconds for it to appear; None if it does not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            local = [p.id for p in self.router.publishers_of(room, user) if p.announced]
            if local:
                return local[0]
            try:
                registry = await self.registry.get_publishers(room)
            except BrokerUnavailable:
                registry = {}
            remote = next((pid for pid, info in registry.items() if info["user"] == user), None)
            if remote is not None:
                return remote
            left = deadline - loop.time()
            if left <= 0:
                self._publication_waiters.pop(room, None)  # (a waiter still there makes a new one)
                return None
            appeared = self._publication_waiters.setdefault(room, asyncio.Event())
            with contextlib.suppress(TimeoutError):  # a local publish wakes it; another node's is polled
                await asyncio.wait_for(appeared.wait(), min(left, 0.25))

    async def candidate(self, session: Session, message: dict[str, Any]) -> None:
        ref = message.get("id")
        self._check_owner(session, message["media"], ref)
        await self._add_candidate(message["media"], message["candidate"], ref)
        if ref is not None:
            session.send({"type": "ok", "id": ref})

    async def close_own(self, session: Session, message: dict[str, Any]) -> None:
        """``unpublish`` / ``unsubscribe``: close one of this connection's media sessions; ``unsubscribe``
        with ``publisher``: only that publisher's tracks leave the session, which stays."""
        ref = message.get("id")
        self._check_owner(session, message["media"], ref)
        if message.get("publisher") is not None:
            if not self.router.remove_from_session(message["media"], message["publisher"]):
                raise ProtocolError(ErrorCode.NOT_FOUND, "this session never carried that publisher", ref)
            session.send({"type": "ok", "id": ref})
            return
        await self.close_media(message["media"])
        session.send({"type": "closed_media", "id": ref, "media": message["media"]})

    async def video_quality(self, session: Session, message: dict[str, Any]) -> None:
        """``video_quality``: the highest layer one of this connection's subscriptions wants, or no video."""
        ref = message.get("id")
        self._check_owner(session, message["media"], ref)
        if not self.router.set_video_quality(message["media"], message["quality"], message.get("publisher")):
            raise ProtocolError(ErrorCode.UNKNOWN_MEDIA, "not a subscription of this connection", ref)
        if ref is not None:
            session.send({"type": "ok", "id": ref})

    def send_link_reports(self) -> None:
        """Tell each subscriber on this node what the relay knows of its link (a ``link`` message)."""
        for media_id, session in list(self._owner.items()):
            if session.closing or "-sub" not in media_id:
                continue
            view = self.router.link_view(media_id)
            if view is not None:
                session.send({"type": "link", "media": media_id, **view, "server_ts": now_ms()})

    def _refuse_if_saturated(self, ref: Ref) -> None:
        """A saturated node takes no new subscribers: those it carries keep their stream (signaling/overload.py)."""
        if self.load is not None and self.load.saturated:
            self.refused_overloaded += 1
            raise ProtocolError(ErrorCode.OVERLOADED, "this server is at capacity right now; try again shortly",
                                ref, retry_after_ms=self.load.retry_after_ms())

    def _check_bounds(self, remote: str, room: str, ref: Ref) -> None:
        limits = self.limits
        if limits.max_media_per_ip and self._by_address[remote] >= limits.max_media_per_ip:
            raise ProtocolError(ErrorCode.TOO_MANY_MEDIA, "too many media sessions from your address", ref)
        pending = self._pending_now()
        if limits.max_pending_media_per_ip and sum(
                1 for r in pending.values() if r == remote) >= limits.max_pending_media_per_ip:
            raise ProtocolError(ErrorCode.TOO_MANY_MEDIA,
                                "too many media sessions starting from your address; connect those first", ref)
        if limits.max_pending_media and len(pending) >= limits.max_pending_media:
            raise ProtocolError(ErrorCode.TOO_MANY_MEDIA, "too many media sessions starting on this server; retry",
                                ref)
        if limits.max_media_per_room and self.router.room_peer_count(
                room, connected_only=True) >= limits.max_media_per_room:
            raise ProtocolError(ErrorCode.TOO_MANY_MEDIA, "this room holds as many media sessions as it may", ref)

    def _pending_now(self) -> dict[str, str]:
        """Media sessions answered but not yet connected (media id -> owner's address); the connected and
        the gone are dropped as they are found."""
        for media_id in list(self._pending):
            gone = media_id not in self._owner and media_id not in self._http_owner
            if gone or self.router.peer_connected(media_id):
                del self._pending[media_id]
        return self._pending

    def _adopt(self, session: Session, what: str, ref: Ref) -> str:
        """A new media id for this connection, within the bounds. Raises ProtocolError(too_many_media)."""
        limits = self.limits
        if limits.max_media_per_conn and len(session.media) >= limits.max_media_per_conn:
            raise ProtocolError(ErrorCode.TOO_MANY_MEDIA,
                                f"at most {limits.max_media_per_conn} media sessions per connection", ref)
        self._check_bounds(session.remote, _room_of(session), ref)
        media_id = f"{session.id}-{what}{next(self._ids)}"
        self._owner[media_id] = session
        session.media.add(media_id)
        self._by_address[session.remote] += 1
        self._pending[media_id] = session.remote
        return media_id

    def _forget(self, media_id: str) -> None:
        """The media session is over (closed by anyone, or never started): free its slot."""
        session = self._owner.pop(media_id, None)
        remote = self._http_owner.pop(media_id, None)
        self._pending.pop(media_id, None)
        if session is not None:
            session.media.discard(media_id)
            remote = session.remote
        if remote is not None:
            self._by_address[remote] -= 1
            if self._by_address[remote] <= 0:
                del self._by_address[remote]

    # -- media sessions over plain HTTP (WHIP ingest, WHEP playback; see signaling/whip.py) -------------------

    def _adopt_http(self, remote: str, room: str, what: str) -> str:
        self._check_bounds(remote, room, None)
        media_id = f"{self._http_prefix}-{what}{next(self._ids)}"
        self._http_owner[media_id] = remote
        self._by_address[remote] += 1
        self._pending[media_id] = remote
        return media_id

    async def publish_http(self, room: str, user: str, remote: str, offer: str) -> tuple[str, str]:
        """A publisher with no WebSocket (OBS over WHIP): (media id, answer SDP). Raises ProtocolError."""
        media_id = self._adopt_http(remote, room, "whip")
        return media_id, await self._start_publish(room, media_id, user, offer, None)

    async def subscribe_http(self, room: str, user: str, remote: str, offer: str,
                             publisher: str | None) -> tuple[str, str]:
        """A player with no WebSocket (WHEP): (media id, answer SDP) for the room's (or a named) publisher."""
        self._refuse_if_saturated(None)
        media_id = self._adopt_http(remote, room, "whep")
        # A WHEP player has no channel to hear of a new publisher: its session follows the publisher's
        # restarts (an encoder's reconnect) instead of ending with it.
        return media_id, await self._start_subscribe(room, media_id, user, offer, publisher, None, follows=True)

    def owns_http(self, media_id: str) -> bool:
        return media_id in self._http_owner

    async def candidates_http(self, media_id: str, candidates: list[dict[str, Any]]) -> None:
        """Trickled candidates of an HTTP-owned session. Raises ProtocolError."""
        for candidate in candidates:
            await self._add_candidate(media_id, candidate, None)

    # -- what both kinds of owner share ---------------------------------------------------------------------

    async def _start_publish(self, room: str, media_id: str, user: str, offer: str, ref: Ref,
                             role: str = "host") -> str:
        with self._media_errors(media_id, ref), self._counting_denied():
            answer = await self.router.publish(room, media_id, user, offer, role)
        await self._register(room, media_id)
        return answer

    async def _start_subscribe(self, room: str, media_id: str, user: str, offer: str, publisher: str | None,
                               ref: Ref, follows: bool = False, keep: bool = False) -> str:
        with self._media_errors(media_id, ref), self._counting_denied():
            visible = await self.visible_rooms(room)
            source = await self._pull_if_remote(room, publisher, visible)
            return await self.router.subscribe(room, media_id, user, offer, source, visible, follows, keep)

    async def _add_candidate(self, media_id: str, candidate: dict[str, Any], ref: Ref) -> None:
        with self._media_errors(None, ref):
            if not await self.router.add_candidate(media_id, candidate):
                self._on_candidate_denied(1)

    @contextlib.contextmanager
    def _counting_denied(self) -> Any:
        """Candidates the router dropped from an offer (denied networks) count as trickled ones do."""
        before = self.router.candidates_denied
        try:
            yield
        finally:
            if self.router.candidates_denied > before:
                self._on_candidate_denied(self.router.candidates_denied - before)

    @contextlib.contextmanager
    def _media_errors(self, media_id: str | None, ref: Ref) -> Any:
        """A MediaError becomes the client's error; a media session that failed to start is forgotten."""
        try:
            yield
        except MediaError as exc:
            if media_id is not None:
                self._forget(media_id)
            raise ProtocolError(exc.code, exc.message, ref) from None

    def _check_owner(self, session: Session, media_id: str, ref: Ref) -> None:
        if media_id not in session.media:
            raise ProtocolError(ErrorCode.UNKNOWN_MEDIA, "no such media session on this connection", ref)

    def _answer(self, session: Session, ref: Ref, media_id: str, sdp: str, kind: str, started: float) -> None:
        if session.closing:
            return
        answer: dict[str, Any] = {"type": "answer", "id": ref, "media": media_id, "sdp": sdp, "server_ts": now_ms()}
        if kind != "publish":
            answer["publishers"] = self.router.session_publishers(media_id)  # what the session carries now
        session.send(answer)
        self._on_setup(kind, time.perf_counter() - started)

    # -- the registry and the cascade ---------------------------------------------------------------------

    async def publishers(self, room: str) -> list[dict[str, Any]]:
        """The room's publishers on every node (the broker's registry), for joined.state."""
        registry = await self.registry.get_publishers(room)
        return [{"publisher": pid, "user": info["user"], "kinds": info["kinds"],
                 **({"name": info["name"]} if info.get("name") else {})} for pid, info in registry.items()]

    def _name_of(self, media_id: str) -> str | None:
        """The display name of the connection that published ``media_id`` (None: none, or over HTTP)."""
        owner = self._owner.get(media_id)
        return owner.name if owner is not None else None

    async def _register(self, room: str, media_id: str) -> None:
        source = self.router.source(media_id)
        if source is not None and source.local:
            self._registered[media_id] = room
            info: PublisherInfo = {"user": source.user, "kinds": list(source.kinds), "node": self.node_url}
            name = self._name_of(media_id)
            if name:
                info["name"] = name
            await self.registry.set_publisher(room, media_id, info)
            if source.role == "host" and (media_id in self._live or await self.is_show(room)):
                self._live[media_id] = room
                live: LiveRoomInfo = {"host": source.user, "node": self.node_url}
                if name:
                    live["name"] = name
                await self.registry.set_live_room(room, live)

    async def unregister(self, media_id: str) -> None:
        room = self._registered.pop(media_id, None)
        if room is not None:
            await self.registry.set_publisher(room, media_id, None)
        live_room = self._live.pop(media_id, None)
        if live_room is not None and live_room not in self._live.values():
            await self.registry.set_live_room(live_room, None)

    async def live_rooms(self, room: str) -> list[dict[str, Any]]:
        """Shows whose host is on air, on every node, but ``room`` itself: whom its host can invite to a PK."""
        rooms = await self.registry.get_live_rooms()
        return [{"room": name, "host": info["host"], **({"name": info["name"]} if info.get("name") else {})}
                for name, info in rooms.items() if name != room]

    async def refresh_registrations(self) -> None:
        """Registrations go stale unless refreshed: a node that dies drops out of every room's list."""
        for media_id, room in list(self._registered.items()):
            if self.router.source(media_id) is not None:
                await self._register(room, media_id)
            else:
                await self.unregister(media_id)

    async def _pull_if_remote(self, room: str, publisher: str | None, visible: tuple[str, ...]) -> str | None:
        """If the wanted publisher is served by another node, mirror it here; return the id to use.
        A named publisher may be in a linked room (PK), so those rooms' registries are searched too."""
        if publisher is not None and self.router.source(publisher) is not None:
            return publisher
        if publisher is None and self.router.has_local_publisher(room):
            return None  # the room's first local publisher
        for candidate_room in (room, *visible) if publisher is not None else (room,):
            try:
                registry = await self.registry.get_publishers(candidate_room)
            except BrokerUnavailable:
                raise MediaError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry") from None
            wanted = publisher if publisher is not None else next(iter(registry), None)
            info = registry.get(wanted) if wanted is not None else None
            if wanted is not None and info is not None:
                if self.cascade is not None and info["node"] != self.node_url:
                    await self.cascade.ensure(candidate_room, wanted, info)
                return wanted
        return publisher

    # -- router events --------------------------------------------------------------------------------------

    def on_router_event(self, room: str, event: dict[str, Any]) -> None:
        """From the media router (publisher joined/left): tell the room, off the router's call stack."""
        if event["type"] == "peer_closed":  # for us, not the room: its owner's slot is free again
            self._forget(event["peer"])
            return
        if event["type"] == "publisher_joined":  # subscriptions waiting for a user's publication look again
            waiting = self._publication_waiters.pop(room, None)
            if waiting is not None:
                waiting.set()
            name = self._name_of(event["publisher"])
            if name:  # what viewers label its tile with, as they label its comments
                event = {**event, "name": name}
        message = {"type": "media", "room": room, **{("event" if k == "type" else k): v for k, v in event.items()},
                   "server_ts": now_ms()}
        self._spawn(self._announce(room, message), f"media-event-{room}")

    async def _announce(self, room: str, message: dict[str, Any]) -> None:
        if message.get("event") == "publisher_left":
            await self.unregister(message["publisher"])
        await self.stream.broadcast(room, message)
        if self.on_publishers_changed is not None:
            await self.on_publishers_changed(room)

    # -- the scenes' media port -----------------------------------------------------------------------------

    def set_muted(self, room: str, user: str, kind: str, muted: bool) -> int:
        return self.router.set_muted(room, user, kind, muted)

    async def unpublish(self, member: Member) -> None:
        session = self._session_of(member)
        if session is not None:
            for media_id in [m for m in session.media if self.router.is_publisher(m)]:
                await self.close_media(media_id)

    async def close_cross_room(self, room: str, other: str) -> None:
        for subscriber_id in self.router.subscriptions_across(room, other):
            if not self.router.drop_room_from_session(subscriber_id, other):  # a viewer's one connection stays
                await self.close_media(subscriber_id)

    def _session_of(self, member: Member) -> Session | None:
        return member if isinstance(member, Session) else None

    # -- closing --------------------------------------------------------------------------------------------

    async def close_media(self, media_id: str) -> None:
        self._forget(media_id)
        await self.router.close_peer(media_id)
        await self.unregister(media_id)

    async def close_session(self, session: Session) -> None:
        for media_id in list(session.media):
            await self.close_media(media_id)

    async def close(self) -> None:
        if self.cascade is not None:
            await self.cascade.close()
        for media_id in list(self._registered):
            with contextlib.suppress(BrokerUnavailable):  # the broker may be gone at shutdown; entries go stale
                await self.unregister(media_id)
        await self.router.close()


def _room_of(session: Session) -> str:
    assert session.room is not None  # the dispatch table routes only joined connections here
    return session.room
