"""Where analytics events are kept: one schema, two databases.

``SqliteStore`` is the default: a file under the data directory, created on first use, nothing to set up.
SQLite rather than DuckDB because the work is many small appends from a live server with reports read
while it writes: SQLite's WAL mode lets the dashboard read while the writer appends, it is in the standard
library, and a show's events (thousands to a few million rows) are small enough that a columnar engine
buys nothing. ``PostgresStore`` (psycopg 3) is for several nodes writing to one place. Both run the same
SQL (the few dialect differences are in ``Dialect``) and the same versioned migrations.

Every method blocks: the writer calls them from its own thread, reports from a thread or the CLI.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from analytics.events import Event

# Versioned migrations: each entry runs once, in order, and bumps schema_version. Never edit one that
# has shipped; add the next.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS events (
            ts_ms BIGINT NOT NULL,
            room TEXT NOT NULL,
            show_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            viewer TEXT,
            product TEXT,
            source TEXT,
            value DOUBLE PRECISION,
            ref TEXT,
            data TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS events_by_show ON events (room, show_id, ts_ms)",
        "CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_ms)",
        # An order is counted once, however often the shop's webhook delivers it.
        "CREATE UNIQUE INDEX IF NOT EXISTS orders_once ON events (room, ref) WHERE kind = 'order'",
    ],
    [
        # A scene moment (stage, PK, call) is seen by every node of the room: kept once.
        "CREATE UNIQUE INDEX IF NOT EXISTS moments_once ON events (room, ref) WHERE kind = 'stage'",
    ],
    [
        # Shows that exist before they start (analytics/showbook.py), who reserved and who follows whom.
        """CREATE TABLE IF NOT EXISTS shows (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            host TEXT NOT NULL,
            title TEXT NOT NULL,
            starts_ms BIGINT NOT NULL,
            cover TEXT,
            products TEXT,
            status TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            live_ms BIGINT,
            ended_ms BIGINT,
            reminded INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX IF NOT EXISTS shows_by_room ON shows (room, starts_ms)",
        """CREATE TABLE IF NOT EXISTS reservations (
            show_id TEXT NOT NULL,
            viewer TEXT NOT NULL,
            ts_ms BIGINT NOT NULL,
            PRIMARY KEY (show_id, viewer)
        )""",
        """CREATE TABLE IF NOT EXISTS follows (
            host TEXT NOT NULL,
            viewer TEXT NOT NULL,
            ts_ms BIGINT NOT NULL,
            PRIMARY KEY (host, viewer)
        )""",
        # Webhook deliveries waiting, by idempotency key: a key is delivered once (nodes claim a row for a
        # lease before sending it), retried with backoff until it is taken or given up.
        """CREATE TABLE IF NOT EXISTS outbox (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_ms BIGINT NOT NULL,
            claimed_until BIGINT NOT NULL DEFAULT 0,
            delivered_ms BIGINT,
            failed INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_ms, failed, next_ms)",
    ],
]

COLUMNS = ("ts_ms", "room", "show_id", "kind", "viewer", "product", "source", "value", "ref", "data")


@dataclass(frozen=True)
class Dialect:
    placeholder: str
    version_table: str = field(default="CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")

    def params(self, n: int) -> str:
        return ", ".join([self.placeholder] * n)


def _row(event: Event) -> tuple[Any, ...]:
    return (event.ts_ms, event.room, event.show, event.kind, event.viewer, event.product, event.source,
            event.value, event.ref, json.dumps(event.data, separators=(",", ":")) if event.data else None)


def _event(row: Sequence[Any]) -> Event:
    return Event(ts_ms=int(row[0]), room=row[1], show=row[2], kind=row[3], viewer=row[4], product=row[5],
                 source=row[6], value=None if row[7] is None else float(row[7]), ref=row[8],
                 data=json.loads(row[9]) if row[9] else None)


class Store(Protocol):
    """What the writer and the reports need of a database."""

    name: str

    def migrate(self) -> int: ...

    def insert(self, events: Sequence[Event]) -> None: ...

    def insert_order(self, event: Event) -> bool: ...

    def events(self, room: str, show: str | None = None) -> list[Event]: ...

    def shows(self, room: str) -> list[tuple[str, int, int]]: ...

    def events_between(self, room: str, from_ms: int, to_ms: int) -> list[Event]: ...

    def last_push(self, room: str, product: str) -> Event | None: ...

    def joined_before(self, room: str, before_ms: int) -> list[str]: ...

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    @property
    def placeholder(self) -> str: ...

    def delete_before(self, ts_ms: int) -> int: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class SqlStore:
    """The SQL both databases share, over a DB-API connection."""

    name = "sql"

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._db = connection
        self._dialect = dialect
        self._lock = threading.Lock()  # one connection; the writer thread and a report may share it

    def migrate(self) -> int:
        """Bring the schema to the newest version; returns it."""
        with self._lock:
            self._ensure()
            cursor = self._db.cursor()
            cursor.execute(self._dialect.version_table)
            cursor.execute("SELECT MAX(version) FROM schema_version")
            current = cursor.fetchone()[0] or 0
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    cursor.execute(statement)
                cursor.execute(f"INSERT INTO schema_version (version) VALUES ({self._dialect.placeholder})",
                               (version,))
            self._db.commit()
            return len(MIGRATIONS)

    def insert(self, events: Sequence[Event]) -> None:
        if not events:
            return
        sql = (f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({self._dialect.params(len(COLUMNS))}) "
               "ON CONFLICT DO NOTHING")
        with self._lock:
            self._ensure()
            try:
                self._db.cursor().executemany(sql, [_row(e) for e in events])
                self._db.commit()
            except Exception:
                self._db.rollback()
                raise

    def insert_order(self, event: Event) -> bool:
        """Insert an order once: False when an order with this reference is already kept."""
        sql = (f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({self._dialect.params(len(COLUMNS))}) "
               "ON CONFLICT DO NOTHING")
        with self._lock:
            self._ensure()
            try:
                cursor = self._db.cursor()
                cursor.execute(sql, _row(event))
                inserted = cursor.rowcount == 1
                self._db.commit()
                return bool(inserted)
            except Exception:
                self._db.rollback()
                raise

    def events(self, room: str, show: str | None = None) -> list[Event]:
        p = self._dialect.placeholder
        sql = f"SELECT {', '.join(COLUMNS)} FROM events WHERE room = {p}"
        args: list[Any] = [room]
        if show is not None:
            sql += f" AND show_id = {p}"
            args.append(show)
        sql += " ORDER BY ts_ms"
        with self._lock:
            self._ensure()
            cursor = self._db.cursor()
            cursor.execute(sql, args)
            rows = cursor.fetchall()
            self._db.commit()
        return [_event(r) for r in rows]

    def events_between(self, room: str, from_ms: int, to_ms: int) -> list[Event]:
        """Every event of ``room`` from ``from_ms`` to ``to_ms`` (a scheduled show's time on air)."""
        p = self._dialect.placeholder
        rows = self.query(f"SELECT {', '.join(COLUMNS)} FROM events WHERE room = {p} AND ts_ms >= {p} "
                          f"AND ts_ms <= {p} ORDER BY ts_ms", (room, from_ms, to_ms))
        return [_event(r) for r in rows]

    def last_push(self, room: str, product: str) -> Event | None:
        """The last push of ``product`` in ``room`` (a replay's card, after the node forgot the live one)."""
        p = self._dialect.placeholder
        rows = self.query(f"SELECT {', '.join(COLUMNS)} FROM events WHERE room = {p} AND kind = 'push' "
                          f"AND product = {p} ORDER BY ts_ms DESC LIMIT 1", (room, product))
        return _event(rows[0]) if rows else None

    def joined_before(self, room: str, before_ms: int) -> list[str]:
        """The viewer ids that joined ``room`` before ``before_ms`` (a viewer's id is the same in every show
        of a room: who comes back)."""
        p = self._dialect.placeholder
        rows = self.query(f"SELECT DISTINCT viewer FROM events WHERE room = {p} AND kind = 'join' AND ts_ms < {p} "
                          "AND viewer IS NOT NULL", (room, before_ms))
        return [r[0] for r in rows]

    @property
    def placeholder(self) -> str:
        return self._dialect.placeholder

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one SELECT (``placeholder`` marks the arguments)."""
        with self._lock:
            self._ensure()
            cursor = self._db.cursor()
            cursor.execute(sql, tuple(args))
            rows = cursor.fetchall()
            self._db.commit()
        return [tuple(r) for r in rows]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One INSERT/UPDATE/DELETE, committed: how many rows it changed."""
        with self._lock:
            self._ensure()
            try:
                cursor = self._db.cursor()
                cursor.execute(sql, tuple(args))
                count = cursor.rowcount
                self._db.commit()
            except Exception:
                self._db.rollback()
                raise
        return int(count)

    def shows(self, room: str) -> list[tuple[str, int, int]]:
        """(show id, first event, last event) of every show kept for ``room``, oldest first."""
        sql = (f"SELECT show_id, MIN(ts_ms), MAX(ts_ms) FROM events WHERE room = {self._dialect.placeholder} "
               "GROUP BY show_id ORDER BY MIN(ts_ms)")
        with self._lock:
            self._ensure()
            cursor = self._db.cursor()
            cursor.execute(sql, (room,))
            rows = cursor.fetchall()
            self._db.commit()
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    def delete_before(self, ts_ms: int) -> int:
        """Retention: drop every event older than ``ts_ms``; returns how many."""
        with self._lock:
            self._ensure()
            cursor = self._db.cursor()
            cursor.execute(f"DELETE FROM events WHERE ts_ms < {self._dialect.placeholder}", (ts_ms,))
            count = cursor.rowcount
            self._db.commit()
            return int(count)

    def ping(self) -> None:
        """Raise unless the database answers (the writer's health probe)."""
        with self._lock:
            self._ensure()
            self._db.execute("SELECT 1")

    def _ensure(self) -> None:
        """Before each use: a connection that broke (the server restarted) is replaced."""

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteStore(SqlStore):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
        connection.execute("PRAGMA journal_mode=WAL")  # reports read while the writer appends
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        super().__init__(connection, Dialect("?"))


class PostgresStore(SqlStore):
    name = "postgresql"

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        import psycopg  # only needed for PostgreSQL

        self._dsn, self._timeout = dsn, int(max(1, connect_timeout))
        super().__init__(psycopg.connect(dsn, connect_timeout=self._timeout), Dialect("%s"))

    def _ensure(self) -> None:
        import psycopg

        if self._db.closed or self._db.broken:
            self._db = psycopg.connect(self._dsn, connect_timeout=self._timeout)


def open_store(url: str, data_dir: Path) -> Store:
    """``postgresql://...`` for PostgreSQL; anything else is a SQLite file (``sqlite:///path`` or a path;
    empty means ``DATA_DIR/analytics.sqlite3``)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    path = url.removeprefix("sqlite://") if url else ""
    return SqliteStore(Path(path) if path else data_dir / "analytics.sqlite3")


def all_events(store: Store, rooms: Iterable[str]) -> list[Event]:
    return [e for room in rooms for e in store.events(room)]
