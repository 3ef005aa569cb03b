"""The operator's webhook: reminders, scheduled shows, show starts and follow-up lists leave through it.

Each delivery is a row of the outbox (analytics/showbook.py) under an idempotency key, written before it
is sent, so a restart or a receiver that is down loses nothing. ``WebhookSender`` takes due rows (leased,
so two nodes never send one at once), POSTs each as JSON with:

- ``Idempotency-Key``: the row's key; a receiver that got it already answers 2xx and does nothing (a
  delivery whose 2xx was lost on the way back comes again with the same key);
- ``X-Live-Relay-Event``: the kind (``show.scheduled``, ``show.reminder``, ``show.live``, ``show.followups``);
- ``X-Live-Relay-Signature: t=UNIX,v1=HEX``: HMAC-SHA256 with the webhook secret over ``"{t}.{body}"`` (the
  timestamp inside the signature, so a captured delivery cannot be replayed later as new).

A 2xx delivers it; anything else (refused, timed out, 5xx) tries again after ``backoff_s(attempts)``: 1, 2, 4 s
... at most ``max_backoff_s``, with up to 20% jitter; after ``max_attempts`` it is given up and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from typing import Any

import aiohttp

from analytics.showbook import ShowBook
from analytics.writer import AnalyticsWriter

log = logging.getLogger(__name__)

LEASE_MS = 30_000
TIMEOUT_S = 10.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300.0) -> bool:
    """What a receiver checks (the tests' receiver does): the signature, and a timestamp within
    ``tolerance_s`` of ``now``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    return abs(now - timestamp) <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), header)


def backoff_s(attempts: int, max_backoff_s: float, rng: random.Random | None = None) -> float:
    """The wait after the ``attempts``-th failed try: doubling from 1 s, capped, up to 20% jitter."""
    base = min(max_backoff_s, 2.0 ** max(0, attempts - 1))
    return base * (1 + 0.2 * (rng or random).random())


class WebhookSender:
    def __init__(self, url: str, secret: str, writer: AnalyticsWriter, book: ShowBook,
                 max_backoff_s: float = 300.0, max_attempts: int = 20, interval_s: float = 0.5) -> None:
        self.url, self._secret = url, secret
        self._writer, self._book = writer, book
        self.max_backoff_s, self.max_attempts, self.interval_s = max_backoff_s, max_attempts, interval_s
        self.delivered = 0
        self.failed_attempts = 0
        self.given_up = 0
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        """Something was enqueued: look now rather than at the next interval."""
        self._wake.set()

    async def enqueue(self, key: str, kind: str, body: dict[str, Any]) -> bool:
        added = await self._writer.call(self._book.enqueue, key, kind, body, int(time.time() * 1000))
        self.wake()
        return added

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away for a moment: the rows wait for the next round
                log.exception("webhook deliveries could not be read")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def _round(self) -> None:
        now_ms = int(time.time() * 1000)
        due = await self._writer.call(self._book.claim_due, now_ms, LEASE_MS)
        for key, kind, body, attempts in due:
            error = await self._send(key, kind, body.encode())
            now_ms = int(time.time() * 1000)
            if error is None:
                self.delivered += 1
                await self._writer.call(self._book.delivered, key, now_ms)
                continue
            self.failed_attempts += 1
            give_up = attempts + 1 >= self.max_attempts
            self.given_up += give_up
            wait_ms = int(backoff_s(attempts + 1, self.max_backoff_s) * 1000)
            log.warning("webhook delivery failed", extra={"key": key, "kind": kind, "attempt": attempts + 1,
                                                          "error": error, "given_up": give_up})
            await self._writer.call(self._book.attempt_failed, key, now_ms + wait_ms, error, give_up)

    async def _send(self, key: str, kind: str, body: bytes) -> str | None:
        """None when the receiver took it (2xx); otherwise why not."""
        assert self._session is not None
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, "X-Live-Relay-Event": kind,
                   "X-Live-Relay-Signature": sign(self._secret, int(time.time()), body),
                   "User-Agent": "live-relay-webhook"}
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def body_of(kind: str, **fields: Any) -> dict[str, Any]:
    """A delivery's JSON: its kind, when it was made, and the fields."""
    return {"event": kind, "ts_ms": int(time.time() * 1000), **fields}

