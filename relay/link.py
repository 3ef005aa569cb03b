"""One subscriber's link: what its RTCP says it can carry, and what the relay sends it because of that.

A ``SubscriberLink`` is shared by a subscriber's down-tracks. It gathers the subscriber's own word on its
link (receiver reports: loss, jitter, round-trip time; its bandwidth estimate, whose falls mean
congestion; NACKs: what it is missing right now) and turns it into:

- how fast repairs may go: as asked while the link is not congested; on a congested one within a budget
  (what its estimate leaves beside the media), the stage host's first (``repair_rate_bps``);
- when congestion has just begun (``alarm``): the adaptation chooses for this link at once;
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

import time
from collections.abc import Callable

from relay.bwe import SendSideEstimator
from rtc.twcc import parse_feedback

LOSS_FOR_RED = (0.02, 0.08)  # loss at which audio carries two, then three, earlier packets
RED_HOLD = 10.0  # seconds of lower loss before redundancy steps down again
ALARM_WINDOW = 0.5  # seconds after congestion began in which each further fall of the estimate alarms too
STANDING_QUEUE_MS = 50.0  # a congested link whose packets wait this much longer than its least: draining
CONGESTION_HOLD = 3.0  # seconds a fall in the receiver's estimate counts as congestion
LOSS_SILENCE = 1.0  # seconds without any loss figure after which the last one starts to fade
MAX_FEEDBACK_PER_S = 100  # transport feedback packets read per subscriber a second (browsers: 10-20)
REPAIR_FLOOR = 0.15  # of a congested link's estimate, what repairs may always use
REPAIR_BURST = 0.2  # seconds of the repair rate that may go at once


def repair_rate_bps(estimate_bps: float | None, media_bps: float, congested: bool) -> float | None:
    """How fast repairs (retransmissions) may go to a link: no limit while it is not congested (the loss
    of a link with room is the radio's, and it is repaired in full) or before any estimate; on a congested
    link, what its estimate leaves beside the media, but at least ``REPAIR_FLOOR`` of the estimate. Every
    packet lost in a full queue is NACKed, and answering each one at once sent a 600 kbit/s link 700-1000
    kbit/s for seconds after a cap (its media ~400): the queue stayed full, 20-30% was lost, repairs too,
    and the host's frames came at 5 a second."""
    if not congested or estimate_bps is None:
        return None
    return max(estimate_bps * REPAIR_FLOOR, estimate_bps - media_bps)




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
        # Congestion just began: the adaptation chooses this link's layers at its next tick (50 ms) rather
        # than at the next choice (up to 0.5 s): every moment the link is sent more than it carries, its
        # queue fills and drops, breaking frames of every video on it. Cleared when the choice is made.
        self.alarm = False
        # Called when congestion begins, from the feedback's own path: the adaptation chooses at once
        # (the next tick was up to 50 ms away, while a 200 ms queue fills in ~130 ms).
        self.on_alarm: Callable[[SubscriberLink], None] | None = None
        self._alarm_since = 0.0
        self._alarm_estimate: int | None = None
        self.repairs_refused = 0  # NACKs not answered: a congested link's repair budget was spent
        self._repair_tokens = 0.0  # bytes repairs may send now (refilled at repair_rate_bps)
        self._repair_at = 0.0

    def on_receiver_report(self, fraction_lost: float, packets_lost: int, jitter_ms: float,
                           rtt_ms: float | None, now: float | None = None) -> None:
        self.packets_lost = packets_lost
        self.jitter_ms = jitter_ms
        if rtt_ms is not None:
            self.rtt_ms = rtt_ms
        # Where the relay estimates the link, transport-cc says what was lost (a report's fraction is one
        # stream's, and counts what a paused or switched video never sent): taken at each report, as a
        # link whose videos have no chooser (one layer, or audio alone) has nothing else to take it.
        lost = fraction_lost if self.send_side is None else self.send_side.loss
        self._observe_loss(lost, time.monotonic() if now is None else now)

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
        """Earlier packets each audio packet carries in RED: the loss's level; one when there is no headroom;
        none on a congested link that loses little (its queue drained: a copy of every packet would take
        from the video what the link no longer carries; three audios at one copy were 180 of the 350
        kbit/s a viewer of three tiles behind 600 kbit/s was estimated, and the host tile fell to 5 fps)."""
        if self.headroom():
            return self.red_level
        return 0 if self.congested() and self.loss < LOSS_FOR_RED[0] else 1

    def on_estimate(self, bps: int, now: float | None = None) -> None:
        """A REMB. A receiver's estimate only falls when it detects over-use (queues growing), so a fall
        means congestion; a low estimate that is still rising only means little has been sent yet."""
        now = time.monotonic() if now is None else now
        self._estimates = [(t, v) for t, v in self._estimates if now - t < CONGESTION_HOLD]
        peak = max((v for _, v in self._estimates), default=0)
        if peak and bps < peak * 0.95:
            began = not self.alarm and not self.congested(now)
            self.alarm = self.alarm or began
            self._congested_until = now + CONGESTION_HOLD
            if began and self.on_alarm is not None:
                self.on_alarm(self)
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
            began = not self.alarm and not self.congested(now)
            # The first cut is measured over arrivals partly from before the link narrowed; the next
            # feedbacks cut further. Within ALARM_WINDOW of the start each such fall is chosen for at once
            # too (a viewer capped at 400 kbit/s was first given a layer the second cut did not fit).
            fell = (not began and now - self._alarm_since < ALARM_WINDOW and self.estimate_bps is not None
                    and self._alarm_estimate is not None and self.estimate_bps < 0.9 * self._alarm_estimate)
            if began:
                self._alarm_since = now
            if began or fell:
                self._alarm_estimate = self.estimate_bps
                self.alarm = True
            self._congested_until = now + CONGESTION_HOLD
            if (began or fell) and self.on_alarm is not None:
                self.on_alarm(self)

    def congested(self, now: float | None = None) -> bool:
        """The receiver's estimate fell lately (what is sent being more than the estimate says nothing:
        the estimate trails what it receives while a stream ramps up)."""
        return (time.monotonic() if now is None else now) < self._congested_until

    def draining(self, now: float | None = None) -> bool:
        """Congestion began and the queue before the viewer fills or still stands (the relay's own estimate
        sees it: each feedback's last packet waited longer than the one before, or packets wait
        ``STANDING_QUEUE_MS`` longer than the path's least): whatever more is sent is lost. Filling counts
        because that is when the alarm's choice is made: the queue was 25-60 ms then, under the standing
        mark, so the co-hosts were given their lowest layers, whose keyframes went into the queue as it
        overflowed, and the host's frames were lost with them (the three-tiles lab's freezes)."""
        send_side = self.send_side
        return (send_side is not None and (send_side.queue_ms > STANDING_QUEUE_MS or send_side.filling)
                and self.congested(now))

    def may_repair(self, size: int, first: bool = True, now: float | None = None) -> bool:
        """Whether a repair of ``size`` bytes may go now (``repair_rate_bps``); counts it when not. The
        viewer's first video (``first``: the stage host's) may spend all there is, and a packet more; the
        others only what leaves half a burst for it."""
        now = time.monotonic() if now is None else now
        rate = repair_rate_bps(self.estimate_bps, self.sending_bps, self.congested(now))
        if rate is None:
            self._repair_tokens, self._repair_at = 0.0, now
            return True
        burst = max(rate * REPAIR_BURST / 8, 1500.0)
        self._repair_tokens = min(burst, self._repair_tokens + (now - self._repair_at) * rate / 8)
        self._repair_at = now
        if self._repair_tokens < (0 if first else size + burst / 2):
            self.repairs_refused += 1
            return False
        self._repair_tokens -= size
        return True

    def on_nack(self, seq: int) -> None:
        # (A link the relay estimates takes its loss from transport-cc: its NACKs need no counting.)
        if self.send_side is None and len(self._nacked) < 4096:
            self._nacked.add(seq)  # a receiver asks again for what is still missing: count each once

    def nack_loss(self, packets_sent: int, now: float | None = None) -> None:
        """Loss as NACKs show it since the last call (about twice a second, with the packets the link's videos
        have sent so far, together)."""
        now = time.monotonic() if now is None else now
        if self.send_side is not None:
            # The relay's own estimate knows what was lost: every packet it sent is acknowledged or not,
            # audio and repairs too. NACKs overstate it (a viewer asks again and again for what a paused
            # or switched video will never send: 87% "lost" on a link that lost nothing).
            self._sent_at_last_nack_count = packets_sent
            self._observe_loss(self.send_side.loss, now)
            return
        sent = packets_sent - self._sent_at_last_nack_count
        if sent < 0:  # one of the link's videos ended: its count left the sum
            self._sent_at_last_nack_count = packets_sent
            return
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
