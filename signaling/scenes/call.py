"""Switching a viewer into a private 1v1 call: the host invites a signed-in viewer, the viewer accepts, both
get tokens for a private room only the two of them may join, the show is told (and may stop receiving the
host's video meanwhile), and ending the call (either party, or either leaving) closes the private room's
connections and gives the show its host back.
"""

from __future__ import annotations

import secrets
from typing import Any

from protocol import ErrorCode, ProtocolError, Ref, Role, now_ms
from signaling.scenes.context import SceneContext, require
from signaling.scenes.effects import Effects, Mute
from signaling.scenes.port import Member
from signaling.scenes.state import Call, CallInvite, Private, RoomName, SceneState, UserId, live


class CallScene:
    def __init__(self, ctx: SceneContext) -> None:
        self.ctx = ctx

    async def invite(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "start a private call", ref)
        state = await self.ctx.load(room)
        if state.call or (state.call_invite and live(state.call_invite.expires)):
            raise ProtocolError(ErrorCode.BUSY, "a private call is already on", ref)
        guest = UserId(msg["user"])
        if guest == m.user or not await self.ctx.in_room(room, guest):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed-in viewer in this room", ref)
        state.call_invite = CallInvite(UserId(m.user), guest, msg.get("keep_video", True), self.ctx.expires())
        await self.ctx.save(room, state)
        await self.ctx.direct(room, {"type": "call_invited", "from": m.user,
                                     "expires_in_s": self.ctx.settings.invite_ttl}, users=[guest])

    async def answer(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        state = await self.ctx.load(room)
        invite = state.call_invite
        if invite is None or invite.guest != m.user or not live(invite.expires):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending call invitation", ref)
        state.call_invite = None
        if not msg["accept"]:
            await self.ctx.save(room, state)
            await self.ctx.direct(room, {"type": "call_declined", "user": m.user}, users=[invite.host])
            return
        private = RoomName(f"{room}.call-{secrets.token_hex(4)}")
        store = self.ctx.ports.store
        await store.set_state(private, "private", Private((invite.host, invite.guest), RoomName(room)).to_json())
        call = state.call = Call(invite.host, invite.guest, invite.keep_video, now_ms(), private)
        ttl = self.ctx.settings.call_grant_ttl
        tokens = []
        for user, role in ((invite.host, Role.HOST), (invite.guest, Role.COHOST)):
            token, grant_id = await self.ctx.issue_grant(private, user, role, ttl, None)
            call.grants.append(grant_id)
            tokens.append(token)
        await self.ctx.save(room, state)
        for user, other, token in ((invite.host, invite.guest, tokens[0]), (invite.guest, invite.host, tokens[1])):
            await self.ctx.direct(room, {"type": "call_grant", "call_room": private, "with": other, "token": token},
                                  users=[user])
        if not invite.keep_video:
            await self.ctx.direct(room, effects=Effects(mute=Mute(invite.host, "video", True)))
        await self.ctx.announce(room, "call", state)

    async def end(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        call = (await self.ctx.load(room)).call
        if call is None or m.user not in call.parties:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no private call of yours to end", ref)
        await self.end_call(room, f"ended by {m.user}")

    async def end_call(self, room: str, reason: str) -> None:
        state = await self.ctx.load(room)
        call = state.call
        if call is None:
            return
        state.call = None
        await self.ctx.save(room, state)
        private = call.private_room
        # The private room closes to everyone, its parties' grants included, on every node.
        await self.ctx.ports.store.set_state(private, "private",
                                             Private(call.parties, RoomName(room), closed=True).to_json())
        for grant_id in call.grants:
            await self.ctx.revoke_grant(private, grant_id)
        await self.ctx.direct(room, effects=Effects(mute=Mute(call.host, "video", False)))
        await self.ctx.direct(room, {"type": "call_ended", "call_room": private, "reason": reason},
                              users=list(call.parties))
        await self.ctx.direct(private, users=list(call.parties), effects=Effects(close="call ended"))
        await self.ctx.announce(room, "call", state)

    async def expire(self, room: str, state: SceneState) -> bool:
        invite = state.call_invite
        if invite is None or live(invite.expires):
            return False
        state.call_invite = None
        await self.ctx.direct(room, {"type": "call_declined", "user": invite.guest, "reason": "expired"},
                              users=[invite.host])
        return True

    async def on_leave(self, room: str, state: SceneState, user: UserId) -> None:
        if state.call is not None and user in state.call.parties:
            await self.end_call(room, f"{user} left")
