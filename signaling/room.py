"""A chat room as one node sees it: its local connections, and what it coalesces before broadcasting.

Sequence numbers, history and shared state are the broker's; a ChatRoom only knows who is connected
here, fans events out to them, and batches the high-rate traffic (likes, presence) into periodic totals.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import Role
from signaling.outbound import OutboundBatch, OutboundEvent
from signaling.session import Delivery, Session


@dataclass(slots=True)
class FanoutResult:
    written: Counter[str] = field(default_factory=Counter)  # by event kind
    dropped: Counter[str] = field(default_factory=Counter)  # by reason


class ChatRoom:
    def __init__(self, name: str, on_flushed: Callable[[OutboundBatch, FanoutResult], None]) -> None:
        self.name = name
        self.sessions: dict[str, Session] = {}
        self._pending: list[OutboundEvent] = []
        self._flush_scheduled = False
        self._on_flushed = on_flushed
        self.pending_likes = 0
        self.last_likes_total: int | None = None
        self.presence_dirty = False
        self.joined_names: list[dict[str, Any]] = []
        self.left_names: list[dict[str, Any]] = []
        self.overflowed = False  # more joins/leaves than a presence event lists
        self._viewers = 0

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def viewer_count(self) -> int:
        """Kept as sessions come, go and change role: a join costs the same in a room of any size."""
        return self._viewers

    def add(self, session: Session, max_names: int) -> None:
        self.sessions[session.id] = session
        if session.role is Role.VIEWER:
            self._viewers += 1
        session.on_role_change = self._role_changed
        self._note_presence(self.joined_names, session, max_names)

    def remove(self, session: Session, max_names: int) -> bool:
        if self.sessions.pop(session.id, None) is None:
            return False
        session.on_role_change = None
        if session.role is Role.VIEWER:
            self._viewers -= 1
        self._note_presence(self.left_names, session, max_names)
        return True

    def _role_changed(self, session: Session, old: Role, new: Role) -> None:
        self._viewers += (new is Role.VIEWER) - (old is Role.VIEWER)

    def _note_presence(self, names: list[dict[str, Any]], session: Session, max_names: int) -> None:
        self.presence_dirty = True
        if len(self.joined_names) + len(self.left_names) < max_names:
            entry: dict[str, Any] = {"user": session.user, "role": str(session.role)}
            if session.name:
                entry["name"] = session.name
            names.append(entry)
        else:
            self.overflowed = True

    def take_presence_changes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        changes = (self.joined_names, self.left_names, self.overflowed)
        self.joined_names, self.left_names, self.overflowed = [], [], False
        self.presence_dirty = False
        return changes

    def fanout(self, event: OutboundEvent) -> None:
        """Queue an event for this room's connections; it goes out at the end of this loop iteration,
        together with whatever else reached the room in the same iteration."""
        self._pending.append(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        batch = OutboundBatch(self._pending)
        self._pending = []
        result = FanoutResult()
        written, dropped = result.written, result.dropped
        whole = 0  # sessions that took the whole batch as shared bytes (the common case)
        # A snapshot: a kick during the loop removes its session from the dict.
        for session in list(self.sessions.values()):
            outcome = session.deliver_batch(batch)
            if outcome is Delivery.WRITTEN:
                whole += 1
                continue
            if outcome is not None:
                continue
            # Slow, joining or overlapping this batch: event by event, with the per-event rules.
            for event in batch.events:
                one = session.deliver(event)
                if one is Delivery.WRITTEN:
                    written[event.kind] += 1
                elif one is Delivery.DROPPED_SLOW or one is Delivery.KICKED:
                    dropped[one.value] += 1
        if whole:
            for kind, count in batch.kinds.items():
                written[kind] += count * whole
        self._on_flushed(batch, result)
