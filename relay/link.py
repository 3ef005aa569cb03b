"""One subscriber's link: what its RTCP says it can carry, and what the relay sends it because of that.

A ``SubscriberLink`` is shared by a subscriber's down-tracks. It gathers the subscriber's own word on its
link (receiver reports: loss, jitter, round-trip time; its bandwidth estimate, whose falls mean
congestion; NACKs: what it is missing right now) and turns it into:

- how much audio redundancy (RED, RFC 2198) to send: one earlier packet on a clean link, more as loss
  rises (two earlier packets survive 10% random loss with 0.1% of audio lost, three survive 25% with 0.4%),
  and how many copies of each retransmission; both only while the link has headroom (a congested link's
  loss comes from sending too much, and redundancy would add to it);
- which video layer of a simulcast publisher fits (``LayerChooser``): down at once when the link is
  congested below the current layer, up when the estimate allows or a probe showed the link carries the
  next layer (a receiver's estimate grows only ~8% a second past what it receives, so padding raises
  what it receives for a moment and the layer goes up if nothing suffered), at most the subscriber's own
  preference, and no video at all (audio goes on) when even the lowest layer does not fit.

The estimate is the relay's own where the subscriber negotiated transport-cc (browsers do): each packet
it acknowledges with its arrival time feeds a ``SendSideEstimator`` (relay/bwe.py), whose over-use
signal is congestion at once; otherwise it is the subscriber's REMB (aiortc).

Loss is taken as the larger of what the receiver reports (fraction lost per report, which counts
repaired packets as received) and the share of packets it NACKs, smoothed so that one bad second moves
the decisions at once and one good second does not undo them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

from relay.bwe import SendSideEstimator
from rtc.twcc import parse_feedback

LOSS_FOR_RED = (0.02, 0.08)  # loss at which audio carries two, then three, earlier packets
RED_HOLD = 10.0  # seconds of lower loss before redundancy steps down again
UP_HOLD = 2.0  # seconds on a new layer before probing for the next one (REMB; see ProbeTiming)
FIT = 0.9  # a lower layer fits when its bitrate is at most this share of the estimate
DOWN_AT = 0.75  # the current layer is left when the estimate falls under this share of its bitrate
LOSS_CEILING = 0.10  # above this loss the estimate is cut to what is getting through
PROBE_FOR = 1.5  # seconds a probe lasts
PROBE_LOSS = 0.03  # loss during a probe that fails it
PROBE_BACKOFF = (2.0, 8.0)  # the wait before the next probe: first, and at most (doubling after a failure)
PAUSE_HOLD = 2.0  # seconds even the lowest layer must not fit before video pauses
CONGESTION_HOLD = 3.0  # seconds a fall in the receiver's estimate counts as congestion
LOSS_SILENCE = 1.0  # seconds without any loss figure after which the last one starts to fade
MAX_FEEDBACK_PER_S = 100  # transport feedback packets read per subscriber a second (browsers: 10-20)


@dataclass(frozen=True, slots=True)
class ProbeTiming:
    """How long a probe lasts, the hold after a step up, and the wait after failed probes (first, at most)."""

    probe_for: float
    up_hold: float
    backoff: tuple[float, float]


# A receiver's REMB shows a probe's harm only as a fall it makes over a second or more; the relay's own
# estimate (transport-cc) sees the queue grow within a feedback interval or two, so its probes can be short
# and come back sooner after a cap is lifted.
REMB_TIMING = ProbeTiming(probe_for=PROBE_FOR, up_hold=UP_HOLD, backoff=PROBE_BACKOFF)
SEND_SIDE_TIMING = ProbeTiming(probe_for=0.75, up_hold=1.0, backoff=(1.0, 4.0))


class SubscriberLink:
    """What one subscriber's reports say of its link, and the audio redundancy that follows from it."""

    def __init__(self) -> None:
        self.loss = 0.0  # smoothed, 0-1
        self.packets_lost = 0
        self.rtt_ms: float | None = None
        self.jitter_ms: float | None = None
        self.estimate_bps: int | None = None
        self.red_level = 1
        self._red_raised = 0.0
        self._nacked: set[int] = set()
        self._sent_at_last_nack_count = 0
        self._estimates: list[tuple[float, int]] = []
        self._congested_until = 0.0
        self._loss_observed_at = 0.0
        self.send_side: SendSideEstimator | None = None  # set when the subscriber negotiated transport-cc
        self.bad_feedback = 0  # malformed, or past MAX_FEEDBACK_PER_S: not read
        self._feedback_window = [0.0, 0]  # [start, count] of this second's feedback packets
        self.sending_bps = 0.0  # the media the subscriber's down-tracks sent lately (set by the adaptation)
        self.bytes_out = 0  # the media they wrote, audio and video (not repairs or padding)
        self.audio_bytes_out = 0  # the audio of it
        self.audio_bps = 0.0  # the audio sent lately (set by the adaptation)

    def on_receiver_report(self, fraction_lost: float, packets_lost: int, jitter_ms: float,
                           rtt_ms: float | None, now: float | None = None) -> None:
        self.packets_lost = packets_lost
        self.jitter_ms = jitter_ms
        if rtt_ms is not None:
            self.rtt_ms = rtt_ms
        self._observe_loss(fraction_lost, time.monotonic() if now is None else now)

    @property
    def retransmission_copies(self) -> int:
        """How many copies of a retransmission to send: one, two above 5% loss, three above 20%; one while
        the link is congested (its loss comes from too much being sent, and copies would add to it)."""
        if not self.headroom():
            return 1
        return 1 + (self.loss > 0.05) + (self.loss > 0.20)

    def headroom(self, now: float | None = None) -> bool:
        """Whether extra bytes (audio redundancy past one packet, retransmission copies) may go out: not
        while the link is congested or already sends more than its receiver estimates it carries; on such
        a link the loss comes from sending too much, and redundancy would only add to it."""
        if self.congested(now):
            return False
        return self.estimate_bps is None or self.sending_bps <= self.estimate_bps

    @property
    def audio_redundancy(self) -> int:
        """Earlier packets each audio packet carries in RED: the loss's level, one when there is no headroom."""
        return self.red_level if self.headroom() else 1

    def on_estimate(self, bps: int, now: float | None = None) -> None:
        """A REMB. A receiver's estimate only falls when it detects over-use (queues growing), so a fall
        means congestion; a low estimate that is still rising only means little has been sent yet."""
        now = time.monotonic() if now is None else now
        self._estimates = [(t, v) for t, v in self._estimates if now - t < CONGESTION_HOLD]
        peak = max((v for _, v in self._estimates), default=0)
        if peak and bps < peak * 0.95:
            self._congested_until = now + CONGESTION_HOLD
        self._estimates.append((now, bps))
        self.estimate_bps = bps

    @property
    def video_estimate_bps(self) -> float | None:
        """What the estimate leaves for video: the relay's own counts the audio it sends too, so the
        audio's share comes off (a REMB is left as it is, as the chooser has always weighed it)."""
        if self.estimate_bps is None:
            return None
        if self.send_side is None:
            return float(self.estimate_bps)
        return max(0.0, self.estimate_bps - self.audio_bps)

    @property
    def estimator(self) -> str:
        """Where ``estimate_bps`` comes from: "send_side" (the relay's, from transport-cc) or "remb"."""
        return "send_side" if self.send_side is not None else "remb"

    def estimate_on_send_side(self) -> None:
        """The subscriber acknowledges what the relay sends (transport-cc): estimate from that, not REMB."""
        if self.send_side is None:
            self.send_side = SendSideEstimator()

    def on_transport_feedback(self, data: bytes, now: float | None = None) -> None:
        """A transport feedback packet from the subscriber (raw RTCP; a malformed one is counted, no more)."""
        if self.send_side is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._feedback_window[0] >= 1.0:
            self._feedback_window = [now, 0]
        self._feedback_window[1] += 1
        if self._feedback_window[1] > MAX_FEEDBACK_PER_S:  # a browser sends 10-20 a second: a flood
            self.bad_feedback += 1
            return
        try:
            _, results = parse_feedback(data)
        except ValueError:
            self.bad_feedback += 1
            return
        estimator = self.send_side
        estimator.on_feedback(results, now * 1000, self.rtt_ms)
        self.estimate_bps = estimator.estimate_bps
        if estimator.congested:
            # The queue on its path grows, or stands full and drops: congestion, said by the link itself.
            # (Not by the estimate's falls, as with REMB: this one follows what gets through, which wobbles.)
            self._congested_until = now + CONGESTION_HOLD

    def congested(self, now: float | None = None) -> bool:
        """The receiver's estimate fell lately (what is sent being more than the estimate says nothing:
        the estimate trails what it receives while a stream ramps up)."""
        return (time.monotonic() if now is None else now) < self._congested_until

    def on_nack(self, seq: int) -> None:
        if len(self._nacked) < 4096:
            self._nacked.add(seq)  # a receiver asks again for what is still missing: count each once

    def nack_loss(self, packets_sent: int, now: float | None = None) -> None:
        """Loss as NACKs show it since the last call (the video down-track calls this about once a second)."""
        now = time.monotonic() if now is None else now
        sent = packets_sent - self._sent_at_last_nack_count
        if sent >= 20:
            loss = min(1.0, len(self._nacked) / sent)
            self._nacked, self._sent_at_last_nack_count = set(), packets_sent
            self._observe_loss(loss, now)
        elif now - self._loss_observed_at >= LOSS_SILENCE:
            # Nothing to judge by (video paused: no packets, so no NACKs and no receiver reports for it):
            # the last bad figure fades rather than holding a paused subscriber off its probes for ever.
            self._observe_loss(0.0, now)

    def _observe_loss(self, loss: float, now: float) -> None:
        # Up at once, down slowly: a link that just lost a lot is not trusted after one clean second.
        self._loss_observed_at = now
        self.loss = loss if loss > self.loss else self.loss * 0.7 + loss * 0.3
        wanted = 1 + sum(self.loss >= threshold for threshold in LOSS_FOR_RED)
        if wanted > self.red_level:
            self.red_level, self._red_raised = wanted, now
        elif wanted < self.red_level and now - self._red_raised >= RED_HOLD:
            self.red_level, self._red_raised = self.red_level - 1, now


