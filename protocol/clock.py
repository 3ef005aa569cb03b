"""Time on the wire: every ``*ts`` field is wall-clock milliseconds since the Unix epoch on the server's
clock; clients estimate their offset to it from ping/pong to measure end-to-end latency."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


def now_ms() -> float:
    """Wall-clock time in milliseconds since the Unix epoch: the unit of every ``*ts`` field."""
    return time.time() * 1000.0


@dataclass(slots=True)
class ClockEstimate:
    """Client-side clock offset to the server, from ping/pong, keeping the minimum-RTT sample.

    ``offset_ms`` is what to add to the local clock to get the server's clock.
    """

    offset_ms: float = 0.0
    rtt_ms: float = math.inf

    def add_sample(self, sent_local_ms: float, server_ts: float, received_local_ms: float) -> None:
        rtt = received_local_ms - sent_local_ms
        if rtt < 0 or rtt >= self.rtt_ms:
            return
        self.rtt_ms = rtt
        self.offset_ms = server_ts - (sent_local_ms + rtt / 2.0)

    def server_now(self) -> float:
        return now_ms() + self.offset_ms
