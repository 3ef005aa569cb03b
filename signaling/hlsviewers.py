"""Who watches over LL-HLS, for analytics: a player's requests grouped into a viewing session.

A player never says who it is or when it stops: it asks for playlists and parts, two or three times a second
at the live edge. ``HlsViewers`` keys a session by the token's user (a signed-in viewer) or by the address and
user agent, opens it at its first playlist request (a ``join``, its source the ``?src=``/``?utm_source=`` of
the address the player was given, else ``hls``) and closes it ``idle_s`` after its last (a ``leave`` with the
dwell), so an HLS viewer is counted as a WebRTC viewer is, marked ``via: hls``. Behind a CDN the origin sees
the cache's requests, not the players': count there from the CDN's own logs. At most ``max_sessions`` are
kept (the oldest is closed first).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_SESSIONS = 50_000
IDLE_S = 30.0


@dataclass(slots=True)
class _Session:
    room: str
    key: str
    source: str
    started: float  # wall seconds
    first: float  # monotonic seconds, as ``last``
    last: float


# (room, session key, source, joined wall ms, dwell seconds or None for a join)
Report = Callable[[str, str, str, int, float | None], None]


class HlsViewers:
    def __init__(self, report: Report, idle_s: float = IDLE_S, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._report = report
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock, self._wall = clock, wall
        self._sessions: OrderedDict[tuple[str, str], _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    @staticmethod
    def key_of(user: str | None, address: str, agent: str) -> str:
        """A signed-in viewer by its user; anyone else by address and user agent (hashed: not kept as such)."""
        if user:
            return f"user:{user}"
        return "anon:" + hashlib.sha256(f"{address}\x00{agent}".encode()).hexdigest()[:16]

    def seen(self, room: str, key: str, source: str | None) -> None:
        """A playlist request of the session ``key`` in ``room``."""
        now = self._clock()
        session = self._sessions.get((room, key))
        if session is None:
            session = self._sessions[(room, key)] = _Session(room, key, (source or "hls")[:64], self._wall(), now, now)
            self._report(room, key, session.source, int(session.started * 1000), None)
            while len(self._sessions) > self.max_sessions:
                self._close(self._sessions.popitem(last=False)[1])
        session.last = now
        self._sessions.move_to_end((room, key))

    def sweep(self) -> int:
        """Close the sessions idle ``idle_s``; how many."""
        now, closed = self._clock(), 0
        while self._sessions:
            session = next(iter(self._sessions.values()))  # least recently seen first
            if now - session.last < self.idle_s:
                break
            del self._sessions[(session.room, session.key)]
            self._close(session)
            closed += 1
        return closed

    def close_all(self) -> None:
        while self._sessions:
            self._close(self._sessions.popitem(last=False)[1])

    def _close(self, session: _Session) -> None:
        dwell = session.last - session.first  # (from the first request to the last: a player's time on it)
        self._report(session.room, session.key, session.source, int(session.started * 1000), round(dwell, 3))
