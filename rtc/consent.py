"""Consent freshness (RFC 7675) that a busy node or a long path does not break: what replaces aioice's.

aioice sends a consent check every ~5 s with no retransmission, counts a check unanswered within its first
retransmission timeout (500 ms by default, 50 ms with ``rtc.handshake.set_stun_schedule``) as failed, and
closes the connection after 6 failures in a row. So a path whose round trip is longer than that timeout, or
a node whose event loop is behind by that much (100 subscribers on 2 cores), loses every connection after
about 30 s, its publisher's too, without a word. RFC 7675 says consent expires when no check was answered
for 30 s; here each check is retransmitted on the STUN schedule (a few times), and the connection is closed
only when the last answer is ``CONSENT_EXPIRY`` seconds old.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

log = logging.getLogger(__name__)

CONSENT_INTERVAL = 5.0  # seconds between checks, randomized 0.8-1.2x (RFC 7675 section 5.1)
CONSENT_EXPIRY = 30.0  # seconds without an answer after which consent is gone
CONSENT_RETRANSMISSIONS = 4  # per check: 50 ms .. 800 ms on our schedule, 1.55 s in all


def consent_expired(last_answer: float, now: float, expiry: float = CONSENT_EXPIRY) -> bool:
    return now - last_answer >= expiry


def keep_consent(connection: Any) -> None:
    """Make the aioice ``connection`` check consent as RFC 7675 says (see the module). Call before it
    connects (aioice starts the checks when ICE completes)."""
    if getattr(connection, "_live_relay_consent", False):
        return
    connection._live_relay_consent = True

    async def query_consent() -> None:
        from aioice import stun

        last_answer = time.monotonic()
        while True:
            await asyncio.sleep(CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
            for pair in list(connection._nominated.values()):
                request = connection.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(request, pair.remote_addr,
                                                integrity_key=connection.remote_password.encode("utf8"),
                                                retransmissions=CONSENT_RETRANSMISSIONS)
                    last_answer = time.monotonic()
                except stun.TransactionError:
                    pass
            if consent_expired(last_answer, time.monotonic(), CONSENT_EXPIRY):
                log.info("ICE consent expired", extra={"seconds": round(time.monotonic() - last_answer, 1)})
                connection._query_consent_task = None
                await connection.close()
                return

    connection.query_consent = query_consent
