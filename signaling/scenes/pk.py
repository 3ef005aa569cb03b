"""PK: two hosts link their rooms for a duel. Each room's viewers may subscribe to the other room's
publishers (the same encoded stream, pulled through the cascade when it lives on another node), the score
is the likes each room got during the PK (ticked a few times a second by the node that accepted), and it
ends on time, when either host ends it, or when a host leaves. When it ends, every node closes its
subscriptions across the link.
"""

from __future__ import annotations

from typing import Any

from protocol import ErrorCode, ProtocolError, Ref, Role, now_ms
from signaling.scenes.context import SceneContext, require
from signaling.scenes.port import Member
from signaling.scenes.state import PkInvite, PkLink, RoomName, SceneState, UserId, live


class PkScene:
    def __init__(self, ctx: SceneContext) -> None:
        self.ctx = ctx

    async def invite(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "start a PK", ref)
        other = RoomName(msg["room"])
        if other == room:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "a PK links two different rooms", ref)
        mine, theirs = await self.ctx.load(room), await self.ctx.load(other)
        if mine.pk or theirs.pk:
            raise ProtocolError(ErrorCode.BUSY, "one of the rooms is already in a PK", ref)
        users = await self.ctx.ports.registry.get_users(other)
        if not any(info.get("role") == Role.HOST for info in users.values()):
            raise ProtocolError(ErrorCode.NOT_FOUND, "that room has no host on air", ref)
        duration = msg.get("duration_s", self.ctx.settings.pk_duration)
        theirs.pk_invites[RoomName(room)] = PkInvite(UserId(m.user), duration, self.ctx.expires())
        await self.ctx.save(other, theirs)
        await self.ctx.direct(other, {"type": "pk_invited", "from_room": room, "from": m.user, "duration_s": duration,
                                      "expires_in_s": self.ctx.settings.invite_ttl}, roles=[Role.HOST])

    async def answer(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "answer a PK", ref)
        inviting = RoomName(msg["room"])
        state = await self.ctx.load(room)
        invite = state.pk_invites.pop(inviting, None)
        if invite is None or not live(invite.expires):
            raise ProtocolError(ErrorCode.NO_INVITATION, "no pending PK invitation from that room", ref)
        await self.ctx.save(room, state)
        if not msg["accept"]:
            await self.ctx.direct(inviting, {"type": "pk_declined", "by_room": room}, users=[invite.from_user])
            return
        other_state = await self.ctx.load(inviting)
        if state.pk or other_state.pk:
            raise ProtocolError(ErrorCode.BUSY, "one of the rooms is already in a PK", ref)
        rooms = [inviting, RoomName(room)]
        started = now_ms()
        link = PkLink(rooms=rooms, hosts={inviting: invite.from_user, RoomName(room): UserId(m.user)},
                      started_ms=started, ends_at_ms=started + invite.duration_s * 1000,
                      base_likes={r: await self.ctx.ports.store.get_likes(r) for r in rooms},
                      scores=dict.fromkeys(rooms, 0), owner=self.ctx.node_id)
        for r, st in ((room, state), (inviting, other_state)):
            st.pk = link
            await self.ctx.save(r, st)
            await self.ctx.announce(r, "pk", st)

    async def end(self, m: Member, room: str, msg: dict[str, Any], ref: Ref) -> None:
        require(m, (Role.HOST,), "end a PK", ref)
        if (await self.ctx.load(room)).pk is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no PK to end", ref)
        await self.end_link(room, f"ended by {m.user}")

    async def end_link(self, room: str, reason: str) -> None:
        link = (await self.ctx.load(room)).pk
        if link is None:
            return
        for r in link.rooms:
            st = await self.ctx.load(r)
            st.pk = None
            await self.ctx.save(r, st)
            # Every node closes its subscriptions across the link when it sees this (see Scenes.observe).
            await self.ctx.ports.stream.broadcast(r, {"type": "pk_ended", "room": r, "reason": reason,
                                                      "rooms": list(link.rooms), "scores": link.scores,
                                                      "server_ts": now_ms()})
            await self.ctx.announce(r, "pk", st)  # state null, as a call's end announces `call`

    async def tick(self, room: str) -> None:
        """Scores (likes during the PK) and time left, by the node that accepted the link."""
        state = await self.ctx.load(room)
        link = state.pk
        if link is None or link.owner != self.ctx.node_id or link.rooms[0] != room:
            return
        store = self.ctx.ports.store
        scores = {r: await store.get_likes(r) - link.base_likes[r] for r in link.rooms}
        remaining = max(0.0, (link.ends_at_ms - now_ms()) / 1000)
        if scores != link.scores:
            for r in link.rooms:
                st = await self.ctx.load(r)
                if st.pk is not None:
                    st.pk.scores = dict(scores)
                    await self.ctx.save(r, st)
        for r in link.rooms:
            await self.ctx.ports.stream.broadcast(r, {"type": "pk_score", "room": r, "scores": scores,
                                                      "remaining_s": round(remaining, 1), "server_ts": now_ms()})
        if remaining <= 0:
            await self.end_link(room, "time is up")

    async def expire(self, room: str, state: SceneState) -> bool:
        changed = False
        for from_room, invite in [(k, v) for k, v in state.pk_invites.items() if not live(v.expires)]:
            del state.pk_invites[from_room]
            changed = True
            await self.ctx.direct(from_room, {"type": "pk_declined", "by_room": room, "reason": "expired"},
                                  users=[invite.from_user])
        return changed

    async def on_leave(self, room: str, state: SceneState, user: UserId) -> None:
        if state.pk is not None and state.pk.hosts.get(RoomName(room)) == user:
            await self.end_link(room, f"host {user} left")

    async def announce_links(self, state: SceneState) -> None:
        """A publisher came or went in a linked room: both sides show current media ids."""
        if state.pk is not None:
            for r in state.pk.rooms:
                await self.ctx.announce(r, "pk")
