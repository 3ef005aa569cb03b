"""What scenes need from the rest of the server, and nothing more (mediasoup hands a Transport
``getProducerById``, not the Router): the room store and registry, a broadcast to the room's nodes, a
grant signer, this node's local members of a room, and the media effects (mute, unpublish, close links).

The server wires these in ``signaling/app.py``; unit tests (``tests/test_scene_rules.py``) wire an
in-process broker and members of their own, with no server, socket or peer connection.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from protocol import CloseCode, Role
from signaling.brokers import EventStream, Registry, RoomStore
from signaling.outbound import OutboundEvent


class Member(Protocol):
    """One local connection of a room, as scenes see it (``signaling.session.Session`` is one)."""

    id: str
    user: str
    name: str | None
    role: Role
    anonymous: bool

    def deliver(self, event: OutboundEvent) -> object: ...


class LocalMembers(Protocol):
    """This node's connections, by room."""

    def room_names(self) -> list[str]:
        """Rooms with a local presence on this node (scenes sweep and tick only these)."""
        ...

    def members(self, room: str) -> list[Member]: ...

    async def disconnect(self, member: Member, code: CloseCode, reason: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run side work off the caller's path (its failure is logged, never lost)."""
        ...


class SceneMedia(Protocol):
    """The media effects of scenes; each acts on this node's own peers only."""

    def set_muted(self, room: str, user: str, kind: str, muted: bool) -> int: ...

    async def unpublish(self, member: Member) -> None:
        """Close every publication of this connection."""

    async def close_cross_room(self, room: str, other: str) -> None:
        """Close ``room``'s subscriptions to publishers of ``other`` (a PK link ended)."""


GrantSigner = Callable[[str, str, Role, float, str | None, str], str]
"""(room, user, role, ttl seconds, display name, grant id) -> a signed token carrying the grant id."""


@dataclass(frozen=True, slots=True)
class ScenePorts:
    store: RoomStore
    registry: Registry
    stream: EventStream  # broadcasts only: scene views and the envelopes each node applies
    sign_grant: GrantSigner
    local: LocalMembers
    media: SceneMedia | None = None  # None on a server run without media
