"""The stage (co-hosts, "lianmai"): a viewer raises a hand or is invited, the host (or a co-host the host
allows) seats them, the server issues the upgraded co-host grant (a viewer never grants itself), the host
mutes or removes co-hosts, a co-host leaves. Seats are limited; requests and invitations expire.
"""

from __future__ import annotations

from typing import Any

from protocol import ErrorCode, ProtocolError, Ref, Role
from signaling.scenes.context import SceneContext, require, require_moderator
from signaling.scenes.effects import Effects, Mute
from signaling.scenes.port import Member
from signaling.scenes.state import SceneState, Seat, UserId, live


class StageScene:
    def __init__(self, ctx: SceneContext) -> None:
        self.ctx = ctx

    async def request(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        if m.anonymous or m.role is not Role.VIEWER:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a signed-in viewer can ask to join the stage", ref)
        state = await self.ctx.load(room)
        stage = state.stage
        user = UserId(m.user)
        if live(stage.requests.get(user)) or user in stage.seats:
            raise ProtocolError(ErrorCode.BUSY, "already asked or on stage", ref)
        if stage.full:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        stage.requests[user] = self.ctx.expires()
        await self.ctx.save(room, state)
        await self.ctx.to_moderators(room, stage, {"type": "stage_requested", "user": m.user, "name": m.name,
                                                   "expires_in_s": self.ctx.settings.invite_ttl})

    async def cancel(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        state = await self.ctx.load(room)
        if state.stage.requests.pop(UserId(m.user), None) is None:
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request", ref)
        await self.ctx.save(room, state)
        await self.ctx.to_moderators(room, state.stage, {"type": "stage_request_cancelled", "user": m.user})

    async def allow(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "allow co-hosts to answer requests", ref)
        state = await self.ctx.load(room)
        stage = state.stage
        target = UserId(msg["user"])
        if target not in stage.seats:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        moderators = set(stage.moderators)
        if msg["allowed"]:
            moderators.add(target)
        else:
            moderators.discard(target)
        stage.moderators = sorted(moderators)
        await self.ctx.save(room, state)
        await self.ctx.announce(room, "stage", state)

    async def accept(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        state = await self.ctx.load(room)
        require_moderator(m, state.stage, "accept stage requests", ref)
        if not live(state.stage.requests.pop(UserId(msg["user"]), None)):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request from that user", ref)
        await self._seat(room, state, UserId(msg["user"]), ref)

    async def reject(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        state = await self.ctx.load(room)
        require_moderator(m, state.stage, "reject stage requests", ref)
        if state.stage.requests.pop(UserId(msg["user"]), None) is None:
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending request from that user", ref)
        await self.ctx.save(room, state)
        await self.ctx.direct(room, {"type": "stage_rejected"}, users=[msg["user"]])

    async def invite(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "invite to the stage", ref)
        state = await self.ctx.load(room)
        stage = state.stage
        target = UserId(msg["user"])
        if target in stage.seats:
            raise ProtocolError(ErrorCode.BUSY, "already on stage", ref)
        if stage.full:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        if not await self.ctx.in_room(room, target):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed-in user in this room", ref)
        stage.invites[target] = self.ctx.expires()
        await self.ctx.save(room, state)
        await self.ctx.direct(room, {"type": "stage_invited", "from": m.user,
                                     "expires_in_s": self.ctx.settings.invite_ttl}, users=[target])

    async def invite_answer(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        state = await self.ctx.load(room)
        if not live(state.stage.invites.pop(UserId(m.user), None)):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending stage invitation", ref)
        if msg["accept"]:
            await self._seat(room, state, UserId(m.user), ref, name=m.name)
        else:
            await self.ctx.save(room, state)
            await self.ctx.direct(room, {"type": "stage_declined", "user": m.user}, roles=[Role.HOST])

    async def _seat(self, room: str, state: SceneState, user: UserId, ref: Ref, name: str | None = None) -> None:
        """Seat a viewer and make them a co-host: the server issues the upgraded grant."""
        stage = state.stage
        if stage.full:
            raise ProtocolError(ErrorCode.STAGE_FULL, "every seat is taken", ref)
        if not await self.ctx.in_room(room, user):
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is no longer in the room", ref)
        number = stage.free_seat()
        if name is None:
            info = await self.ctx.ports.registry.get_user(room, user)
            name = info["name"] if info else None
        token, grant_id = await self.ctx.issue_grant(room, user, Role.COHOST, self.ctx.settings.cohost_grant_ttl, name)
        stage.seats[user] = Seat(number, name, grant=grant_id)
        await self.ctx.save(room, state)
        await self.ctx.direct(room, {"type": "grant", "role": "cohost", "token": token, "seat": number},
                              users=[user], effects=Effects(set_role=Role.COHOST))
        await self.ctx.announce(room, "stage", state)

    async def mute(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "mute co-hosts", ref)
        state = await self.ctx.load(room)
        seat = state.stage.seats.get(UserId(msg["user"]))
        if seat is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        seat.muted[msg["kind"]] = msg["muted"]
        await self.ctx.save(room, state)
        await self.ctx.direct(room, effects=Effects(mute=Mute(msg["user"], msg["kind"], msg["muted"])))
        await self.ctx.announce(room, "stage", state)

    async def remove(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "remove co-hosts", ref)
        state = await self.ctx.load(room)
        if UserId(msg["user"]) not in state.stage.seats:
            raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not on stage", ref)
        await self.unseat(room, state, UserId(msg["user"]), "removed")

    async def leave(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        state = await self.ctx.load(room)
        if UserId(m.user) not in state.stage.seats:
            raise ProtocolError(ErrorCode.NOT_FOUND, "you are not on stage", ref)
        await self.unseat(room, state, UserId(m.user), "left")

    async def unseat(self, room: str, state: SceneState, user: UserId, reason: str) -> None:
        stage = state.stage
        seat = stage.seats.pop(user, None)
        stage.moderators = [u for u in stage.moderators if u != user]
        await self.ctx.save(room, state)
        # Taken back room-wide: the co-host token issued with the seat no longer joins, on any node.
        await self.ctx.revoke_grant(room, seat.grant if seat else None)
        await self.ctx.direct(room, {"type": "grant", "role": "viewer", "reason": reason}, users=[user],
                              effects=Effects(set_role=Role.VIEWER, unpublish=True))
        await self.ctx.announce(room, "stage", state)

    async def expire(self, room: str, state: SceneState) -> bool:
        """Drop expired requests and invitations, telling whoever waited; True if anything changed."""
        stage, changed = state.stage, False
        for user in [u for u, t in stage.requests.items() if not live(t)]:
            del stage.requests[user]
            changed = True
            await self.ctx.direct(room, {"type": "stage_rejected", "reason": "expired"}, users=[user])
        for user in [u for u, t in stage.invites.items() if not live(t)]:
            del stage.invites[user]
            changed = True
            await self.ctx.direct(room, {"type": "stage_declined", "user": user, "reason": "expired"},
                                  roles=[Role.HOST])
        return changed

    async def on_leave(self, room: str, state: SceneState, user: UserId) -> None:
        """The user's last connection left the room: withdraw their request, invitation and seat."""
        stage = state.stage
        changed = stage.requests.pop(user, None) is not None
        changed = stage.invites.pop(user, None) is not None or changed
        if user in stage.seats:
            await self.unseat(room, state, user, "disconnected")
        elif changed:
            await self.ctx.save(room, state)
