"""A chat room as one node sees it: its local connections, and what it coalesces before broadcasting.

Sequence numbers, history and shared state are the broker's; a ChatRoom only knows who is connected
here, fans events out to them, and batches the high-rate traffic (likes, presence) into periodic totals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from signaling.outbound import OutboundEvent
from signaling.protocol import Role
from signaling.session import Delivery, Session


@dataclass(slots=True)
class FanoutResult:
    written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class ChatRoom:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: dict[str, Session] = {}
        self.pending_likes = 0
        self.last_likes_total: int | None = None
        self.presence_dirty = False
        self.joined_names: list[dict[str, Any]] = []
        self.left_names: list[dict[str, Any]] = []
        self.overflowed = False  # more joins/leaves than a presence event lists

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def viewer_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.role is Role.VIEWER)

    def add(self, session: Session, max_names: int) -> None:
        self.sessions[session.id] = session
        self._note_presence(self.joined_names, session, max_names)

    def remove(self, session: Session, max_names: int) -> bool:
        if self.sessions.pop(session.id, None) is None:
            return False
        self._note_presence(self.left_names, session, max_names)
        return True

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

    def fanout(self, event: OutboundEvent) -> FanoutResult:
        result = FanoutResult()
        # A snapshot: a kick during the loop removes its session from the dict.
        for session in list(self.sessions.values()):
            outcome = session.deliver(event)
            if outcome is Delivery.WRITTEN:
                result.written += 1
            elif outcome is Delivery.DROPPED_SLOW or outcome is Delivery.KICKED:
                result.dropped[outcome.value] += 1
        return result
