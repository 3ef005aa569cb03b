"""How many analytics events per second the writer sustains, on SQLite and on PostgreSQL.

    python -m benchmarks.analytics_writer [--events 200000] [--runs 3] [--postgres DSN]

Each run records --events events (a mix of the kinds a show produces) as fast as the loop allows into a
writer whose queue holds them all, and times until the last is written. Without --postgres a PostgreSQL
server is created on a free loopback port for the run (Debian's package, as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from analytics.events import Event
from analytics.store import PostgresStore, SqliteStore, Store
from analytics.writer import AnalyticsWriter

KINDS = ("join", "comment", "like", "impression", "comment", "click", "comment", "leave")


async def one_run(store: Store, events: int) -> float:
    writer = AnalyticsWriter(store, max_queue=events + 1, batch=2000, interval=0.05)
    await writer.start()
    room = f"bench-{time.monotonic_ns()}"
    started = time.perf_counter()
    for i in range(events):
        writer.record(Event(i, room, "show", KINDS[i % len(KINDS)], viewer=f"v{i % 1000}", product="p1",
                            source="douyin", value=1.0))
        if i % 5000 == 0:
            await asyncio.sleep(0)  # let the writer task run, as a live server's loop would
    while writer.written < events:  # noqa: ASYNC110 - the writer's own counter
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await writer.close()
    return events / elapsed


async def main(events: int, runs: int, dsn: str | None) -> None:
    pg_server = None
    if dsn is None:
        from tests.postgres_server import PostgresServer

        pg_server = PostgresServer()
        pg_server.start()
        dsn = pg_server.dsn
    try:
        for name in ("sqlite", "postgresql"):
            rates = []
            for _ in range(runs):
                with tempfile.TemporaryDirectory() as tmp:
                    store: Store = SqliteStore(Path(tmp) / "a.sqlite3") if name == "sqlite" else PostgresStore(dsn)
                    rates.append(await one_run(store, events))
            print(f"{name}: {', '.join(f'{r:,.0f}' for r in rates)} events/s; median {statistics.median(rates):,.0f}")
    finally:
        if pg_server is not None:
            pg_server.stop()
            pg_server.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="a postgresql:// DSN (default: start one)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.runs, args.postgres))
