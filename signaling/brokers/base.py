"""The broker contract, as centrifuge writes it down.

- ``publish`` assigns the next sequence number of the room's stream, within the stream's epoch, and
  appends to history *in the same step*: a publication that got a sequence number is in history.
- The epoch names one life of a stream. It changes whenever history could have been lost (a restart
  of the in-process broker, a stream that expired), so a client resuming with an old epoch is told.
- ``recover`` answers "everything after position P": either exactly the missed publications, in
  order, or an explicit reason why not (``epoch_changed``, ``too_old``, ``unknown_position``).
- Publications and broadcasts of rooms this node subscribed to reach the handlers set by the hub,
  in publish order per room.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


PublicationHandler = Callable[[str, Publication], None]
BroadcastHandler = Callable[[str, dict[str, Any]], None]


class Broker(abc.ABC):
    """What a node needs from the place where rooms are shared."""

    def set_handlers(self, on_publication: PublicationHandler, on_broadcast: BroadcastHandler,
                     on_reset: Callable[[str], None] | None = None) -> None:
        """``on_reset(room)``: the room's stream was lost under us (its epoch changed while this node was
        subscribed); its local clients must reconnect and be told."""
        self._on_publication = on_publication
        self._on_broadcast = on_broadcast
        self.on_reset = on_reset

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect; safe to call twice."""

    @property
    def healthy(self) -> bool:
        return True

    @abc.abstractmethod
    async def subscribe(self, room: str) -> None:
        """Start receiving the room's publications and broadcasts on this node."""

    @abc.abstractmethod
    async def unsubscribe(self, room: str) -> None: ...

    @abc.abstractmethod
    async def publish(self, room: str, data: dict[str, Any]) -> Publication:
        """Sequence, store in history and deliver a durable event. ``data`` gets ``seq``/``epoch``."""

    @abc.abstractmethod
    async def broadcast(self, room: str, data: dict[str, Any]) -> None:
        """Deliver a non-durable event (likes totals, presence) to every node; no sequence, no history."""

    @abc.abstractmethod
    async def recover(self, room: str, since: StreamPosition | None) -> Recovery:
        """The current position and, if ``since`` is given, what came after it (see the module doc)."""

    @abc.abstractmethod
    async def room_exists(self, room: str) -> bool:
        """True while the room's stream (history or subscribers) exists anywhere."""

    @abc.abstractmethod
    async def set_state(self, room: str, key: str, value: dict[str, Any] | None) -> None:
        """Room state that late joiners get whole: pinned announcement, last product card."""

    @abc.abstractmethod
    async def get_state(self, room: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def add_likes(self, room: str, count: int) -> int:
        """Add taps to the room-wide like total; return the new total."""

    @abc.abstractmethod
    async def get_likes(self, room: str) -> int: ...

    @abc.abstractmethod
    async def set_presence(self, room: str, node_members: int, node_viewers: int) -> tuple[int, int]:
        """Report this node's member and viewer counts; return the room-wide (members, viewers)."""

    @abc.abstractmethod
    async def set_publisher(self, room: str, publisher: str, info: dict[str, Any] | None) -> None:
        """Register (or, with None, remove) a media publisher and the node serving it: ``info`` has
        ``user``, ``kinds`` and ``node`` (that node's WebSocket URL). Registrations are refreshed by their
        node and ignored once stale, so a node that dies drops out."""

    @abc.abstractmethod
    async def get_publishers(self, room: str) -> dict[str, dict[str, Any]]: ...

    @abc.abstractmethod
    async def set_user(self, room: str, user: str, info: dict[str, Any] | None) -> None:
        """Signed-in users present in the room on any node (``name``, ``role``); None removes."""

    @abc.abstractmethod
    async def get_user(self, room: str, user: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def get_users(self, room: str) -> dict[str, dict[str, Any]]: ...

    async def gc(self) -> list[str]:
        """Drop rooms with no subscribers whose history has expired; return their names."""
        return []
