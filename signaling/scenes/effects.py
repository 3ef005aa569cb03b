"""Scene messages for particular users, and the side effects that travel with them.

A scene rule runs on whichever node received the message, but the users it concerns may be connected to
any node. So a rule broadcasts a ``_direct`` envelope to the room's nodes: a message, whom it is for
(users and/or roles), and its effects. Every node applies the envelope to its own members of the room:
it delivers the message, changes their role (a seat granted or taken back), closes their publications,
closes their connection (a private call that ended), and mutes a user's published track where that
publisher lives.

Envelope (internal between nodes, never sent to clients)::

    {"type": "_direct", "room": R, "message": {...} | null, "users": [...] | null, "roles": [...] | null,
     "actions": {"set_role": "viewer", "unpublish": true, "close": "reason",
                 "mute": {"user": U, "kind": "video", "muted": true}}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import CloseCode, Role
from signaling.outbound import OutboundEvent
from signaling.scenes.port import Member, ScenePorts

DIRECT = "_direct"


@dataclass(frozen=True, slots=True)
class Mute:
    user: str
    kind: str
    muted: bool


@dataclass(frozen=True, slots=True)
class Effects:
    set_role: Role | None = None
    unpublish: bool = False
    close: str | None = None  # close the targeted connections with this reason
    mute: Mute | None = None  # applies to the user's publications, wherever they are; needs no target

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.set_role is not None:
            out["set_role"] = str(self.set_role)
        if self.unpublish:
            out["unpublish"] = True
        if self.close is not None:
            out["close"] = self.close
        if self.mute is not None:
            out["mute"] = {"user": self.mute.user, "kind": self.mute.kind, "muted": self.mute.muted}
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Effects:
        raw = raw or {}
        mute = raw.get("mute")
        return cls(set_role=Role(raw["set_role"]) if "set_role" in raw else None,
                   unpublish=bool(raw.get("unpublish")), close=raw.get("close"),
                   mute=Mute(mute["user"], mute["kind"], mute["muted"]) if mute else None)


def direct_envelope(room: str, message: dict[str, Any] | None, users: list[str] | None,
                    roles: list[Role] | None, effects: Effects | None) -> dict[str, Any]:
    return {"type": DIRECT, "room": room, "message": message, "users": users,
            "roles": [str(r) for r in roles] if roles is not None else None,
            "actions": (effects or Effects()).to_json()}


def _targeted(member: Member, users: list[str] | None, roles: list[str] | None) -> bool:
    return bool((users and member.user in users and not member.anonymous) or (roles and member.role in roles))


def apply_direct(ports: ScenePorts, room: str, envelope: dict[str, Any]) -> None:
    """Apply a ``_direct`` envelope to this node's members of ``room`` (called from the broker sink)."""
    effects = Effects.from_json(envelope.get("actions"))
    media = ports.media
    if effects.mute is not None and media is not None:  # acts where the publisher is; a no-op elsewhere
        media.set_muted(room, effects.mute.user, effects.mute.kind, effects.mute.muted)
    users, roles = envelope.get("users"), envelope.get("roles")
    if users is None and roles is None:
        return
    event = OutboundEvent(envelope["message"]) if envelope.get("message") else None
    local = ports.local
    for member in local.members(room):
        if not _targeted(member, users, roles):
            continue
        if effects.set_role is not None:
            member.role = effects.set_role
            local.spawn(ports.registry.set_user(room, member.user, {"name": member.name, "role": str(member.role)}),
                        f"user-role-{member.id}")
        if effects.unpublish and media is not None:
            local.spawn(media.unpublish(member), f"unpublish-{member.id}")
        if event is not None:
            member.deliver(event)
        if effects.close is not None:
            local.spawn(local.disconnect(member, CloseCode.NORMAL, effects.close), f"close-{member.id}")
