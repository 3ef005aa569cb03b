"""What every scene shares: loading and saving a room's ``SceneState``, the public views late joiners and
events carry (``stage``, ``pk``, ``call``), and sending to particular users of a room on whichever node
they are connected (``_direct`` envelopes, applied by ``signaling.scenes.effects``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from protocol import ErrorCode, ProtocolError, Ref, Role, now_ms
from signaling.scenes.effects import Effects, direct_envelope
from signaling.scenes.port import Member, ScenePorts
from signaling.scenes.state import Private, SceneState, Stage

SceneView = Literal["stage", "pk", "call"]


@dataclass(frozen=True, slots=True)
class SceneSettings:
    invite_ttl: float = 30.0  # seconds an invitation or stage request stays open
    max_seats: int = 6
    pk_duration: int = 300  # seconds, when the invitation names none
    cohost_grant_ttl: float = 4 * 3600
    call_grant_ttl: float = 3600


class SceneContext:
    def __init__(self, ports: ScenePorts, settings: SceneSettings, node_id: str) -> None:
        self.ports = ports
        self.settings = settings
        self.node_id = node_id  # who runs a PK's score ticker

    # -- state --------------------------------------------------------------------------------------------

    async def load(self, room: str) -> SceneState:
        raw = (await self.ports.store.get_state(room)).get("scenes")
        return SceneState.from_json(raw, self.settings.max_seats)

    async def save(self, room: str, state: SceneState) -> None:
        await self.ports.store.set_state(room, "scenes", state.to_json())

    async def private(self, room: str) -> Private | None:
        return Private.from_json((await self.ports.store.get_state(room)).get("private"))

    def expires(self) -> float:
        return time.time() + self.settings.invite_ttl

    # -- grants ---------------------------------------------------------------------------------------------

    async def issue_grant(self, room: str, user: str, role: Role, ttl: float, name: str | None) -> tuple[str, str]:
        """A signed token for ``user`` in ``room`` whose grant is registered room-wide, so it can be taken
        back (``revoke_grant``); returns (token, grant id)."""
        grant_id = secrets.token_urlsafe(12)
        await self.ports.registry.set_grant(room, grant_id, {"user": user, "role": str(role),
                                                             "expires": time.time() + ttl})
        return self.ports.sign_grant(room, user, role, ttl, name, grant_id), grant_id

    async def revoke_grant(self, room: str, grant_id: str | None) -> None:
        if grant_id is not None:
            await self.ports.registry.set_grant(room, grant_id, None)

    # -- who is where -------------------------------------------------------------------------------------

    async def in_room(self, room: str, user: str) -> bool:
        """Whether a signed-in user is connected to the room on any node (room-wide presence by user)."""
        return any(m.user == user and not m.anonymous for m in self.ports.local.members(room)) or \
            await self.ports.registry.get_user(room, user) is not None

    # -- sending ------------------------------------------------------------------------------------------

    async def direct(self, room: str, message: dict[str, Any] | None = None, *, users: list[str] | None = None,
                     roles: list[Role] | None = None, effects: Effects | None = None) -> None:
        """Send to some users (or roles) of a room, on whichever node they are connected, and have each
        node apply ``effects`` to them there."""
        if message is not None:
            message.setdefault("room", room)
            message.setdefault("server_ts", now_ms())
        await self.ports.stream.broadcast(room, direct_envelope(room, message, users, roles, effects))

    async def to_moderators(self, room: str, stage: Stage, message: dict[str, Any]) -> None:
        await self.direct(room, message, users=list(stage.moderators), roles=[Role.HOST])

    async def announce(self, room: str, kind: SceneView, state: SceneState | None = None) -> None:
        """Store the scene's public view for late joiners and broadcast it to the room."""
        state = state or await self.load(room)
        view: dict[str, Any] | None
        if kind == "stage":
            view = await self.stage_view(room, state)
        elif kind == "pk":
            view = await self.pk_view(state)
        else:
            view = self.call_view(state)
        await self.ports.store.set_state(room, kind, view)
        await self.ports.stream.broadcast(room, {"type": kind, "room": room, "state": view, "server_ts": now_ms()})

    # -- public views (what joined.state and the scene events carry) -----------------------------------------

    async def stage_view(self, room: str, state: SceneState) -> dict[str, Any]:
        stage = state.stage
        registry = await self.ports.registry.get_publishers(room)
        seats = [{"seat": seat.seat, "user": user, "name": seat.name,
                  "publishers": [pid for pid, info in registry.items() if info["user"] == user],
                  "muted": dict(seat.muted), "moderator": stage.is_moderator(user)}
                 for user, seat in sorted(stage.seats.items(), key=lambda item: item[1].seat)]
        return {"max_seats": stage.max_seats, "seats": seats}

    async def pk_view(self, state: SceneState) -> dict[str, Any] | None:
        pk = state.pk
        if pk is None:
            return None
        sides = []
        for r in pk.rooms:
            registry = await self.ports.registry.get_publishers(r)
            side: dict[str, Any] = {"room": r, "host": pk.hosts[r], "score": pk.scores.get(r, 0),
                                    "publishers": list(registry)}
            # The host's display name, from its publication (what its own room's tiles show), when it has one.
            name = next((info["name"] for info in registry.values()
                         if info["user"] == pk.hosts[r] and info.get("name")), None)
            if name:
                side["name"] = name
            sides.append(side)
        return {"sides": sides, "started_ms": pk.started_ms, "ends_at_ms": pk.ends_at_ms}

    @staticmethod
    def call_view(state: SceneState) -> dict[str, Any] | None:
        call = state.call
        if call is None:
            return None
        return {"host": call.host, "guest": call.guest, "keep_video": call.keep_video, "started_ms": call.started_ms}


# -- role checks ----------------------------------------------------------------------------------------------


def require(member: Member, roles: tuple[Role, ...], what: str, ref: Ref) -> None:
    if member.role not in roles:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"only {' or '.join(r.value for r in roles)} can {what}", ref)


def require_moderator(member: Member, stage: Stage, what: str, ref: Ref) -> None:
    if member.role is Role.HOST or (member.role is Role.COHOST and stage.is_moderator(member.user)):
        return
    raise ProtocolError(ErrorCode.FORBIDDEN, f"only the host or a co-host the host allows can {what}", ref)
