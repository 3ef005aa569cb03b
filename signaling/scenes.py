"""Live-commerce scenes: the stage (co-hosts, "lianmai"), PK links between two rooms, and switching a
viewer into a private 1v1 call.

Every scene is driven by WebSocket messages (``stage_*``, ``pk_*``, ``call_*``), checked against roles,
and announced to the room as events. Scene state lives in the broker's room state, so it is room-wide:
with several nodes, any node can handle any scene message (a viewer on node B raises a hand, the host on
node A accepts). Messages for particular users (a request to the hosts, a grant to the promoted viewer)
travel as ``_direct`` envelopes through the broker; each node delivers them to its own connections and
applies their side effects there (a role change, closing publications, muting a track). The public view
of each scene (``stage``, ``pk``, ``call``) is re-broadcast whole on every change and kept for late
joiners. Invitations and requests expire.

Concurrency: scene changes are read-modify-write of one JSON value per room. Two conflicting changes at
the same instant on two nodes (two hosts of one room seating the last seat at once) can overwrite each
other; scene changes are human-paced, and the next change re-announces the true state.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from protocol import ErrorCode, ProtocolError, Role, issue_token, now_ms
from signaling.session import Session

if TYPE_CHECKING:
    from signaling.hub import Hub


class Scenes:
    def __init__(self, hub: Hub, invite_ttl: float = 30.0, max_seats: int = 6, pk_duration: int = 300) -> None:
        self.hub = hub
        self.invite_ttl = invite_ttl
        self.max_seats = max_seats
        self.pk_duration = pk_duration
        self.node_id = secrets.token_hex(4)  # who runs a PK's score ticker

    # -- state --------------------------------------------------------------------------------------------

    async def _load(self, room: str) -> dict[str, Any]:
        state = (await self.hub.broker.get_state(room)).get("scenes") or {}
        state.setdefault("stage", {"max_seats": self.max_seats, "seats": {}, "requests": {}, "invites": {},
                                   "moderators": []})
        state.setdefault("pk_invites", {})
        return state

    async def _save(self, room: str, state: dict[str, Any]) -> None:
        await self.hub.broker.set_state(room, "scenes", state)

    def _expires(self) -> float:
        return time.time() + self.invite_ttl

    @staticmethod
    def _live(expiry: float | None) -> bool:
        return expiry is not None and expiry >= time.time()

    async def _direct(self, room: str, message: dict[str, Any] | None = None, *, users: list[str] | None = None,
                      roles: list[str] | None = None, actions: dict[str, Any] | None = None) -> None:
        """Send to some users (or roles) of a room, on whichever node they are connected."""
        if message is not None:
            message.setdefault("room", room)
            message.setdefault("server_ts", now_ms())
        await self.hub.broker.broadcast(room, {"type": "_direct", "room": room, "message": message,
                                               "users": users, "roles": roles, "actions": actions or {}})

    async def _to_moderators(self, room: str, stage: dict[str, Any], message: dict[str, Any]) -> None:
        await self._direct(room, message, users=list(stage["moderators"]), roles=["host"])

    def _require(self, session: Session, roles: tuple[Role, ...], what: str, ref: Any) -> None:
        if session.role not in roles:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only {' or '.join(r.value for r in roles)} can {what}", ref)

    def _require_moderator(self, session: Session, stage: dict[str, Any], what: str, ref: Any) -> None:
        if session.role is Role.HOST or (session.role is Role.COHOST and session.user in stage["moderators"]):
            return
        raise ProtocolError(ErrorCode.FORBIDDEN, f"only the host or a co-host the host allows can {what}", ref)

    async def _in_room(self, room: str, user: str) -> bool:
        """Whether a signed-in user is connected to the room on any node (room-wide presence by user)."""
        return any(s.user == user and not s.anonymous for s in self._local_sessions(room)) or \
            await self.hub.broker.get_user(room, user) is not None

    def _local_sessions(self, room: str) -> list[Session]:
        chat = self.hub.rooms.get(room)
        return list(chat.sessions.values()) if chat else []

    async def visible_rooms(self, room: str) -> tuple[str, ...]:
        pk = (await self._load(room)).get("pk")
        return tuple(r for r in pk["rooms"] if r != room) if pk else ()

    async def private_users(self, room: str) -> list[str] | None:
        """The two users allowed into a private call room; None if the room is not one."""
        private = (await self.hub.broker.get_state(room)).get("private")
        return private["users"] if private else None

    # -- public snapshots (what joined.state and the events carry) ----------------------------------------

    async def stage_state(self, room: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        stage = (state or await self._load(room))["stage"]
        registry = await self.hub.broker.get_publishers(room)
        seats = []
        for user, seat in sorted(stage["seats"].items(), key=lambda item: item[1]["seat"]):
            seats.append({"seat": seat["seat"], "user": user, "name": seat.get("name"),
                          "publishers": [pid for pid, info in registry.items() if info["user"] == user],
                          "muted": dict(seat["muted"]), "moderator": user in stage["moderators"]})
        return {"max_seats": stage["max_seats"], "seats": seats}

    async def pk_state(self, room: str, state: dict[str, Any] | None = None) -> dict[str, Any] | None:
        pk = (state or await self._load(room)).get("pk")
        if pk is None:
            return None
        sides = []
        for r in pk["rooms"]:
            registry = await self.hub.broker.get_publishers(r)
            sides.append({"room": r, "host": pk["hosts"][r], "score": pk["scores"].get(r, 0),
                          "publishers": list(registry)})
        return {"sides": sides, "started_ms": pk["started_ms"], "ends_at_ms": pk["ends_at_ms"]}

    async def call_state(self, room: str, state: dict[str, Any] | None = None) -> dict[str, Any] | None:
        call = (state or await self._load(room)).get("call")
        if call is None:
            return None
        return {k: call[k] for k in ("host", "guest", "keep_video", "started_ms")}

    async def _announce(self, room: str, kind: str, state: dict[str, Any] | None = None) -> None:
        """Store the scene's public view for late joiners and broadcast it to the room."""
        view = await {"stage": self.stage_state, "pk": self.pk_state, "call": self.call_state}[kind](room, state)
        await self.hub.broker.set_state(room, kind, view)
        await self.hub.broker.broadcast(room, {"type": kind, "room": room, "state": view, "server_ts": now_ms()})

    # -- messages ---------------------------------------------------------------------------------------

    async def handle(self, session: Session, message: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{message['type']}")
        await handler(session, session.room, message, message.get("id"))
        if message.get("id") is not None:
            session.send({"type": "ok", "id": message["id"]})

    # stage -----------------------------------------------------------------------------------------------

    async def _on_stage_request(self, s: Session, room: str, m: dict, ref: Any) -> None:
        if s.anonymous or s.role is not Role.VIEWER:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a signed-in viewer can ask to join the stage", ref)
        state = await self._load(room)
        stage = state["stage"]
        if self._live(stage["requests"].get(s.user)) or s.user in stage["seats"]:
            raise ProtocolError(ErrorCode.BUSY, "already asked or on stage", ref)
        if len(stage["seats"]) >= stage["max_seats"]:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        stage["requests"][s.user] = self._expires()
        await self._save(room, state)
        await self._to_moderators(room, stage, {"type": "stage_requested", "user": s.user, "name": s.name,
                                                "expires_in_s": self.invite_ttl})

    async def _on_stage_cancel(self, s: Session, room: str, m: dict, ref: Any) -> None:
        state = await self._load(room)
        if state["stage"]["requests"].pop(s.user, None) is None:
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request", ref)
        await self._save(room, state)
        await self._to_moderators(room, state["stage"], {"type": "stage_request_cancelled", "user": s.user})

    async def _on_stage_allow(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "allow co-hosts to answer requests", ref)
        state = await self._load(room)
        stage = state["stage"]
        if m["user"] not in stage["seats"]:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        moderators = set(stage["moderators"])
        if m["allowed"]:
            moderators.add(m["user"])
        else:
            moderators.discard(m["user"])
        stage["moderators"] = sorted(moderators)
        await self._save(room, state)
        await self._announce(room, "stage", state)

    async def _on_stage_accept(self, s: Session, room: str, m: dict, ref: Any) -> None:
        state = await self._load(room)
        self._require_moderator(s, state["stage"], "accept stage requests", ref)
        if not self._live(state["stage"]["requests"].pop(m["user"], None)):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request from that user", ref)
        await self._promote(room, state, m["user"], ref)

    async def _on_stage_reject(self, s: Session, room: str, m: dict, ref: Any) -> None:
        state = await self._load(room)
        self._require_moderator(s, state["stage"], "reject stage requests", ref)
        if state["stage"]["requests"].pop(m["user"], None) is None:
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request from that user", ref)
        await self._save(room, state)
        await self._direct(room, {"type": "stage_rejected"}, users=[m["user"]])

    async def _on_stage_invite(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "invite to the stage", ref)
        state = await self._load(room)
        stage = state["stage"]
        target = m["user"]
        if target in stage["seats"]:
            raise ProtocolError(ErrorCode.BUSY, "already on stage", ref)
        if len(stage["seats"]) >= stage["max_seats"]:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        if not await self._in_room(room, target):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed-in user in this room", ref)
        stage["invites"][target] = self._expires()
        await self._save(room, state)
        await self._direct(room, {"type": "stage_invited", "from": s.user, "expires_in_s": self.invite_ttl},
                           users=[target])

    async def _on_stage_invite_answer(self, s: Session, room: str, m: dict, ref: Any) -> None:
        state = await self._load(room)
        if not self._live(state["stage"]["invites"].pop(s.user, None)):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending stage invitation", ref)
        if m["accept"]:
            await self._promote(room, state, s.user, ref, name=s.name)
        else:
            await self._save(room, state)
            await self._direct(room, {"type": "stage_declined", "user": s.user}, roles=["host"])

    async def _promote(self, room: str, state: dict[str, Any], user: str, ref: Any, name: str | None = None) -> None:
        """Seat a viewer and make them a co-host: the server issues the upgraded grant."""
        stage = state["stage"]
        if len(stage["seats"]) >= stage["max_seats"]:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        if not await self._in_room(room, user):
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is no longer in the room", ref)
        taken = {seat["seat"] for seat in stage["seats"].values()}
        number = next(n for n in range(1, stage["max_seats"] + 1) if n not in taken)
        name = name or ((await self.hub.broker.get_user(room, user)) or {}).get("name")
        stage["seats"][user] = {"seat": number, "name": name, "muted": {"audio": False, "video": False}}
        await self._save(room, state)
        token = issue_token(self.hub.config.secret, room, user, Role.COHOST, 4 * 3600, name)
        await self._direct(room, {"type": "grant", "role": "cohost", "token": token, "seat": number}, users=[user],
                           actions={"set_role": "cohost"})
        await self._announce(room, "stage", state)

    async def _on_stage_mute(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "mute co-hosts", ref)
        state = await self._load(room)
        seat = state["stage"]["seats"].get(m["user"])
        if seat is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        seat["muted"][m["kind"]] = m["muted"]
        await self._save(room, state)
        await self._direct(room, actions={"mute": {"user": m["user"], "kind": m["kind"], "muted": m["muted"]}})
        await self._announce(room, "stage", state)

    async def _on_stage_remove(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "remove co-hosts", ref)
        state = await self._load(room)
        if m["user"] not in state["stage"]["seats"]:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        await self._unseat(room, state, m["user"], "removed")

    async def _on_stage_leave(self, s: Session, room: str, m: dict, ref: Any) -> None:
        state = await self._load(room)
        if s.user not in state["stage"]["seats"]:
            raise ProtocolError(ErrorCode.NOT_FOUND, "you are not on stage", ref)
        await self._unseat(room, state, s.user, "left")

    async def _unseat(self, room: str, state: dict[str, Any], user: str, reason: str) -> None:
        stage = state["stage"]
        stage["seats"].pop(user, None)
        stage["moderators"] = [u for u in stage["moderators"] if u != user]
        await self._save(room, state)
        await self._direct(room, {"type": "grant", "role": "viewer", "reason": reason}, users=[user],
                           actions={"set_role": "viewer", "unpublish": True})
        await self._announce(room, "stage", state)

    # PK ---------------------------------------------------------------------------------------------------

    async def _on_pk_invite(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "start a PK", ref)
        other = m["room"]
        if other == room:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "a PK links two different rooms", ref)
        mine, theirs = await self._load(room), await self._load(other)
        if mine.get("pk") or theirs.get("pk"):
            raise ProtocolError(ErrorCode.BUSY, "one of the rooms is already in a PK", ref)
        users = await self.hub.broker.get_users(other)
        if not any(info.get("role") == "host" for info in users.values()):
            raise ProtocolError(ErrorCode.NOT_FOUND, "that room has no host on air", ref)
        duration = m.get("duration_s", self.pk_duration)
        theirs["pk_invites"][room] = {"from_user": s.user, "duration_s": duration, "expires": self._expires()}
        await self._save(other, theirs)
        await self._direct(other, {"type": "pk_invited", "from_room": room, "from": s.user, "duration_s": duration,
                                   "expires_in_s": self.invite_ttl}, roles=["host"])

    async def _on_pk_answer(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "answer a PK", ref)
        state = await self._load(room)
        invite = state["pk_invites"].pop(m["room"], None)
        if invite is None or not self._live(invite["expires"]):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending PK invitation from that room", ref)
        await self._save(room, state)
        if not m["accept"]:
            await self._direct(m["room"], {"type": "pk_declined", "by_room": room}, users=[invite["from_user"]])
            return
        other_state = await self._load(m["room"])
        if state.get("pk") or other_state.get("pk"):
            raise ProtocolError(ErrorCode.BUSY, "one of the rooms is already in a PK", ref)
        rooms = [m["room"], room]
        pk = {"rooms": rooms, "hosts": {m["room"]: invite["from_user"], room: s.user}, "started_ms": now_ms(),
              "ends_at_ms": now_ms() + invite["duration_s"] * 1000,
              "base_likes": {r: await self.hub.broker.get_likes(r) for r in rooms},
              "scores": dict.fromkeys(rooms, 0), "owner": self.node_id}
        for r, st in ((room, state), (m["room"], other_state)):
            st["pk"] = pk
            await self._save(r, st)
            await self._announce(r, "pk", st)

    async def _on_pk_end(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "end a PK", ref)
        if not (await self._load(room)).get("pk"):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no PK to end", ref)
        await self.end_pk(room, f"ended by {s.user}")

    async def end_pk(self, room: str, reason: str) -> None:
        pk = (await self._load(room)).get("pk")
        if pk is None:
            return
        for r in pk["rooms"]:
            st = await self._load(r)
            st.pop("pk", None)
            await self._save(r, st)
            await self.hub.broker.set_state(r, "pk", None)
            # Every node closes its subscriptions across the link when it sees this (see Hub._on_broadcast).
            await self.hub.broker.broadcast(r, {"type": "pk_ended", "room": r, "reason": reason,
                                                "rooms": pk["rooms"], "scores": pk["scores"], "server_ts": now_ms()})

    async def pk_tick(self) -> None:
        """Scores (likes during the PK) a few times a second, by the node that accepted the link."""
        for room in list(self.hub.rooms):
            state = await self._load(room)
            pk = state.get("pk")
            if pk is None or pk.get("owner") != self.node_id or pk["rooms"][0] != room:
                continue
            scores = {r: await self.hub.broker.get_likes(r) - pk["base_likes"][r] for r in pk["rooms"]}
            remaining = max(0.0, (pk["ends_at_ms"] - now_ms()) / 1000)
            if scores != pk["scores"]:
                for r in pk["rooms"]:
                    st = await self._load(r)
                    if st.get("pk"):
                        st["pk"]["scores"] = scores
                        await self._save(r, st)
            for r in pk["rooms"]:
                await self.hub.broker.broadcast(r, {"type": "pk_score", "room": r, "scores": scores,
                                                    "remaining_s": round(remaining, 1), "server_ts": now_ms()})
            if remaining <= 0:
                await self.end_pk(room, "time is up")

    # switch to 1v1 -------------------------------------------------------------------------------------------

    async def _on_call_invite(self, s: Session, room: str, m: dict, ref: Any) -> None:
        self._require(s, (Role.HOST,), "start a private call", ref)
        state = await self._load(room)
        if state.get("call") or (state.get("call_invite") and self._live(state["call_invite"]["expires"])):
            raise ProtocolError(ErrorCode.BUSY, "a private call is already on", ref)
        guest = m["user"]
        if guest == s.user or not await self._in_room(room, guest):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed-in viewer in this room", ref)
        state["call_invite"] = {"host": s.user, "guest": guest, "keep_video": m.get("keep_video", True),
                                "expires": self._expires()}
        await self._save(room, state)
        await self._direct(room, {"type": "call_invited", "from": s.user, "expires_in_s": self.invite_ttl},
                           users=[guest])

    async def _on_call_answer(self, s: Session, room: str, m: dict, ref: Any) -> None:
        state = await self._load(room)
        invite = state.get("call_invite")
        if invite is None or invite["guest"] != s.user or not self._live(invite["expires"]):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending call invitation", ref)
        del state["call_invite"]
        if not m["accept"]:
            await self._save(room, state)
            await self._direct(room, {"type": "call_declined", "user": s.user}, users=[invite["host"]])
            return
        private = f"{room}.call-{secrets.token_hex(4)}"
        await self.hub.broker.set_state(private, "private", {"users": [invite["host"], invite["guest"]],
                                                             "show": room})
        state["call"] = {"host": invite["host"], "guest": invite["guest"], "keep_video": invite["keep_video"],
                         "started_ms": now_ms(), "private_room": private}
        await self._save(room, state)
        secret = self.hub.config.secret
        for user, role, other in ((invite["host"], Role.HOST, invite["guest"]),
                                  (invite["guest"], Role.COHOST, invite["host"])):
            await self._direct(room, {"type": "call_grant", "call_room": private, "with": other,
                                      "token": issue_token(secret, private, user, role, 3600)}, users=[user])
        if not invite["keep_video"]:
            await self._direct(room, actions={"mute": {"user": invite["host"], "kind": "video", "muted": True}})
        await self._announce(room, "call", state)

    async def _on_call_end(self, s: Session, room: str, m: dict, ref: Any) -> None:
        call = (await self._load(room)).get("call")
        if call is None or s.user not in (call["host"], call["guest"]):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no private call of yours to end", ref)
        await self.end_call(room, f"ended by {s.user}")

    async def end_call(self, room: str, reason: str) -> None:
        state = await self._load(room)
        call = state.pop("call", None)
        if call is None:
            return
        await self._save(room, state)
        private = call["private_room"]
        await self.hub.broker.set_state(private, "private", None)
        await self._direct(room, actions={"mute": {"user": call["host"], "kind": "video", "muted": False}})
        await self._direct(room, {"type": "call_ended", "call_room": private, "reason": reason},
                           users=[call["host"], call["guest"]])
        await self._direct(private, users=[call["host"], call["guest"]], actions={"close": "call ended"})
        await self._announce(room, "call", state)

    # -- lifecycle hooks ---------------------------------------------------------------------------------

    async def on_leave(self, session: Session, room: str) -> None:
        """A connection left a room: give up what its user held there (if no other connection holds it)."""
        if session.anonymous or await self._in_room(room, session.user):
            return
        state = await self._load(room)
        stage = state["stage"]
        changed = bool(stage["requests"].pop(session.user, None) or stage["invites"].pop(session.user, None))
        if session.user in stage["seats"]:
            await self._unseat(room, state, session.user, "disconnected")
        elif changed:
            await self._save(room, state)
        pk = state.get("pk")
        if pk is not None and pk["hosts"].get(room) == session.user:
            await self.end_pk(room, f"host {session.user} left")
        call = state.get("call")
        if call is not None and session.user in (call["host"], call["guest"]):
            await self.end_call(room, f"{session.user} left")

    async def on_publisher_change(self, room: str) -> None:
        """A publisher came or went: seats and PK opponents show current media ids."""
        state = await self._load(room)
        if state["stage"]["seats"]:
            await self._announce(room, "stage", state)
        pk = state.get("pk")
        if pk is not None:
            for r in pk["rooms"]:
                await self._announce(r, "pk")

    async def sweep(self) -> None:
        """Expire invitations and requests of this node's rooms, telling whoever was waiting."""
        for room in list(self.hub.rooms):
            state = await self._load(room)
            stage, changed = state["stage"], False
            for user in [u for u, t in stage["requests"].items() if not self._live(t)]:
                del stage["requests"][user]
                changed = True
                await self._direct(room, {"type": "stage_rejected", "reason": "expired"}, users=[user])
            for user in [u for u, t in stage["invites"].items() if not self._live(t)]:
                del stage["invites"][user]
                changed = True
                await self._direct(room, {"type": "stage_declined", "user": user, "reason": "expired"},
                                   roles=["host"])
            for from_room, invite in [(k, v) for k, v in state["pk_invites"].items() if not self._live(v["expires"])]:
                del state["pk_invites"][from_room]
                changed = True
                await self._direct(from_room, {"type": "pk_declined", "by_room": room, "reason": "expired"},
                                   users=[invite["from_user"]])
            invite = state.get("call_invite")
            if invite is not None and not self._live(invite["expires"]):
                del state["call_invite"]
                changed = True
                await self._direct(room, {"type": "call_declined", "user": invite["guest"], "reason": "expired"},
                                   users=[invite["host"]])
            if changed:
                await self._save(room, state)
