"""The broker contract, as centrifuge writes it down, split into the three things a node asks of the place
where rooms are shared:

- ``EventStream``: each room's sequenced stream of durable events, with an epoch and bounded history,
  plus unsequenced broadcasts, delivered to the nodes subscribed to the room.
- ``RoomStore``: what late joiners get whole and what is counted room-wide: state values (pinned note,
  last product card, scene state), the like total, member/viewer counts summed over nodes.
- ``Registry``: who is where: media publishers and the node serving each, signed-in users, the grants
  the server issued (so they can be taken back), and whether a room exists at all.

Stream rules:
- ``publish`` assigns the next sequence number of the room's stream, within the stream's epoch, and
  appends to history *in the same step*: a publication that got a sequence number is in history.
- The epoch names one life of a stream. It changes whenever history could have been lost (a restart
  of the in-process broker, a stream that expired), so a client resuming with an old epoch is told.
- ``recover`` answers "everything after position P": either exactly the missed publications, in
  order, or an explicit reason why not (``epoch_changed``, ``too_old``, ``unknown_position``).
- Publications and broadcasts of rooms this node subscribed to reach the handlers given to
  ``set_handlers``, in publish order per room.

Errors: every method raises ``BrokerUnavailable`` when (and only when) the broker cannot be reached or did
not answer; callers tell clients "retry". Any other exception is a bug and is not dressed up as an outage.
``tests/test_brokers.py`` runs every method of every interface against each backend.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict


class BrokerUnavailable(Exception):
    """The broker cannot be reached or did not answer in time; the same call may succeed later."""


@dataclass(frozen=True, slots=True)
class StreamPosition:
    seq: int
    epoch: str


@dataclass(slots=True)
class Publication:
    seq: int
    epoch: str
    data: dict[str, Any]  # the event, already carrying seq and epoch
    created: float = 0.0  # monotonic time of the publish, for history age


@dataclass(slots=True)
class Recovery:
    position: StreamPosition  # the stream's top when the recovery was read
    publications: list[Publication] = field(default_factory=list)
    recovered: bool = False
    # Why it could not recover: "epoch_changed", "too_old", "unknown_position"; None if nothing was asked.
    reason: str | None = None


class PublisherInfo(TypedDict):
    """A media publisher in the registry: whose it is (and its display name, when it has one), what it
    sends, and the node serving it (that node's WebSocket URL, which edges use to pull it)."""

    user: str
    kinds: list[str]
    node: str
    name: NotRequired[str]


class LiveRoomInfo(TypedDict):
    """A room whose host is on air, in the index other hosts pick a PK opponent from: the host (and its
    display name, when it has one) and the node serving its stream."""

    host: str
    node: str
    name: NotRequired[str]


class GrantRecord(TypedDict):
    """A grant the server issued (a stage seat, a private call): live until taken back or expired."""

    user: str
    role: str
    expires: float  # Unix seconds, as the token's exp


class UserInfo(TypedDict):
    """A signed-in user present in a room on some node."""

    name: str | None
    role: str


PublicationHandler = Callable[[str, Publication], None]
BroadcastHandler = Callable[[str, dict[str, Any]], None]
ResetHandler = Callable[[str], None]


class EventStream(abc.ABC):
    """Sequenced, recoverable room streams and unsequenced broadcasts."""

    _on_publication: PublicationHandler
    _on_broadcast: BroadcastHandler
    on_reset: ResetHandler | None = None

    def set_handlers(self, on_publication: PublicationHandler, on_broadcast: BroadcastHandler,
                     on_reset: ResetHandler | None = None) -> None:
        """``on_reset(room)``: the room's stream was lost under us (its epoch changed while this node was
        subscribed); its local clients must reconnect and be told."""
        self._on_publication = on_publication
        self._on_broadcast = on_broadcast
        self.on_reset = on_reset

    @abc.abstractmethod
    async def subscribe(self, room: str) -> None:
        """Start receiving the room's publications and broadcasts on this node."""

    @abc.abstractmethod
    async def unsubscribe(self, room: str) -> None:
        """Stop receiving them (the stream itself lives on while its history is kept)."""

    @abc.abstractmethod
    async def publish(self, room: str, data: dict[str, Any]) -> Publication:
        """Sequence, store in history and deliver a durable event. ``data`` gets ``seq``/``epoch``."""

    @abc.abstractmethod
    async def broadcast(self, room: str, data: dict[str, Any]) -> None:
        """Deliver a non-durable event (likes totals, presence, scene envelopes) to every subscribed node;
        no sequence, no history."""

    @abc.abstractmethod
    async def recover(self, room: str, since: StreamPosition | None) -> Recovery:
        """The current position and, if ``since`` is given, what came after it (see the module doc)."""

    @abc.abstractmethod
    async def gc(self) -> list[str]:
        """Forget rooms nobody here subscribes to whose history has expired everywhere; return them."""


class RoomStore(abc.ABC):
    """Room-wide values: state kept whole for late joiners, likes, presence counts."""

    @abc.abstractmethod
    async def set_state(self, room: str, key: str, value: dict[str, Any] | None) -> None:
        """Set (or, with None, delete) one state value: pinned announcement, last product card, scenes."""

    @abc.abstractmethod
    async def get_state(self, room: str) -> dict[str, Any]:
        """Every state value of the room (empty for a room never seen)."""

    @abc.abstractmethod
    async def add_likes(self, room: str, count: int) -> int:
        """Add taps to the room-wide like total; return the new total."""

    @abc.abstractmethod
    async def get_likes(self, room: str) -> int: ...

    @abc.abstractmethod
    async def set_presence(self, room: str, node_members: int, node_viewers: int) -> tuple[int, int]:
        """Report this node's member and viewer counts; return the room-wide (members, viewers)."""


class Registry(abc.ABC):
    """Who and what is where, room-wide."""

    @abc.abstractmethod
    async def set_publisher(self, room: str, publisher: str, info: PublisherInfo | None) -> None:
        """Register (or, with None, remove) a media publisher and the node serving it. Registrations are
        refreshed by their node and ignored once stale, so a node that dies drops out."""

    @abc.abstractmethod
    async def get_publishers(self, room: str) -> dict[str, PublisherInfo]: ...

    @abc.abstractmethod
    async def set_live_room(self, room: str, info: LiveRoomInfo | None) -> None:
        """Put the room in the index of rooms whose host is on air (None: take it out). Entries are refreshed
        by the host's node and ignored once stale, as publishers are."""

    @abc.abstractmethod
    async def get_live_rooms(self, limit: int = 100) -> dict[str, LiveRoomInfo]:
        """Rooms whose host is on air, on every node, by room name (at most ``limit``)."""

    @abc.abstractmethod
    async def set_user(self, room: str, user: str, info: UserInfo | None) -> None:
        """Signed-in users present in the room on any node; None removes."""

    @abc.abstractmethod
    async def get_user(self, room: str, user: str) -> UserInfo | None: ...

    @abc.abstractmethod
    async def get_users(self, room: str) -> dict[str, UserInfo]: ...

    @abc.abstractmethod
    async def set_grant(self, room: str, grant_id: str, record: GrantRecord | None) -> None:
        """Register a server-issued grant (or, with None, take it back). Taken back or expired, a token
        carrying it no longer joins, on any node."""

    @abc.abstractmethod
    async def get_grant(self, room: str, grant_id: str) -> GrantRecord | None:
        """The grant if it is live (registered, not taken back, not expired); else None."""

    @abc.abstractmethod
    async def revoke(self, room: str, scope: str, cutoff: float, expires: float | None) -> None:
        """Revoke the room's tokens of ``scope`` (``*``: all, ``user:ID``, ``jti:ID``) issued at or before
        ``cutoff`` (Unix seconds), on every node; kept until ``expires`` (None: kept), when every token it
        covers has expired anyway. A later revocation of the same scope moves its cutoff on."""

    @abc.abstractmethod
    async def get_revocations(self, room: str, scopes: list[str]) -> dict[str, float]:
        """The live revocations among ``scopes``: scope -> cutoff."""

    @abc.abstractmethod
    async def room_exists(self, room: str) -> bool:
        """True while the room's stream (history, state or members) exists anywhere."""


class Broker(EventStream, RoomStore, Registry):
    """One backend serving all three interfaces, with a lifecycle. Code that needs only one interface is
    typed against that one (the hub against ``EventStream``, scenes against ``RoomStore`` + ``Registry``)."""

    async def start(self) -> None:
        """Connect; called once before use."""

    async def close(self) -> None:
        """Disconnect; safe to call twice."""

    @property
    def healthy(self) -> bool:
        return True
