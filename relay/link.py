"""One subscriber's link: what its RTCP says it can carry, and what the relay sends it because of that.

A ``SubscriberLink`` is shared by a subscriber's down-tracks. It gathers the subscriber's own word on its
link (receiver reports: loss, jitter, round-trip time; REMB: its bandwidth estimate; NACKs: what it is
missing right now) and turns it into two decisions:

- how much audio redundancy (RED, RFC 2198) to send: one earlier packet on a clean link, more as loss
  rises (two earlier packets survive 10% random loss with 0.1% of audio lost, three survive 25% with 0.4%);
- which video layer of a simulcast publisher fits (``LayerChooser``): the best layer whose bitrate fits
  the estimate, down at once when it no longer fits, up only after the estimate has held long enough
  (hysteresis), at most the subscriber's own preference, and no video at all (audio goes on) when even
  the lowest layer does not fit. A receiver's estimate cannot grow far past what it receives, so a link
  that may carry more is probed: padding (retransmissions of recent packets) raises what it receives to
  the next layer's bitrate for a few seconds; if its estimate follows without loss, the layer goes up.

Loss is taken as the larger of what the receiver reports (fraction lost per report, which counts
repaired packets as received) and what it NACKs per packet sent, smoothed so that one bad second moves
the decision at once and one good second does not undo it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

LOSS_FOR_RED = (0.02, 0.08)  # loss at which audio carries two, then three, earlier packets
RED_HOLD = 10.0  # seconds of lower loss before redundancy steps down again
UP_HOLD = 2.0  # seconds a higher layer must have fitted before switching up to it
FIT = 0.9  # a layer fits when its bitrate is at most this share of the estimate
LOSS_CEILING = 0.10  # above this loss the estimate is cut to what is getting through
PROBE_FOR = 3.0  # seconds a probe lasts at most
PROBE_BACKOFF = (4.0, 30.0)  # the wait before the next probe: first, and at most (doubling after a failure)
PAUSE_HOLD = 2.0  # seconds even the lowest layer must not fit before video pauses


class SubscriberLink:
    """What one subscriber's reports say of its link, and the audio redundancy that follows from it."""

    def __init__(self) -> None:
        self.loss = 0.0  # smoothed, 0-1
        self.reported_loss = 0.0
        self.packets_lost = 0
        self.rtt_ms: float | None = None
        self.jitter_ms: float | None = None
        self.estimate_bps: int | None = None
        self.red_level = 1
        self._red_raised = 0.0
        self._nacked = 0
        self._sent_at_last_nack_count = 0

    def on_receiver_report(self, fraction_lost: float, packets_lost: int, jitter_ms: float,
                           rtt_ms: float | None, now: float | None = None) -> None:
        self.reported_loss = fraction_lost
        self.packets_lost = packets_lost
        self.jitter_ms = jitter_ms
        if rtt_ms is not None:
            self.rtt_ms = rtt_ms
        self._observe_loss(fraction_lost, time.monotonic() if now is None else now)

    @property
    def retransmission_copies(self) -> int:
        """How many copies of a retransmission to send: one, two above 5% loss, three above 20%."""
        return 1 + (self.loss > 0.05) + (self.loss > 0.20)

    def on_estimate(self, bps: int) -> None:
        self.estimate_bps = bps

    def on_nacks(self, count: int) -> None:
        self._nacked += count

    def nack_loss(self, packets_sent: int, now: float | None = None) -> None:
        """Loss as NACKs show it since the last call (the video down-track calls this about once a second)."""
        sent = packets_sent - self._sent_at_last_nack_count
        if sent >= 20:
            loss = min(1.0, self._nacked / sent)
            self._nacked, self._sent_at_last_nack_count = 0, packets_sent
            self._observe_loss(loss, time.monotonic() if now is None else now)

    def _observe_loss(self, loss: float, now: float) -> None:
        # Up at once, down slowly: a link that just lost a lot is not trusted after one clean second.
        self.loss = loss if loss > self.loss else self.loss * 0.7 + loss * 0.3
        wanted = 1 + sum(self.loss >= threshold for threshold in LOSS_FOR_RED)
        if wanted > self.red_level:
            self.red_level, self._red_raised = wanted, now
        elif wanted < self.red_level and now - self._red_raised >= RED_HOLD:
            self.red_level, self._red_raised = self.red_level - 1, now


