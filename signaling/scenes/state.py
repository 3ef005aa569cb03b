"""Typed scene state: the stage (seats, requests, invitations, moderators), PK links and invitations, a
private call and its invitation. One ``SceneState`` per room, stored whole in the room store under
``scenes`` (JSON) so any node can apply any scene message.

Times: ``expires`` are Unix seconds (compared across nodes), ``*_ms`` are wire timestamps.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NewType

UserId = NewType("UserId", str)
RoomName = NewType("RoomName", str)
MediaKind = Literal["audio", "video"]


def live(expires: float | None, now: float | None = None) -> bool:
    """Whether an invitation or request that expires at ``expires`` still stands."""
    return expires is not None and expires >= (time.time() if now is None else now)


@dataclass(slots=True)
class Seat:
    seat: int
    name: str | None = None
    muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    grant: str | None = None  # the co-host grant issued with the seat, taken back with it


@dataclass(slots=True)
class Stage:
    max_seats: int
    seats: dict[UserId, Seat] = field(default_factory=dict)
    requests: dict[UserId, float] = field(default_factory=dict)  # viewer asking to come up -> expiry
    invites: dict[UserId, float] = field(default_factory=dict)  # viewer the host invited -> expiry
    moderators: list[UserId] = field(default_factory=list)  # co-hosts the host lets answer requests

    @property
    def full(self) -> bool:
        return len(self.seats) >= self.max_seats

    def free_seat(self) -> int:
        taken = {s.seat for s in self.seats.values()}
        return next(n for n in range(1, self.max_seats + 1) if n not in taken)

    def is_moderator(self, user: str) -> bool:
        return user in self.moderators


@dataclass(slots=True)
class PkInvite:
    from_user: UserId
    duration_s: int
    expires: float


@dataclass(slots=True)
class PkLink:
    """Two rooms linked for a PK; the same value is stored in both rooms' state."""

    rooms: list[RoomName]
    hosts: dict[RoomName, UserId]
    started_ms: float
    ends_at_ms: float
    base_likes: dict[RoomName, int]  # each room's like total when the PK began
    scores: dict[RoomName, int]
    owner: str  # the node that ticks the scores

    def other(self, room: str) -> list[RoomName]:
        return [r for r in self.rooms if r != room]


@dataclass(slots=True)
class CallInvite:
    host: UserId
    guest: UserId
    keep_video: bool
    expires: float


@dataclass(slots=True)
class Call:
    host: UserId
    guest: UserId
    keep_video: bool
    started_ms: float
    private_room: RoomName
    grants: list[str] = field(default_factory=list)  # the two parties' grants for the private room

    @property
    def parties(self) -> tuple[UserId, UserId]:
        return self.host, self.guest


@dataclass(slots=True)
class SceneState:
    stage: Stage
    pk_invites: dict[RoomName, PkInvite] = field(default_factory=dict)  # by inviting room
    pk: PkLink | None = None
    call_invite: CallInvite | None = None
    call: Call | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None, max_seats: int) -> SceneState:
        if not raw:
            return cls(Stage(max_seats))
        stage = raw["stage"]
        return cls(
            stage=Stage(max_seats=stage["max_seats"],
                        seats={UserId(u): Seat(**s) for u, s in stage["seats"].items()},
                        requests=dict(stage["requests"]), invites=dict(stage["invites"]),
                        moderators=list(stage["moderators"])),
            pk_invites={RoomName(r): PkInvite(**i) for r, i in raw.get("pk_invites", {}).items()},
            pk=PkLink(**raw["pk"]) if raw.get("pk") else None,
            call_invite=CallInvite(**raw["call_invite"]) if raw.get("call_invite") else None,
            call=Call(**raw["call"]) if raw.get("call") else None,
        )


@dataclass(frozen=True, slots=True)
class Private:
    """A private call room: only its two parties may join; ``show`` is the room it was switched from. When
    the call ends the room stays ``closed`` to everyone (for as long as room state is kept)."""

    users: tuple[UserId, UserId]
    show: RoomName
    closed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"users": list(self.users), "show": self.show, "closed": self.closed}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Private | None:
        if not raw:
            return None
        host, guest = raw["users"]
        return cls((UserId(host), UserId(guest)), RoomName(raw["show"]), bool(raw.get("closed")))
