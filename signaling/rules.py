"""A room's moderation rules as plain values, and the decisions taken from them (pure functions, table-tested
in ``tests/test_moderation.py``): who is removed or muted until when, which words are blocked, slow mode,
which comments were deleted; and whether a token was revoked.

The rules live room-wide in the room store (``RoomStore`` state ``moderation``) and every node keeps a copy
per local room, replaced whole whenever a moderator changes them (``signaling/moderation.py``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any

from protocol import Grant

MAX_LISTED_USERS = 10_000  # removed or muted users kept per room (the soonest to expire go first)
MAX_DELETED = 1_000  # deleted comments remembered per room (history holds no more than this anyway)

_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def normalize(text: str) -> str:
    """What word matching compares: NFKC (full-width letters become ASCII), case-folded, with invisible
    characters dropped, so full-width ``BAD`` and ``b\u200bad`` are ``bad``."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold()


def _word_pattern(word: str) -> re.Pattern[str]:
    """Latin words match whole words (``ass`` does not block ``class``); words in scripts written without
    spaces (Chinese, Japanese) match anywhere."""
    escaped = re.escape(normalize(word))
    if word.isascii():
        return re.compile(rf"(?<![0-9a-z]){escaped}(?![0-9a-z])")
    return re.compile(escaped)


@dataclass(frozen=True, slots=True)
class RoomRules:
    removed: dict[str, float] = field(default_factory=dict)  # user -> until (ms since the epoch)
    muted: dict[str, float] = field(default_factory=dict)  # user -> until (ms)
    words: tuple[str, ...] = ()
    slow_mode_s: int = 0
    deleted: tuple[int, ...] = ()  # sequence numbers of deleted comments, oldest first

    # -- decisions ---------------------------------------------------------------------------------------

    def removed_until(self, user: str, now_ms: float) -> float | None:
        until = self.removed.get(user)
        return until if until is not None and until > now_ms else None

    def muted_until(self, user: str, now_ms: float) -> float | None:
        until = self.muted.get(user)
        return until if until is not None and until > now_ms else None

    def blocked_word(self, text: str) -> str | None:
        """The first blocked word the text holds (None: none)."""
        if not self.words:
            return None
        clean = normalize(text)
        return next((w for w in self.words if _word_pattern(w).search(clean)), None)

    def is_deleted(self, seq: int) -> bool:
        return seq in self.deleted

    # -- changes (each returns new rules) -----------------------------------------------------------------

    def with_removed(self, user: str, until_ms: float, now_ms: float) -> RoomRules:
        return replace(self, removed=_bounded({**_live(self.removed, now_ms), user: until_ms}))

    def with_muted(self, user: str, until_ms: float | None, now_ms: float) -> RoomRules:
        muted = _live(self.muted, now_ms)
        muted.pop(user, None)
        if until_ms is not None:
            muted[user] = until_ms
        return replace(self, muted=_bounded(muted))

    def with_words(self, words: list[str]) -> RoomRules:
        return replace(self, words=tuple(dict.fromkeys(w for w in words if normalize(w).strip())))

    def with_slow_mode(self, seconds: int) -> RoomRules:
        return replace(self, slow_mode_s=seconds)

    def with_deleted(self, seq: int) -> RoomRules:
        if seq in self.deleted:
            return self
        return replace(self, deleted=(*self.deleted, seq)[-MAX_DELETED:])

    # -- storage --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "muted": self.muted, "words": list(self.words),
                "slow_mode_s": self.slow_mode_s, "deleted": list(self.deleted)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RoomRules:
        if not data:
            return cls()
        return cls(removed={str(k): float(v) for k, v in (data.get("removed") or {}).items()},
                   muted={str(k): float(v) for k, v in (data.get("muted") or {}).items()},
                   words=tuple(str(w) for w in data.get("words") or ()),
                   slow_mode_s=int(data.get("slow_mode_s") or 0),
                   deleted=tuple(int(s) for s in data.get("deleted") or ()))


def _live(users: dict[str, float], now_ms: float) -> dict[str, float]:
    return {user: until for user, until in users.items() if until > now_ms}


def _bounded(users: dict[str, float]) -> dict[str, float]:
    if len(users) <= MAX_LISTED_USERS:
        return users
    keep = sorted(users.items(), key=lambda item: item[1])[-MAX_LISTED_USERS:]
    return dict(keep)


def may_moderate(moderator_role: str, target_role: str | None) -> bool:
    """A host moderates anyone but a host; a co-host moderates viewers (and users not in the room)."""
    if moderator_role == "host":
        return target_role != "host"
    if moderator_role == "cohost":
        return target_role in (None, "viewer")
    return False


# -- token revocation -----------------------------------------------------------------------------------------

def revocation_scopes(grant: Grant) -> list[str]:
    """The revocation entries that could cover a token: every token of the room, of its user, or its id."""
    scopes = ["*", f"user:{grant.user}"]
    if grant.token_id:
        scopes.append(f"jti:{grant.token_id}")
    return scopes


def is_revoked(grant: Grant, entries: dict[str, float]) -> bool:
    """``entries``: scope -> cutoff (Unix seconds). A token id entry revokes that token whatever its age;
    a room or user entry revokes every token issued at or before its cutoff (a token without ``iat``
    counts as issued at 0)."""
    if grant.token_id and f"jti:{grant.token_id}" in entries:
        return True
    issued = grant.issued_at or 0
    return any(issued <= entries[scope] for scope in ("*", f"user:{grant.user}") if scope in entries)
