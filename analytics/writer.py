"""Writing analytics events off the hot path: a bounded queue, batched writes from one thread.

``record`` never blocks and never awaits: it appends to a bounded deque (an event that does not fit is
dropped and counted). A background task takes up to ``batch`` events at a time and hands them to the
store in a single thread (SQLite connections stay in one thread, and a slow database never holds the
event loop). When the database fails (PostgreSQL restarting), the batch goes back to the front of the
queue and is retried with a growing pause: nothing that fits the queue is lost. ``healthy`` says whether
the last write (or, when there is nothing to write, the last probe every ``probe_interval``) reached the
database. ``close`` writes everything still queued before it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from analytics.events import Event
from analytics.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class AnalyticsWriter:
    def __init__(self, store: Store, max_queue: int = 100_000, batch: int = 5000, interval: float = 1.0,
                 on_drop: Callable[[], None] | None = None, retention_ms: int = 0,
                 probe_interval: float = 5.0) -> None:
        self.store = store
        self.max_queue = max_queue
        self.batch = batch
        self.interval = interval
        self.queue: deque[Event] = deque()
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self._on_drop = on_drop
        self._retention_ms = retention_ms
        self._next_retention = 0.0
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics")
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._in_flight = 0
        self.healthy = True
        self._probe_interval = probe_interval
        self._next_probe = 0.0

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written: everything recorded so far is in the store."""
        return not self.queue and not self._in_flight

    async def start(self) -> None:
        await self.call(self.store.migrate)
        self._task = asyncio.create_task(self._run(), name="analytics-writer")

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a store method in the writer's thread (one at a time, in order)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def record(self, event: Event) -> None:
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            return
        self.queue.append(event)
        if len(self.queue) >= self.batch:
            self._wakeup.set()

    async def _expire(self) -> None:
        """Retention: once an hour, delete what is older than the retention period."""
        if not self._retention_ms or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + 3600
        try:
            deleted = await self.call(self.store.delete_before, int(time.time() * 1000) - self._retention_ms)
            if deleted:
                log.info("analytics retention: events deleted", extra={"deleted": deleted})
        except Exception as exc:
            log.warning("analytics retention failed", extra={"error": str(exc)[:200]})

    async def _probe(self) -> None:
        """With nothing to write, ask the database now and then whether it is there (for /healthz)."""
        if time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + self._probe_interval
        try:
            await self.call(self.store.ping)
            self.healthy = True
        except Exception as exc:
            if self.healthy:
                log.warning("analytics store unreachable", extra={"error": str(exc)[:200]})
            self.healthy = False

    async def _run(self) -> None:
        pause = self.interval
        while True:
            await self._expire()
            if not self.queue:
                if self._closing:
                    return
                await self._probe()
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.interval)
                except TimeoutError:
                    pass
                continue
            chunk = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
            self._in_flight = len(chunk)
            try:
                await self.call(self.store.insert, chunk)
            except Exception as exc:  # the database is away: keep the batch, try again later
                self._in_flight = 0
                self.failures += 1
                self.healthy = False
                self.queue.extendleft(reversed(chunk))
                log.warning("analytics write failed; retrying", extra={"error": str(exc)[:200],
                                                                      "queued": len(self.queue)})
                if self._closing and pause > 5:
                    return  # shutting down and the database stays away: give up (logged above)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = self.interval
            self.healthy = True
            self.written += len(chunk)
            self._in_flight = 0

    async def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            deadline = time.monotonic() + timeout
            try:
                await asyncio.wait_for(asyncio.shield(self._task), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self._task.cancel()
                log.warning("analytics: events left unwritten at shutdown", extra={"queued": len(self.queue)})
        await self.call(self.store.close)
        self._thread.shutdown(wait=True)