class LayerChooser:
    """Which simulcast layer (0 = lowest) one subscriber gets, from its link and the layers' bitrates.

    ``choose`` is called with the bitrate of each layer the publisher sends now (None while a layer is not
    coming) and returns the layer wanted, or None for "no video"; ``probe_bps`` says how much padding a
    probe wants on top of the media right now (0 when not probing)."""

    def __init__(self, link: SubscriberLink) -> None:
        self.link = link
        self.max_layer: int | None = None  # the subscriber's preference (a small tile); None: no limit
        self.paused_by_subscriber = False  # a hidden tab
        self.current: int | None = None  # what is being forwarded (None: nothing yet, or paused)
        self.switches = 0
        self.probe_bps = 0
        self._fits_since: dict[int, float] = {}
        self._nothing_fits_since: float | None = None
        self._probe_until = 0.0
        self._probe_layer: int | None = None
        self._next_probe = 0.0
        self._backoff = PROBE_BACKOFF[0]

    def budget(self, sending_bps: float) -> float:
        """What the link is taken to carry: the receiver's estimate, cut when loss is high (GCC's rule)."""
        budget = float(self.link.estimate_bps) if self.link.estimate_bps else float("inf")
        if self.link.loss > LOSS_CEILING and sending_bps > 0:
            budget = min(budget, sending_bps * (1 - 0.5 * self.link.loss))
        return budget

    def choose(self, rates: Sequence[float | None], sending_bps: float, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        available = [i for i, rate in enumerate(rates) if rate is not None]
        if self.paused_by_subscriber or not available:
            self.probe_bps = 0
            return None
        top = available[-1] if self.max_layer is None else max(
            [i for i in available if i <= self.max_layer] or [available[0]])
        budget = self.budget(sending_bps)
        fitting = [i for i in available if i <= top and (rates[i] or 0) <= budget * FIT]
        current = self.current
        if not fitting:
            # Even the lowest layer does not fit: keep it a little (estimates dip), then pause video.
            self._nothing_fits_since = self._nothing_fits_since or now
            self._end_probe(now, failed=self._probe_layer is not None)
            if current is not None and now - self._nothing_fits_since < PAUSE_HOLD:
                return min(current, available[0]) if current not in available else available[0]
            if current is None and self._probe_due(now):  # paused: see whether the lowest fits again
                self._start_probe(available[0], rates, sending_bps, now)
            return None
        self._nothing_fits_since = None
        best = fitting[-1]
        for i in list(self._fits_since):
            if i not in fitting:
                del self._fits_since[i]
        for i in fitting:
            self._fits_since.setdefault(i, now)
        if current is None or current not in available or current > top:
            target = best if current is None else min(best, top)
        elif best < current:
            target = best  # down at once: it no longer fits
            self._end_probe(now, failed=self._probe_layer is not None)
        elif best > current and now - self._fits_since[best] >= UP_HOLD:
            target = min(best, current + 1) if self._probe_layer is None else best
            self._end_probe(now, failed=False)
        else:
            target = current
        self._probe_if_room(target, top, available, rates, sending_bps, now)
        return target

    def _probe_if_room(self, target: int, top: int, available: list[int], rates: Sequence[float | None],
                       sending_bps: float, now: float) -> None:
        higher = [i for i in available if target < i <= top]
        if self._probe_layer is not None:
            if now >= self._probe_until or self.link.loss > 0.05:
                self._end_probe(now, failed=True)
            else:
                self.probe_bps = max(0, int((rates[self._probe_layer] or 0) / FIT - sending_bps))
            return
        if higher and self._probe_due(now) and self.link.loss < 0.02:
            self._start_probe(higher[0], rates, sending_bps, now)

    def _probe_due(self, now: float) -> bool:
        return self._probe_layer is None and now >= self._next_probe

    def _start_probe(self, layer: int, rates: Sequence[float | None], sending_bps: float, now: float) -> None:
        self._probe_layer, self._probe_until = layer, now + PROBE_FOR
        self.probe_bps = max(0, int((rates[layer] or 0) / FIT - sending_bps))

    def _end_probe(self, now: float, failed: bool) -> None:
        if self._probe_layer is None:
            return
        self._probe_layer, self.probe_bps = None, 0
        if failed:
            self._next_probe = now + self._backoff
            self._backoff = min(self._backoff * 2, PROBE_BACKOFF[1])
        else:
            self._backoff = PROBE_BACKOFF[0]
            self._next_probe = now + self._backoff
