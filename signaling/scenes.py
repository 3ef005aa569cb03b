"""Live-commerce scenes: the stage (co-hosts, "lianmai"), PK links between two rooms, and switching a
viewer into a private 1v1 call.

Every scene is driven by WebSocket messages (``stage_*``, ``pk_*``, ``call_*``), checked against roles,
and announced to the room as events; its current state is kept in the broker's room state (``stage``,
``pk``, ``call``), so a client that joins or resumes late gets the scene as it is, not only what changes
next. Invitations and requests expire. Media effects go through the relay: a promoted co-host may
publish, a PK lets each room subscribe to the other's publishers, a host in a private call can stop the
show receiving their video.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, ProtocolError, Role, now_ms
from signaling.session import Session
from signaling.tokens import issue_token

if TYPE_CHECKING:
    from signaling.hub import Hub


@dataclass
class Seat:
    seat: int
    user: str
    name: str | None
    muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})


@dataclass
class Stage:
    max_seats: int
    seats: dict[str, Seat] = field(default_factory=dict)  # by user
    requests: dict[str, float] = field(default_factory=dict)  # user -> expiry (monotonic)
    invites: dict[str, float] = field(default_factory=dict)
    moderators: set[str] = field(default_factory=set)  # co-hosts the host allows to answer requests


@dataclass
class PkLink:
    rooms: tuple[str, str]
    hosts: dict[str, str]  # room -> host user
    started_ms: float
    ends_at: float  # monotonic
    ends_at_ms: float
    base_likes: dict[str, int]
    scores: dict[str, int] = field(default_factory=dict)


@dataclass
class PkInvite:
    from_room: str
    from_user: str
    to_room: str
    duration_s: int
    expires: float


@dataclass
class Call:
    show: str
    private_room: str
    host: str
    guest: str
    keep_video: bool
    started_ms: float


@dataclass
class CallInvite:
    host: str
    guest: str
    keep_video: bool
    expires: float


class Scenes:
    def __init__(self, hub: Hub, invite_ttl: float = 30.0, max_seats: int = 6, pk_duration: int = 300) -> None:
        self.hub = hub
        self.invite_ttl = invite_ttl
        self.max_seats = max_seats
        self.pk_duration = pk_duration
        self.stages: dict[str, Stage] = {}
        self.pk: dict[str, PkLink] = {}  # both rooms of a link point at it
        self.pk_invites: dict[tuple[str, str], PkInvite] = {}
        self.calls: dict[str, Call] = {}  # by show room
        self.call_invites: dict[str, CallInvite] = {}  # by show room
        self.private_rooms: dict[str, set[str]] = {}  # private call room -> the two users allowed in

    # -- helpers ----------------------------------------------------------------------------------------

    def _sessions(self, room: str, user: str) -> list[Session]:
        chat = self.hub.rooms.get(room)
        return [s for s in chat.sessions.values() if s.user == user] if chat else []

    def _tell(self, room: str, user: str, message: dict[str, Any]) -> bool:
        sessions = self._sessions(room, user)
        message.setdefault("server_ts", now_ms())
        for s in sessions:
            s.send(message)
        return bool(sessions)

    def _require(self, session: Session, roles: tuple[Role, ...], what: str, ref: Any) -> None:
        if session.role not in roles:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only {' or '.join(r.value for r in roles)} can {what}", ref)

    def stage(self, room: str) -> Stage:
        stage = self.stages.get(room)
        if stage is None:
            stage = self.stages[room] = Stage(self.max_seats)
        return stage

    def visible_rooms(self, room: str) -> tuple[str, ...]:
        link = self.pk.get(room)
        return tuple(r for r in link.rooms if r != room) if link else ()

    def is_private(self, room: str) -> bool:
        return room in self.private_rooms

    def may_join_private(self, room: str, user: str) -> bool:
        return user in self.private_rooms.get(room, set())

    # -- state snapshots (what joined.state and the events carry) ---------------------------------------

    def stage_state(self, room: str) -> dict[str, Any]:
        stage = self.stage(room)
        media = self.hub.media
        seats = []
        for seat in sorted(stage.seats.values(), key=lambda s: s.seat):
            pubs = [p.id for p in media.router.publishers_of(room, seat.user)] if media else []
            seats.append({"seat": seat.seat, "user": seat.user, "name": seat.name, "publishers": pubs,
                          "muted": dict(seat.muted), "moderator": seat.user in stage.moderators})
        return {"max_seats": stage.max_seats, "seats": seats}

    def pk_state(self, room: str) -> dict[str, Any] | None:
        link = self.pk.get(room)
        if link is None:
            return None
        media = self.hub.media
        sides = [{"room": r, "host": link.hosts[r], "score": link.scores.get(r, 0),
                  "publishers": [p.id for p in media.router.publishers_of(r)] if media else []}
                 for r in link.rooms]
        return {"sides": sides, "started_ms": link.started_ms, "ends_at_ms": link.ends_at_ms}

    def call_state(self, room: str) -> dict[str, Any] | None:
        call = self.calls.get(room)
        if call is None:
            return None
        return {"host": call.host, "guest": call.guest, "keep_video": call.keep_video, "started_ms": call.started_ms}

    async def _announce(self, room: str, kind: str) -> None:
        """Store the scene's state for late joiners and broadcast it to the room."""
        state = {"stage": self.stage_state, "pk": self.pk_state, "call": self.call_state}[kind](room)
        await self.hub.broker.set_state(room, kind, state)
        await self.hub.broker.broadcast(room, {"type": kind, "room": room, "state": state, "server_ts": now_ms()})

    # -- messages ---------------------------------------------------------------------------------------

    async def handle(self, session: Session, message: dict[str, Any]) -> None:
        kind = message["type"]
        handler = getattr(self, f"_on_{kind}")
        await handler(session, session.room, message, message.get("id"))
        if message.get("id") is not None:
            session.send({"type": "ok", "id": message["id"]})

    # stage -----------------------------------------------------------------------------------------------

    async def _on_stage_request(self, s: Session, room: str, m: dict, ref: Any) -> None:
        if s.anonymous or s.role is not Role.VIEWER:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a signed-in viewer can ask to join the stage", ref)
        stage = self.stage(room)
        if s.user in stage.requests or s.user in stage.seats:
            raise ProtocolError(ErrorCode.BUSY, "already asked or on stage", ref)
        if len(stage.seats) >= stage.max_seats:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        stage.requests[s.user] = time.monotonic() + self.invite_ttl
        for host in self._moderators(room):
            host.send({"type": "stage_requested", "room": room, "user": s.user, "name": s.name,
                       "expires_in_s": self.invite_ttl, "server_ts": now_ms()})

    async def _on_stage_cancel(self, s: Session, room: str, m: dict, ref: Any) -> None:
        if self.stage(room).requests.pop(s.user, None) is None:
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request", ref)
        for host in self._moderators(room):
            host.send({"type": "stage_request_cancelled", "room": room, "user": s.user, "server_ts": now_ms()})

    def _hosts(self, room: str) -> list[Session]:
        chat = self.hub.rooms.get(room)
        return [x for x in chat.sessions.values() if x.role is Role.HOST] if chat else []

    def _moderators(self, room: str) -> list[Session]:
        """The host and the co-hosts allowed to answer stage requests."""
        chat = self.hub.rooms.get(room)
        allowed = self.stage(room).moderators
        return [x for x in chat.sessions.values()
                if x.role is Role.HOST or (x.role is Role.COHOST and x.user in allowed)] if chat else []

    def _require_moderator(self, s: Session, room: str, what: str, ref: Any) -> None:
        if s.role is Role.HOST or (s.role is Role.COHOST and s.user in self.stage(room).moderators):
            return
        raise ProtocolError(ErrorCode.FORBIDDEN, f"only the host or a co-host the host allows can {what}", ref)

    async def _on_stage_allow(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "allow co-hosts to answer requests", ref)
        stage = self.stage(room)
        if m["user"] not in stage.seats:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        if m["allowed"]:
            stage.moderators.add(m["user"])
        else:
            stage.moderators.discard(m["user"])
        await self._announce(room, "stage")

    async def _on_stage_accept(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require_moderator(s, room, "accept stage requests", ref)
        stage = self.stage(room)
        expiry = stage.requests.pop(m["user"], None)
        if expiry is None or expiry < time.monotonic():
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request from that user", ref)
        await self._promote(room, m["user"], ref)

    async def _on_stage_reject(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require_moderator(s, room, "reject stage requests", ref)
        if self.stage(room).requests.pop(m["user"], None) is None:
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request from that user", ref)
        self._tell(room, m["user"], {"type": "stage_rejected", "room": room})

    async def _on_stage_invite(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "invite to the stage", ref)
        stage = self.stage(room)
        target = m["user"]
        if target in stage.seats:
            raise ProtocolError(ErrorCode.BUSY, "already on stage", ref)
        if len(stage.seats) >= stage.max_seats:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        sessions = [x for x in self._sessions(room, target) if not x.anonymous]
        if not sessions:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed-in user in this room", ref)
        stage.invites[target] = time.monotonic() + self.invite_ttl
        for x in sessions:
            x.send({"type": "stage_invited", "room": room, "from": s.user, "expires_in_s": self.invite_ttl,
                    "server_ts": now_ms()})

    async def _on_stage_invite_answer(self, s: Session, room: str, m: dict, ref: Any) -> None:
        stage = self.stage(room)
        expiry = stage.invites.pop(s.user, None)
        if expiry is None or expiry < time.monotonic():
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending stage invitation", ref)
        if m["accept"]:
            await self._promote(room, s.user, ref)
        else:
            for host in self._hosts(room):
                host.send({"type": "stage_declined", "room": room, "user": s.user, "server_ts": now_ms()})

    async def _promote(self, room: str, user: str, ref: Any) -> None:
        """Seat a viewer and make them a co-host: the server issues the upgraded grant."""
        stage = self.stage(room)
        if len(stage.seats) >= stage.max_seats:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        sessions = [x for x in self._sessions(room, user) if not x.anonymous]
        if not sessions:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is no longer in the room", ref)
        taken = {seat.seat for seat in stage.seats.values()}
        number = next(n for n in range(1, stage.max_seats + 1) if n not in taken)
        stage.seats[user] = Seat(number, user, sessions[0].name)
        token = issue_token(self.hub.config.secret, room, user, Role.COHOST, 4 * 3600, sessions[0].name)
        for x in sessions:
            x.role = Role.COHOST
            x.send({"type": "grant", "room": room, "role": "cohost", "token": token, "seat": number,
                    "server_ts": now_ms()})
        await self._announce(room, "stage")

    async def _on_stage_mute(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "mute co-hosts", ref)
        seat = self.stage(room).seats.get(m["user"])
        if seat is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        seat.muted[m["kind"]] = m["muted"]
        if self.hub.media is not None:
            self.hub.media.router.set_muted(room, m["user"], m["kind"], m["muted"])
        await self._announce(room, "stage")

    async def _on_stage_remove(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "remove co-hosts", ref)
        if m["user"] not in self.stage(room).seats:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        await self._unseat(room, m["user"], "removed")

    async def _on_stage_leave(self, s: Session, room: str, m: dict, ref: Any) -> None:
        if s.user not in self.stage(room).seats:
            raise ProtocolError(ErrorCode.NOT_FOUND, "you are not on stage", ref)
        await self._unseat(room, s.user, "left")

    async def _unseat(self, room: str, user: str, reason: str) -> None:
        self.stage(room).seats.pop(user, None)
        self.stage(room).moderators.discard(user)
        for x in self._sessions(room, user):
            if x.role is Role.COHOST:
                x.role = Role.VIEWER
            x.send({"type": "grant", "room": room, "role": "viewer", "reason": reason, "server_ts": now_ms()})
            if self.hub.media is not None:  # stop what they publish here
                for media_id in self.hub.media.publications(x):
                    await self.hub.media.close_media(media_id)
        await self._announce(room, "stage")

    # PK ---------------------------------------------------------------------------------------------------

    async def _on_pk_invite(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "start a PK", ref)
        other = m["room"]
        if other == room:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "a PK links two different rooms", ref)
        if room in self.pk or other in self.pk:
            raise ProtocolError(ErrorCode.BUSY, "one of the rooms is already in a PK", ref)
        if not self._hosts(other):
            raise ProtocolError(ErrorCode.NOT_FOUND, "that room has no host on air", ref)
        invite = PkInvite(room, s.user, other, m.get("duration_s", self.pk_duration),
                          time.monotonic() + self.invite_ttl)
        self.pk_invites[(room, other)] = invite
        for host in self._hosts(other):
            host.send({"type": "pk_invited", "room": other, "from_room": room, "from": s.user,
                       "duration_s": invite.duration_s, "expires_in_s": self.invite_ttl, "server_ts": now_ms()})

    async def _on_pk_answer(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "answer a PK", ref)
        invite = self.pk_invites.pop((m["room"], room), None)
        if invite is None or invite.expires < time.monotonic():
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending PK invitation from that room", ref)
        if not m["accept"]:
            self._tell(invite.from_room, invite.from_user, {"type": "pk_declined", "room": invite.from_room,
                                                            "by_room": room})
            return
        if invite.from_room in self.pk or room in self.pk:
            raise ProtocolError(ErrorCode.BUSY, "one of the rooms is already in a PK", ref)
        rooms = (invite.from_room, room)
        likes = {r: await self.hub.broker.get_likes(r) for r in rooms}
        link = PkLink(rooms, {invite.from_room: invite.from_user, room: s.user}, now_ms(),
                      time.monotonic() + invite.duration_s, now_ms() + invite.duration_s * 1000, likes,
                      dict.fromkeys(rooms, 0))
        for r in rooms:
            self.pk[r] = link
        for r in rooms:
            await self._announce(r, "pk")

    async def _on_pk_end(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "end a PK", ref)
        if room not in self.pk:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no PK to end", ref)
        await self.end_pk(room, f"ended by {s.user}")

    async def end_pk(self, room: str, reason: str) -> None:
        link = self.pk.get(room)
        if link is None:
            return
        for r in link.rooms:
            self.pk.pop(r, None)
        for r in link.rooms:
            await self.hub.broker.set_state(r, "pk", None)
            await self.hub.broker.broadcast(r, {"type": "pk_ended", "room": r, "reason": reason,
                                                "scores": dict(link.scores), "server_ts": now_ms()})
        # Subscriptions across the link end: close this room's subscribers of the other room's publishers.
        media = self.hub.media
        if media is not None:
            for r in link.rooms:
                other = next(x for x in link.rooms if x != r)
                await media.close_cross_room(r, other)

    async def pk_tick(self) -> None:
        """Scores (likes during the PK) a few times a second; the link ends when its time is up."""
        seen: set[int] = set()
        for link in list(self.pk.values()):
            if id(link) in seen:
                continue
            seen.add(id(link))
            for r in link.rooms:
                link.scores[r] = await self.hub.broker.get_likes(r) - link.base_likes[r]
            remaining = max(0.0, link.ends_at - time.monotonic())
            for r in link.rooms:
                await self.hub.broker.broadcast(r, {"type": "pk_score", "room": r, "scores": dict(link.scores),
                                                    "remaining_s": round(remaining, 1), "server_ts": now_ms()})
            if remaining <= 0:
                await self.end_pk(link.rooms[0], "time is up")

    # switch to 1v1 -------------------------------------------------------------------------------------------

    async def _on_call_invite(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "start a private call", ref)
        if room in self.calls or room in self.call_invites:
            raise ProtocolError(ErrorCode.BUSY, "a private call is already on", ref)
        guest = m["user"]
        if guest == s.user or not [x for x in self._sessions(room, guest) if not x.anonymous]:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed-in viewer in this room", ref)
        self.call_invites[room] = CallInvite(s.user, guest, m.get("keep_video", True),
                                             time.monotonic() + self.invite_ttl)
        self._tell(room, guest, {"type": "call_invited", "room": room, "from": s.user,
                                 "expires_in_s": self.invite_ttl})

    async def _on_call_answer(self, s: Session, room: str, m: dict, ref: Any) -> None:
        invite = self.call_invites.get(room)
        if invite is None or invite.guest != s.user or invite.expires < time.monotonic():
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending call invitation", ref)
        del self.call_invites[room]
        if not m["accept"]:
            self._tell(room, invite.host, {"type": "call_declined", "room": room, "user": s.user})
            return
        private = f"{room}.call-{secrets.token_hex(4)}"
        self.private_rooms[private] = {invite.host, invite.guest}
        call = Call(room, private, invite.host, invite.guest, invite.keep_video, now_ms())
        self.calls[room] = call
        secret = self.hub.config.secret
        for user, role, other in ((invite.host, Role.HOST, invite.guest), (invite.guest, Role.COHOST, invite.host)):
            self._tell(room, user, {"type": "call_grant", "room": room, "call_room": private, "with": other,
                                    "token": issue_token(secret, private, user, role, 3600)})
        if not invite.keep_video and self.hub.media is not None:
            self.hub.media.router.set_muted(room, invite.host, "video", True)
        await self._announce(room, "call")

    async def _on_call_end(self, s: Session, room: str, m: dict, ref: Any) -> None:
        call = self.calls.get(room)
        if call is None or s.user not in (call.host, call.guest):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no private call of yours to end", ref)
        await self.end_call(room, f"ended by {s.user}")

    async def end_call(self, room: str, reason: str) -> None:
        call = self.calls.pop(room, None)
        if call is None:
            return
        self.private_rooms.pop(call.private_room, None)
        if self.hub.media is not None:
            self.hub.media.router.set_muted(room, call.host, "video", False)
        for user in (call.host, call.guest):
            self._tell(room, user, {"type": "call_ended", "room": room, "call_room": call.private_room,
                                    "reason": reason})
            for x in self._sessions(call.private_room, user):  # the private room's connections go
                self.hub.kick_private(x)
        await self._announce(room, "call")

    # -- lifecycle hooks ---------------------------------------------------------------------------------

    async def on_leave(self, session: Session, room: str) -> None:
        """A connection left a room: give up what it held there."""
        if session.anonymous or self._sessions(room, session.user):
            return  # anonymous, or the same user still has another connection here
        stage = self.stage(room) if room in self.stages else None
        if stage is not None:
            stage.requests.pop(session.user, None)
            stage.invites.pop(session.user, None)
            if session.user in stage.seats:
                await self._unseat(room, session.user, "disconnected")
        link = self.pk.get(room)
        if link is not None and link.hosts.get(room) == session.user:
            await self.end_pk(room, f"host {session.user} left")
        call = self.calls.get(room)
        if call is not None and session.user in (call.host, call.guest):
            await self.end_call(room, f"{session.user} left")

    async def on_publisher_change(self, room: str) -> None:
        """A publisher came or went: seats and PK opponents show current media ids."""
        if self.stage(room).seats:
            await self._announce(room, "stage")
        link = self.pk.get(room)
        if link is not None:
            for r in link.rooms:
                await self._announce(r, "pk")

    def sweep(self) -> None:
        """Expire invitations and requests, telling whoever was waiting."""
        now = time.monotonic()
        for room, stage in self.stages.items():
            for user in [u for u, t in stage.requests.items() if t < now]:
                del stage.requests[user]
                self._tell(room, user, {"type": "stage_rejected", "room": room, "reason": "expired"})
            for user in [u for u, t in stage.invites.items() if t < now]:
                del stage.invites[user]
                for host in self._hosts(room):
                    host.send({"type": "stage_declined", "room": room, "user": user, "reason": "expired"})
        for key, invite in [(k, v) for k, v in self.pk_invites.items() if v.expires < now]:
            del self.pk_invites[key]
            self._tell(invite.from_room, invite.from_user, {"type": "pk_declined", "room": invite.from_room,
                                                            "by_room": invite.to_room, "reason": "expired"})
        for room, call_invite in [(k, v) for k, v in self.call_invites.items() if v.expires < now]:
            del self.call_invites[room]
            self._tell(room, call_invite.host, {"type": "call_declined", "room": room, "user": call_invite.guest,
                                                "reason": "expired"})