_STAY = object()  # LayerChooser._down: the link keeps the current layer


class ChooserState(enum.StrEnum):
    STEADY = "steady"
    PROBING = "probing"
    BACKING_OFF = "backing_off"
    PAUSED = "paused"


class LayerChooser:
    """Which simulcast layer (0 = lowest) one subscriber gets, from its link and the layers' bitrates; with
    VP8 temporal layers, the lowest layer at a quarter or half frame rate comes before no video at all.

    ``choose`` runs about twice a second with each layer's bitrate now (None while a layer is not coming)
    and what the down-track sends, and returns the layer wanted, or None for "no video". ``probe_bps``
    is how much padding a probe wants on top of the media (0 when not probing).

    Down: when the link is congested and its estimate is under ``DOWN_AT`` of the current layer's
    bitrate, to the best layer within ``FIT`` of the estimate (none, and it lasts ``PAUSE_HOLD``: video
    pauses); on loss over ``LOSS_CEILING`` without headroom, to what the loss-cut budget fits (never a
    pause for loss alone: random loss is left to repairs). Up: straight to the best layer the estimate
    fits (or the best allowed, with no estimate yet); beyond that, padding raises what the subscriber
    receives to the next layer's bitrate for ``timing.probe_for``; no loss, no congestion and no fall in its
    estimate meanwhile, and the layer goes up (the next probe may follow after ``timing.up_hold``);
    otherwise the next probe waits twice as long (at most ``timing.backoff[1]``). The timing is shorter
    where the relay estimates the link itself (``SEND_SIDE_TIMING``)."""

    def __init__(self, link: SubscriberLink) -> None:
        self.link = link
        self.max_layer: int | None = None  # the subscriber's preference (a small tile); None: no limit
        self.paused_by_subscriber = False  # a hidden tab
        self.current: int | None = None  # what is wanted now (None: no video)
        self.switches = {"up": 0, "down": 0, "pause": 0, "resume": 0}
        self.probe_bps = 0
        self.can_probe = True  # False when the subscriber negotiated no RTX to pad with
        # Set by the viewer's allocation when its one connection carries several videos (relay/allocation.py):
        # this track's part of the link's video estimate (0: none fits beside more important ones), and
        # whether it is the track whose probes may raise the estimate. None: the track has the link alone.
        self.share: float | None = None
        self.leads = True
        self._nothing_fits_since: float | None = None
        self._probe_layer: int | None = None
        self._probe_until = 0.0
        self._probe_estimate: int | None = None
        self._next_probe = 0.0
        self._backoff = self.timing.backoff[0]

    @property
    def usable_bps(self) -> float | None:
        """The video estimate this track may use: the link's, or its share of it."""
        video = self.link.video_estimate_bps
        if self.share is None:
            return video
        return self.share if video is None else min(video, self.share)

    def budget(self, sending_bps: float) -> float:
        """What the link is taken to carry: the receiver's estimate, cut when loss is high (GCC's rule)."""
        video = self.usable_bps
        budget = video if video is not None else float("inf")
        if self.link.loss > LOSS_CEILING and sending_bps > 0:
            budget = min(budget, sending_bps * (1 - 0.5 * self.link.loss))
        return budget

    def start(self, top: int) -> int:
        """The layer a new subscriber starts on: the best one, its link unknown yet (most links carry it)."""
        allowed = top if self.max_layer is None else min(top, self.max_layer)
        self.current = allowed
        return allowed

    @property
    def timing(self) -> ProbeTiming:
        return SEND_SIDE_TIMING if self.link.send_side is not None else REMB_TIMING

    @property
    def state(self) -> ChooserState:
        """Where the chooser is: paused (no video), probing (padding towards the next layer), backing off (a
        probe failed: the next one waits longer) or steady."""
        if self.current is None:
            return ChooserState.PAUSED
        if self._probe_layer is not None:
            return ChooserState.PROBING
        if self._backoff > self.timing.backoff[0]:
            return ChooserState.BACKING_OFF
        return ChooserState.STEADY

    def choose(self, rates: Sequence[float | None], sending_bps: float, now: float | None = None,
               spatial: Sequence[int] | None = None) -> int | None:
        """``rates`` are the options cheapest first (a layer, or a layer at a lower frame rate); ``spatial``
        names the layer of each (the subscriber's limit is on layers); by default option i is layer i."""
        now = time.monotonic() if now is None else now
        available = [i for i, rate in enumerate(rates) if rate is not None]
        if self.paused_by_subscriber or not available:
            self._end_probe(now, failed=False)
            return self._set(None)
        layer_of = spatial if spatial is not None else range(len(rates))
        allowed = [i for i in available if self.max_layer is None or layer_of[i] <= self.max_layer] or available[:1]
        current = self.current
        if current is not None and current not in allowed:
            # The layer stopped coming (the publisher's encoder dropped it) or the preference changed.
            below = [i for i in allowed if i < current]
            current = self._set(below[-1] if below else allowed[0])
        budget = self.budget(sending_bps)
        congested = self.link.congested(now)
        if current is not None:
            down = self._down(current, allowed, rates, budget, congested, now)
            if down is not _STAY:
                return down  # type: ignore[return-value]
        return self._up(current, allowed, rates, sending_bps, congested, now)

    def _down(self, current: int, allowed: list[int], rates: Sequence[float | None], budget: float,
              congested: bool, now: float) -> int | object | None:
        """Whether the link can keep ``current``: the option to go down to (None: pause), or ``_STAY``."""
        rate = rates[current] or 0.0
        fitting = [i for i in allowed if i < current and (rates[i] or 0.0) <= budget * FIT]
        if (congested or self.share is not None) and budget < rate * DOWN_AT:
            # The link (or this track's share of it) cannot carry this layer: down to the best that fits; if
            # none does and it lasts, video pauses (audio goes on).
            self._end_probe(now, failed=True)
            lowest = allowed[0]
            if fitting or current != lowest:
                self._nothing_fits_since = None
                return self._set(fitting[-1] if fitting else lowest)
            self._nothing_fits_since = self._nothing_fits_since or now
            return self._set(None) if now - self._nothing_fits_since >= PAUSE_HOLD else current
        self._nothing_fits_since = None
        if self.link.loss > LOSS_CEILING and (not self.link.headroom(now) or self.link.estimate_bps is None):
            # Heavy loss while sending more than the receiver estimates (a policer that drops without
            # queueing, so the estimate never falls), or before any estimate came (a new subscriber on a thin
            # link): step down to what the loss-cut budget fits, but never pause for loss alone. Random loss on
            # a link with room (a noisy radio) is left to repairs.
            self._end_probe(now, failed=True)
            return self._set(fitting[-1] if fitting else current) if budget < rate * DOWN_AT else current
        return _STAY

    def _up(self, current: int | None, allowed: list[int], rates: Sequence[float | None], sending_bps: float,
            congested: bool, now: float) -> int | None:
        """With the link keeping ``current``: a probe's progress, a step up the estimate allows, or a probe."""
        higher = [i for i in allowed if current is None or i > current]
        if not higher:
            self._end_probe(now, failed=False)
            return current
        if self._probe_layer is not None:
            return self._probing(current, rates, sending_bps, congested, now)
        if self.link.loss >= PROBE_LOSS or congested:
            return current
        estimate = self.usable_bps
        fits = [i for i in higher if estimate is None or (rates[i] or 0.0) <= estimate * FIT]
        if fits:
            # The estimate already says so (or there is none yet: nothing says the link cannot): straight to
            # the best such layer, as after the subscriber raised its own limit.
            self._next_probe = now + self.timing.up_hold
            return self._set(fits[-1])
        if not self.leads or now < self._next_probe:
            return current  # (only the viewer's first track probes: the others wait for its share to grow)
        return self._start_probe(current, higher, rates, sending_bps, now)

    def _start_probe(self, current: int | None, higher: list[int], rates: Sequence[float | None],
                     sending_bps: float, now: float) -> int | None:
        """Probe towards the next option worth it: at least half again what it gets now (a half-frame-rate
        step of the lowest layer is not worth a probe of its own), else the best there is."""
        floor = (rates[current] or 0.0) * 1.5 if current is not None else 0.0
        wanted = next((i for i in higher if (rates[i] or 0.0) >= floor), higher[-1])
        if not self.can_probe:
            self._next_probe = now + self.timing.up_hold
            return self._set(wanted)  # no RTX to pad with: try the layer itself
        self._probe_layer, self._probe_until = wanted, now + self.timing.probe_for
        self._probe_estimate = self.link.estimate_bps
        self.probe_bps = max(0, int((rates[wanted] or 0.0) - sending_bps))
        return current

    def _probing(self, current: int | None, rates: Sequence[float | None], sending_bps: float, congested: bool,
                 now: float) -> int | None:
        """A probe under way: fails on loss, congestion or a falling estimate; else, once it has lasted
        ``timing.probe_for``, the layer goes up."""
        assert self._probe_layer is not None
        dropped = (self._probe_estimate is not None and self.link.estimate_bps is not None
                   and self.link.estimate_bps < self._probe_estimate * 0.85)
        if self.link.loss > PROBE_LOSS or dropped or congested:
            self._end_probe(now, failed=True)
        elif now >= self._probe_until:
            layer = self._probe_layer
            self._end_probe(now, failed=False)
            return self._set(layer)
        else:
            self.probe_bps = max(0, int((rates[self._probe_layer] or 0.0) - sending_bps))
        return current

    def _set(self, layer: int | None) -> int | None:
        if layer != self.current:
            if layer is None:
                self.switches["pause"] += 1
            elif self.current is None:
                self.switches["resume"] += 1
            else:
                self.switches["up" if layer > self.current else "down"] += 1
            self.current = layer
        return layer

    def _end_probe(self, now: float, failed: bool) -> None:
        if self._probe_layer is None and not failed:
            return
        was_probing = self._probe_layer is not None
        self._probe_layer, self.probe_bps = None, 0
        if failed:
            if was_probing or now >= self._next_probe:
                self._next_probe = now + self._backoff
                self._backoff = min(self._backoff * 2, self.timing.backoff[1])
        else:
            self._backoff = self.timing.backoff[0]
            self._next_probe = now + self.timing.up_hold
