"""Shows that exist before they start: the schedule, reservations, followers and the webhook outbox.

A ``Show`` is scheduled by a room's host (title, start time, cover, the products it will sell) and goes
``scheduled`` -> ``live`` (the host went live in its room) -> ``ended`` (the host said so), or
``cancelled``. Viewers reserve a show (``remind me``) and follow a host; both are kept by the shop's own user
id (the token's user: the shop knows it already, and it is whom the shop's reminder reaches). The
``outbox`` holds webhook deliveries by idempotency key until one node has delivered each
(signaling/webhooks.py sends them).

Every method blocks (SQL on the analytics store's connection): the server calls them through the analytics
writer's thread. Nothing here knows HTTP.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from analytics.store import Store

STATUSES = ("scheduled", "live", "ended", "cancelled")
# A host going live in a room starts that room's scheduled show whose start is nearest, within this window
# either side of now (a show announced for 20:00 started at 19:40 or at 21:30 is still that show).
GO_LIVE_WINDOW_MS = 3 * 3600_000
MAX_PRODUCTS = 50
_COLUMNS = "id, room, host, title, starts_ms, cover, products, status, created_ms, live_ms, ended_ms, reminded"


@dataclass(frozen=True, slots=True)
class Show:
    id: str
    room: str
    host: str
    title: str
    starts_ms: int
    cover: str | None = None
    products: list[dict[str, Any]] = field(default_factory=list)
    status: str = "scheduled"
    created_ms: int = 0
    live_ms: int | None = None
    ended_ms: int | None = None
    reminded: bool = False

    def public(self) -> dict[str, Any]:
        """What anyone with the show's link may see."""
        return {"id": self.id, "room": self.room, "host": self.host, "title": self.title,
                "starts_ms": self.starts_ms, "cover": self.cover, "products": self.products,
                "status": self.status, "live_ms": self.live_ms, "ended_ms": self.ended_ms}


def _show(row: tuple[Any, ...]) -> Show:
    return Show(id=row[0], room=row[1], host=row[2], title=row[3], starts_ms=int(row[4]), cover=row[5],
                products=json.loads(row[6]) if row[6] else [], status=row[7], created_ms=int(row[8]),
                live_ms=None if row[9] is None else int(row[9]), ended_ms=None if row[10] is None else int(row[10]),
                reminded=bool(row[11]))


class ShowBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._p = store.placeholder

    # -- shows ----------------------------------------------------------------------------------------------

    def schedule(self, room: str, host: str, title: str, starts_ms: int, cover: str | None,
                 products: list[dict[str, Any]], now_ms: int) -> Show:
        show = Show(id=secrets.token_urlsafe(8), room=room, host=host, title=title, starts_ms=starts_ms,
                    cover=cover, products=products[:MAX_PRODUCTS], created_ms=now_ms)
        p = self._p
        self.store.execute(
            f"INSERT INTO shows (id, room, host, title, starts_ms, cover, products, status, created_ms, reminded) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, 'scheduled', {p}, 0)",
            (show.id, room, host, title, starts_ms, cover, json.dumps(show.products, ensure_ascii=False), now_ms))
        return show

    def get(self, show_id: str) -> Show | None:
        rows = self.store.query(f"SELECT {_COLUMNS} FROM shows WHERE id = {self._p}", (show_id,))
        return _show(rows[0]) if rows else None

    def of_room(self, room: str, limit: int = 100) -> list[Show]:
        """The room's shows, soonest first."""
        rows = self.store.query(f"SELECT {_COLUMNS} FROM shows WHERE room = {self._p} ORDER BY starts_ms "
                                f"LIMIT {int(limit)}", (room,))
        return [_show(r) for r in rows]

    def go_live(self, room: str, host: str, now_ms: int) -> Show | None:
        """The host went live in ``room``: its scheduled show nearest to now (within ``GO_LIVE_WINDOW_MS``)
        is live from now, once (another node, or the host's second camera, finds it live already)."""
        p = self._p
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM shows WHERE room = {p} AND host = {p} AND status = 'scheduled' "
            f"AND starts_ms >= {p} AND starts_ms <= {p}",
            (room, host, now_ms - GO_LIVE_WINDOW_MS, now_ms + GO_LIVE_WINDOW_MS))
        if not rows:
            return None
        show = min((_show(r) for r in rows), key=lambda s: abs(s.starts_ms - now_ms))
        changed = self.store.execute(f"UPDATE shows SET status = 'live', live_ms = {p} WHERE id = {p} "
                                     f"AND status = 'scheduled'", (now_ms, show.id))
        return self.get(show.id) if changed else None

    def end(self, show_id: str, now_ms: int) -> Show | None:
        """A live show ends (a scheduled one that never went live is cancelled): the show as it is now."""
        p = self._p
        self.store.execute(f"UPDATE shows SET status = 'ended', ended_ms = {p} WHERE id = {p} AND status = 'live'",
                           (now_ms, show_id))
        self.store.execute(f"UPDATE shows SET status = 'cancelled', ended_ms = {p} WHERE id = {p} "
                           f"AND status = 'scheduled'", (now_ms, show_id))
        return self.get(show_id)

    def due_reminders(self, now_ms: int, lead_ms: int) -> list[Show]:
        """Scheduled shows starting within ``lead_ms``, not yet reminded of, each claimed once (several nodes
        may ask at once: the UPDATE decides)."""
        p = self._p
        rows = self.store.query(f"SELECT {_COLUMNS} FROM shows WHERE status = 'scheduled' AND reminded = 0 "
                                f"AND starts_ms <= {p}", (now_ms + lead_ms,))
        claimed = []
        for show in map(_show, rows):
            if self.store.execute(f"UPDATE shows SET reminded = 1 WHERE id = {p} AND reminded = 0", (show.id,)):
                claimed.append(show)
        return claimed

    # -- reservations and followers -------------------------------------------------------------------------

    def reserve(self, show_id: str, viewer: str, now_ms: int) -> bool:
        """True when this is the viewer's first reservation of the show (a second is no change)."""
        p = self._p
        return self.store.execute(f"INSERT INTO reservations (show_id, viewer, ts_ms) VALUES ({p}, {p}, {p}) "
                                  "ON CONFLICT DO NOTHING", (show_id, viewer, now_ms)) == 1

    def unreserve(self, show_id: str, viewer: str) -> bool:
        p = self._p
        return self.store.execute(f"DELETE FROM reservations WHERE show_id = {p} AND viewer = {p}",
                                  (show_id, viewer)) == 1

    def reservations(self, show_id: str) -> list[tuple[str, int]]:
        """(viewer, when) of each reservation, oldest first."""
        rows = self.store.query(f"SELECT viewer, ts_ms FROM reservations WHERE show_id = {self._p} ORDER BY ts_ms",
                                (show_id,))
        return [(r[0], int(r[1])) for r in rows]

    def reserved(self, show_id: str, viewer: str) -> bool:
        p = self._p
        return bool(self.store.query(f"SELECT 1 FROM reservations WHERE show_id = {p} AND viewer = {p}",
                                     (show_id, viewer)))

    def reservation_count(self, show_id: str) -> int:
        return int(self.store.query(f"SELECT COUNT(*) FROM reservations WHERE show_id = {self._p}", (show_id,))[0][0])

    def follow(self, host: str, viewer: str, now_ms: int) -> bool:
        p = self._p
        return self.store.execute(f"INSERT INTO follows (host, viewer, ts_ms) VALUES ({p}, {p}, {p}) "
                                  "ON CONFLICT DO NOTHING", (host, viewer, now_ms)) == 1

    def unfollow(self, host: str, viewer: str) -> bool:
        p = self._p
        return self.store.execute(f"DELETE FROM follows WHERE host = {p} AND viewer = {p}", (host, viewer)) == 1

    def followers(self, host: str) -> list[str]:
        rows = self.store.query(f"SELECT viewer FROM follows WHERE host = {self._p} ORDER BY ts_ms", (host,))
        return [r[0] for r in rows]

    # -- the webhook outbox ---------------------------------------------------------------------------------

    def enqueue(self, key: str, kind: str, body: dict[str, Any], now_ms: int) -> bool:
        """A delivery, once per ``key`` (enqueueing the same key again is no change)."""
        p = self._p
        return self.store.execute(
            f"INSERT INTO outbox (id, kind, body, created_ms, next_ms) VALUES ({p}, {p}, {p}, {p}, {p}) "
            "ON CONFLICT DO NOTHING", (key, kind, json.dumps(body, ensure_ascii=False), now_ms, now_ms)) == 1

    def claim_due(self, now_ms: int, lease_ms: int, limit: int = 20) -> list[tuple[str, str, str, int]]:
        """(key, kind, body, attempts) of deliveries due now, each leased to this caller for ``lease_ms``
        (another node skips it meanwhile; a node that died mid-delivery leaves it to the next)."""
        p = self._p
        rows = self.store.query(f"SELECT id, kind, body, attempts FROM outbox WHERE delivered_ms IS NULL "
                                f"AND failed = 0 AND next_ms <= {p} AND claimed_until <= {p} ORDER BY next_ms "
                                f"LIMIT {int(limit)}", (now_ms, now_ms))
        claimed = []
        for key, kind, body, attempts in rows:
            if self.store.execute(f"UPDATE outbox SET claimed_until = {p} WHERE id = {p} AND claimed_until <= {p}",
                                  (now_ms + lease_ms, key, now_ms)):
                claimed.append((key, kind, body, int(attempts)))
        return claimed

    def delivered(self, key: str, now_ms: int) -> None:
        p = self._p
        self.store.execute(f"UPDATE outbox SET delivered_ms = {p}, attempts = attempts + 1, claimed_until = 0 "
                           f"WHERE id = {p}", (now_ms, key))

    def attempt_failed(self, key: str, next_ms: int, error: str, give_up: bool) -> None:
        p = self._p
        self.store.execute(f"UPDATE outbox SET attempts = attempts + 1, next_ms = {p}, claimed_until = 0, "
                           f"last_error = {p}, failed = {p} WHERE id = {p}",
                           (next_ms, error[:500], int(give_up), key))

    def outbox(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest deliveries and their state (for the operator)."""
        rows = self.store.query(f"SELECT id, kind, attempts, delivered_ms, failed, last_error, created_ms "
                                f"FROM outbox ORDER BY created_ms DESC LIMIT {int(limit)}")
        return [{"key": r[0], "kind": r[1], "attempts": int(r[2]), "delivered_ms": r[3], "failed": bool(r[4]),
                 "last_error": r[5], "created_ms": int(r[6])} for r in rows]
