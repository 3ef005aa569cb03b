"""Is this node saturated? Measured by how late its event loop runs a timer (everything the node does runs
on that loop: media forwarding, RTCP, WebSockets), and what admission does about it.

A saturated node refuses new media subscriptions (``overloaded``, with a retry hint) so the viewers it
already carries keep their stream: one more subscriber on a full loop delays every packet of everyone's.
Publishers and what already flows are never cut for load. The decision (``LagGauge``) is a pure function
of the samples, with hysteresis so a node does not flap at the threshold; ``LoopWatch`` takes the samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.1  # seconds between the watch's timers
SMOOTHING = 0.2  # weight of a new sample: about the last second counts


class LagGauge:
    """The loop's lateness, smoothed, and whether that means saturated: over ``high`` seconds it is, and it
    stays so until the lag is back under half of that."""

    def __init__(self, high: float) -> None:
        self.high = high
        self.lag = 0.0
        self.saturated = False
        self.episodes = 0  # times it became saturated

    def observe(self, lag: float) -> bool:
        """Take one sample (seconds late); returns whether the saturation state changed."""
        self.lag = self.lag * (1 - SMOOTHING) + max(0.0, lag) * SMOOTHING
        was = self.saturated
        if self.high > 0:
            if not was and self.lag > self.high:
                self.saturated = True
                self.episodes += 1
            elif was and self.lag < self.high / 2:
                self.saturated = False
        return self.saturated != was

    def retry_after_ms(self) -> int:
        """What a refused client is told to wait: longer the further over the threshold the node is."""
        return int(min(10_000, max(1_000, 2_000 * self.lag / self.high))) if self.high > 0 else 1_000


class LoopWatch:
    """Samples how late a timer fires on the running loop, into a ``LagGauge``; ``on_change(saturated)``
    hears when the node becomes saturated or recovers."""

    def __init__(self, gauge: LagGauge, on_change: Callable[[bool], None] | None = None) -> None:
        self.gauge = gauge
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_INTERVAL
            await asyncio.sleep(SAMPLE_INTERVAL)
            if self.gauge.observe(loop.time() - due):
                saturated = self.gauge.saturated
                log.warning("node saturated: refusing new subscriptions" if saturated else
                            "node no longer saturated", extra={"loop_lag_ms": round(self.gauge.lag * 1000, 1)})
                if self._on_change is not None:
                    self._on_change(saturated)
