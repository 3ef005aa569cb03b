"""Live-commerce scenes: the stage (co-hosts, "lianmai"), PK links between two rooms, and switching a
viewer into a private 1v1 call. They own their rules and their effects; they reach the rest of the server
only through ``ScenePorts`` (room store, registry, broadcast, grant signer, local members, media effects).

Every scene is driven by WebSocket messages (``stage_*``, ``pk_*``, ``call_*``; ``routes()`` gives their
handlers to the server's dispatch table), checked against roles, and announced to the room as events.
Scene state (``state.SceneState``) lives in the room store, so it is room-wide: with several nodes, any
node can handle any scene message (a viewer on node B raises a hand, the host on node A accepts).
Messages for particular users and their side effects travel as ``_direct`` envelopes (``effects``). The
public view of each scene (``stage``, ``pk``, ``call``) is re-broadcast whole on every change and kept
for late joiners. Invitations and requests expire.

Concurrency: scene changes are read-modify-write of one JSON value per room. Two conflicting changes at
the same instant on two nodes (two hosts of one room seating the last seat at once) can overwrite each
other; scene changes are human-paced, and the next change re-announces the true state.

Layout: ``state`` (typed state), ``port`` (what scenes need), ``context`` (load/save/views/sending),
``effects`` (envelopes and applying them), ``stage``, ``pk``, ``call`` (the rules).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from protocol import ErrorCode, ProtocolError
from signaling.scenes.call import CallScene
from signaling.scenes.context import SceneContext, SceneSettings
from signaling.scenes.effects import DIRECT, apply_direct
from signaling.scenes.pk import PkScene
from signaling.scenes.port import LocalMembers, Member, SceneMedia, ScenePorts
from signaling.scenes.stage import StageScene
from signaling.scenes.state import UserId

__all__ = ["LocalMembers", "Member", "SceneMedia", "ScenePorts", "SceneSettings", "Scenes"]

SceneHandler = Callable[[Member, str, dict[str, Any], Any], Awaitable[None]]


class Caller(Member, Protocol):
    """A joined connection sending a scene message."""

    room: str | None

    def send(self, message: dict[str, Any]) -> None: ...


class Scenes:
    def __init__(self, ports: ScenePorts, settings: SceneSettings | None = None, node_id: str | None = None) -> None:
        self.ports = ports
        self.ctx = SceneContext(ports, settings or SceneSettings(), node_id or secrets.token_hex(4))
        self.stage = StageScene(self.ctx)
        self.pk = PkScene(self.ctx)
        self.call = CallScene(self.ctx)

    # -- messages -----------------------------------------------------------------------------------------

    def handlers(self) -> dict[str, SceneHandler]:
        """Every scene message type and its rule (the protocol's names; checked by tests/test_protocol.py)."""
        stage, pk, call = self.stage, self.pk, self.call
        return {
            "stage_request": stage.request, "stage_cancel": stage.cancel, "stage_invite": stage.invite,
            "stage_accept": stage.accept, "stage_reject": stage.reject, "stage_invite_answer": stage.invite_answer,
            "stage_mute": stage.mute, "stage_remove": stage.remove, "stage_allow": stage.allow,
            "stage_leave": stage.leave,
            "pk_invite": pk.invite, "pk_answer": pk.answer, "pk_end": pk.end,
            "call_invite": call.invite, "call_answer": call.answer, "call_end": call.end,
        }

    def routes(self) -> dict[str, Callable[[Caller, dict[str, Any]], Awaitable[None]]]:
        """The handlers as the connection's dispatch table calls them: an ``ok`` answers a request id."""

        def route(handler: SceneHandler) -> Callable[[Caller, dict[str, Any]], Awaitable[None]]:
            async def run(caller: Caller, message: dict[str, Any]) -> None:
                assert caller.room is not None  # the dispatch table routes only joined connections here
                await handler(caller, caller.room, message, message.get("id"))
                if message.get("id") is not None:
                    caller.send({"type": "ok", "id": message["id"]})
            return run

        return {kind: route(handler) for kind, handler in self.handlers().items()}

    # -- what joining and media ask ------------------------------------------------------------------------

    async def admit(self, room: str, user: str | None) -> bool:
        """Whether ``room`` is a private call room; refuses anyone but its two parties (``user`` None: an
        anonymous viewer). Raises ProtocolError(FORBIDDEN)."""
        private = await self.ctx.private(room)
        if private is None:
            return False
        if private.closed:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this private call has ended")
        if user is None or user not in private.users:
            raise ProtocolError(ErrorCode.FORBIDDEN, "a private call: only its two parties may join")
        return True

    async def stage_view(self, room: str) -> dict[str, Any]:
        return await self.ctx.stage_view(room, await self.ctx.load(room))

    async def visible_rooms(self, room: str) -> tuple[str, ...]:
        """Rooms whose publishers the room's members may also subscribe to (a PK's other side)."""
        link = (await self.ctx.load(room)).pk
        return tuple(link.other(room)) if link else ()

    async def is_show(self, room: str) -> bool:
        """Whether ``room`` is a show (not a private call room): only shows are offered for a PK."""
        return await self.ctx.private(room) is None

    # -- lifecycle hooks -----------------------------------------------------------------------------------

    async def on_leave(self, member: Member, room: str) -> None:
        """A connection left a room: give up what its user held there (if no other connection holds it)."""
        if member.anonymous or await self.ctx.in_room(room, member.user):
            return
        user = UserId(member.user)
        state = await self.ctx.load(room)
        await self.stage.on_leave(room, state, user)
        await self.pk.on_leave(room, state, user)
        await self.call.on_leave(room, state, user)

    async def on_publisher_change(self, room: str) -> None:
        """A publisher came or went: seats and PK sides show current media ids."""
        state = await self.ctx.load(room)
        if state.stage.seats:
            await self.ctx.announce(room, "stage", state)
        await self.pk.announce_links(state)

    def observe(self, room: str, data: dict[str, Any]) -> bool:
        """Every broadcast of a room this node follows passes here first: a ``_direct`` envelope is applied
        to local members and consumed (True); a PK's end closes local subscriptions across the link and is
        then fanned out like any event (False)."""
        kind = data.get("type")
        if kind == DIRECT:
            apply_direct(self.ports, room, data)
            return True
        if kind == "pk_ended" and self.ports.media is not None:
            media = self.ports.media
            for other in data.get("rooms", []):
                if other != room:
                    self.ports.local.spawn(media.close_cross_room(room, other), f"pk-close-{room}")
        return False

    # -- periodic work (the server's ticker calls these) ----------------------------------------------------

    async def sweep(self) -> None:
        """Expire invitations and requests of this node's rooms, telling whoever was waiting."""
        for room in self.ports.local.room_names():
            state = await self.ctx.load(room)
            changed = await self.stage.expire(room, state)
            changed = await self.pk.expire(room, state) or changed
            changed = await self.call.expire(room, state) or changed
            if changed:
                await self.ctx.save(room, state)

    async def tick(self) -> None:
        """PK scores and time left, for the links this node ticks."""
        for room in self.ports.local.room_names():
            await self.pk.tick(room)
