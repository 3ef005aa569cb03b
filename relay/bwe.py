"""Send-side bandwidth estimation for what the relay sends one viewer (Chromium's GCC, in small parts).

A viewer whose browser negotiated transport-cc tells the relay when each packet arrived (``rtc.twcc``
feedback, every 50-100 ms). Knowing when each left, the relay sees its own queue on the path grow before
anything is lost, and what actually got through:

- ``SentPackets``: the transport-wide sequence numbers the down-tracks stamp, with each packet's send time
  and size (a ring: feedback older than ``SENT_KEPT`` packets is ignored);
- ``Trendline``: packets sent within ``BURST_MS`` form a group; the growth of each group's delay over the
  previous one, accumulated and smoothed, is fitted by a line over the last ``WINDOW`` groups; its slope,
  against an adaptive threshold, says over-use (the queue grows), under-use or normal (libwebrtc's
  TrendlineEstimator and OveruseDetector, same constants);
- ``AimdRate``: over-use cuts the estimate to ``BETA`` of what was acknowledged; normal grows it 8% a
  second (near the last over-use point, by about a packet per round trip); never raised past 1.5x what
  gets through, and lowered to that only where much is lost (libwebrtc's AimdRateControl);
- a full queue: much lost (over 10%) while packets wait 50 ms longer than the least delay of the last
  10 s; the trend line sees no growth in a queue that stands full, and random loss comes with no queue.
  Congestion either way (``congested``), and the estimate is cut as for over-use.

No loss-based cut, unlike GCC's sender: random loss on a link with room (a noisy radio) is left to repairs
(RED, retransmission copies; relay/link.py), and loss from sending too much shows here anyway: where
much is lost the estimate never exceeds 1.5x what gets through, so a policer that drops without queueing
leaves the chooser no headroom, and its heavy-loss rule steps down. ``SendSideEstimator`` ties them
together; ``estimate_bps`` is None until ``FIRST_AFTER_MS`` of feedback came. Everything takes the time
as an argument: no clock, no I/O; the table tests feed it synthetic paths (``tests/test_bwe.py``).

Why here and not REMB: a browser's REMB is computed on its side and lags by its feedback period, does not
count loss at all, and stays where it was when a policer drops without queueing (a viewer behind a 150
kbit/s cap kept reporting ~590 kbit/s while 13-34% was lost). Acknowledged bytes do not lie.
"""

from __future__ import annotations

import enum
import math
from collections import deque

SENT_KEPT = 8192  # packets whose send time is kept (~10 s of 1.5 Mbit/s video)
BURST_MS = 5.0  # packets sent within this of a group's first are one group
WINDOW = 20  # groups the trend line is fitted over
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
THRESHOLD_INITIAL, THRESHOLD_MIN, THRESHOLD_MAX = 12.5, 6.0, 600.0
K_UP, K_DOWN = 0.0087, 0.039  # how fast the threshold follows the trend, above and below it
OVERUSE_TIME_MS = 10.0  # the trend must stay over the threshold this long
BETA = 0.85  # an over-use cuts the estimate to this share of what got through
INCREASE_PER_S = 1.08
ACKED_WINDOW_MS = 500.0  # what got through is measured over this much arrival time
# ... and, while a queue stands, over the last stretch of at most this much in which the link never idled
# (libwebrtc reads a plain 150 ms window; see ``SendSideEstimator._busy_acked_bps`` for why not)
RECENT_WINDOW_MS = 150.0
BUSY_MIN_PACKETS, BUSY_MIN_MS = 5, 30.0  # a shorter busy stretch says too little
BUSY_FLOOR = 0.5  # ... and it is never read as less than this share of the 500 ms window
LOSS_INTERVAL_MS = 300.0  # loss is judged over at least this much feedback
FIRST_AFTER_MS = 500.0  # no estimate before feedback covers this much
BASE_WINDOW_MS = 10_000.0  # the path's least delay is the least seen over this long
FULL_QUEUE_MS = 50.0  # waiting this much longer than that, with LOSS_CONGESTED lost: a full queue
LOSS_CONGESTED = 0.10
FILLING_MS = 25.0  # a queue this deep that grew at each of the last FILLING_STEPS feedbacks: filling
FILLING_STEPS = 3  # feedbacks seen (two rises)
# ... or one rise of at least JUMP_MS - FILLING_MS to JUMP_MS: in the lab, when the first feedback after a
# cap already showed 60-100 ms, waiting for the second rise let the queue reach its 200 ms and the host's
# frames came that much late (a freeze), where a first cut at 27-41 ms kept it under 60 ms.
JUMP_MS = 50.0
# The trend line's over-use counts only while the newest packets wait at least this much beyond the path's
# least: a slope within a queue shallower than that is the receiver's jitter (a busy machine's scheduling),
# not a link that pushes back. In the weak-network lab such judgements, with no queue at all, cut a 517
# kbit/s estimate to 215 kbit/s on a link carrying half its 600 kbit/s cap (the host tile fell to 5 fps);
# at 10 ms, blips of 11-17 ms still failed the host's probes every few seconds. A link that narrows shows
# as filling (below) by then anyway.
TREND_QUEUE_MS = 20.0
MIN_BPS, MAX_BPS = 30_000, 50_000_000


class Usage(enum.StrEnum):
    NORMAL = "normal"
    OVERUSING = "overusing"
    UNDERUSING = "underusing"


class SentPackets:
    """The relay's transport-wide sequence numbers for one viewer: the next one, and each packet's send
    time (ms) and size (bytes), by number."""

    __slots__ = ("_sent_ms", "_seq", "_size", "next_seq")

    def __init__(self) -> None:
        self.next_seq = 0  # unwrapped; 16 bits go on the wire
        self._seq = [-1] * SENT_KEPT
        self._sent_ms = [0.0] * SENT_KEPT
        self._size = [0] * SENT_KEPT

    def add(self, size: int, now_ms: float) -> int:
        """A packet of ``size`` bytes leaves now: its 16-bit transport-wide sequence number."""
        seq = self.next_seq
        self.next_seq += 1
        slot = seq % SENT_KEPT
        self._seq[slot], self._sent_ms[slot], self._size[slot] = seq, now_ms, size
        return seq & 0xFFFF

    def lookup(self, seq16: int) -> tuple[float, int] | None:
        """(send time, size) of the latest packet numbered ``seq16``, if still kept."""
        last = self.next_seq - 1
        seq = last - ((last - seq16) & 0xFFFF)
        if seq < 0:
            return None
        slot = seq % SENT_KEPT
        return (self._sent_ms[slot], self._size[slot]) if self._seq[slot] == seq else None


class Trendline:
    """Delay growth between packet groups, fitted over the last ``WINDOW`` groups, against a threshold
    that adapts to the path's own noise."""

    def __init__(self) -> None:
        self.usage = Usage.NORMAL
        self.threshold = THRESHOLD_INITIAL
        self.trend = 0.0
        self._group: tuple[float, float] | None = None  # (first send, last arrival) of the open group
        self._previous: tuple[float, float] | None = None  # the same of the last closed group
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._first_arrival: float | None = None
        self._points: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self._deltas = 0
        self._overusing_ms = -1.0
        self._overuse_count = 0
        self._previous_trend = 0.0
        self._last_update: float | None = None

    def add(self, sent_ms: float, arrived_ms: float) -> None:
        """One acknowledged packet, in the order they were sent."""
        if self._group is None:
            self._group = (sent_ms, arrived_ms)
            return
        first_sent, last_arrival = self._group
        if sent_ms - first_sent <= BURST_MS:
            self._group = (first_sent, max(last_arrival, arrived_ms))
            return
        if self._previous is not None:
            send_delta = first_sent - self._previous[0]
            arrival_delta = last_arrival - self._previous[1]
            self._update(arrival_delta - send_delta, arrival_delta, last_arrival)
        self._previous, self._group = self._group, (sent_ms, arrived_ms)

    def _update(self, delay_delta: float, arrival_delta: float, arrival: float) -> None:
        self._deltas = min(self._deltas + 1, 1000)
        self._accumulated += delay_delta
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        if self._first_arrival is None:
            self._first_arrival = arrival
        self._points.append((arrival - self._first_arrival, self._smoothed))
        if len(self._points) == WINDOW:
            self.trend = slope(list(self._points)) or self.trend
        self._detect(min(self._deltas, 60) * self.trend * THRESHOLD_GAIN, arrival_delta, arrival)

    def _detect(self, modified: float, delta_ms: float, now: float) -> None:
        """libwebrtc's OveruseDetector: over-use once the trend stays above the threshold for a while
        and is not falling; the threshold itself follows the trend slowly."""
        if modified > self.threshold:
            self._overusing_ms = delta_ms / 2 if self._overusing_ms < 0 else self._overusing_ms + delta_ms
            self._overuse_count += 1
            if self._overusing_ms > OVERUSE_TIME_MS and self._overuse_count > 1 and self.trend >= self._previous_trend:
                self._overusing_ms, self._overuse_count = 0.0, 0
                self.usage = Usage.OVERUSING
        elif modified < -self.threshold:
            self._overusing_ms = -1.0
            self._overuse_count = 0
            self.usage = Usage.UNDERUSING
        else:
            self._overusing_ms = -1.0
            self._overuse_count = 0
            self.usage = Usage.NORMAL
        self._previous_trend = self.trend
        self._adapt_threshold(modified, now)

    def _adapt_threshold(self, modified: float, now: float) -> None:
        if self._last_update is None:
            self._last_update = now
        if abs(modified) > self.threshold + 15:  # a spike (a route change): not the path's usual noise
            self._last_update = now
            return
        k = K_DOWN if abs(modified) < self.threshold else K_UP
        elapsed = min(now - self._last_update, 100.0)
        self.threshold += k * (abs(modified) - self.threshold) * elapsed
        self.threshold = min(max(self.threshold, THRESHOLD_MIN), THRESHOLD_MAX)
        self._last_update = now


def slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``points`` (None when x does not vary). One pass, x taken from the
    first point's (the feedback path runs this for every packet group of every browser viewer)."""
    n = len(points)
    x0 = points[0][0]
    sx = sy = sxx = sxy = 0.0
    for x, y in points:
        x -= x0
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    denominator = n * sxx - sx * sx
    return (n * sxy - sx * sy) / denominator if denominator else None


class AimdRate:
    """The delay-based estimate: cut on over-use, held on under-use, grown otherwise."""

    def __init__(self) -> None:
        self.bps: float | None = None
        self._capacity: float | None = None  # what got through at the last over-use (smoothed)
        self._last_ms: float | None = None
        self.last_cut_ms: float | None = None

    def update(self, usage: Usage, acked_bps: float | None, rtt_ms: float, now_ms: float, loss: float = 0.0) -> None:
        """``acked_bps``: what got through lately; ``loss``: the share lost meanwhile."""
        elapsed = 0.0 if self._last_ms is None else min(now_ms - self._last_ms, 1000.0) / 1000
        self._last_ms = now_ms
        if self.bps is None:
            if acked_bps is None:
                return
            self.bps = acked_bps  # what is known to get through, to start from
        held = self.bps
        if usage is Usage.OVERUSING and acked_bps is not None:
            cut = BETA * acked_bps
            if cut < self.bps and self._may_cut_again(acked_bps, rtt_ms, now_ms):
                self.bps, self.last_cut_ms = cut, now_ms
                self._capacity = acked_bps if self._capacity is None else 0.95 * self._capacity + 0.05 * acked_bps
        elif usage is Usage.NORMAL:
            # What was sent with no queue growing is carried (a probe's padding shows it at once), lost
            # packets too: random loss is not congestion. Within the cap below: a policer's is.
            sent = (acked_bps or 0.0) / (1 - min(loss, 0.5))
            self.bps = max(self._grown(self.bps, rtt_ms, elapsed), sent)
        if acked_bps is not None:
            # Never raised past 1.5x what gets through (libwebrtc's throughput limit). Lowered to it only
            # where much is lost (a policer that drops without queueing: what gets through is the link);
            # a relay sending less than the estimate (a paused co-host, a layer at a quarter frame rate,
            # a publisher's encoder slowing down) says nothing of the link, and lowering the estimate with
            # it kept the host tile at 5 fps on a 600 kbit/s link carrying 170 kbit/s.
            limit = 1.5 * acked_bps + 10_000
            self.bps = min(self.bps, limit if loss > LOSS_CONGESTED else max(limit, held))
        self.bps = min(max(self.bps, MIN_BPS), MAX_BPS)

    def _may_cut_again(self, acked_bps: float, rtt_ms: float, now_ms: float) -> bool:
        """libwebrtc's TimeToReduceFurther: a further cut once a round trip (10-200 ms) has passed since the
        last, when its effect can show, or at once when what gets through is under half the estimate.
        Cutting at every feedback of one over-use (every 50-65 ms) took a viewer from 1.5 Mbit/s to 196
        kbit/s on a 600 kbit/s link before the first cut had reached it."""
        if self.last_cut_ms is None or self.bps is None:
            return True
        return now_ms - self.last_cut_ms >= min(max(rtt_ms, 10.0), 200.0) or acked_bps < 0.5 * self.bps

    def _grown(self, bps: float, rtt_ms: float, elapsed: float) -> float:
        near = self._capacity is not None and bps > 0.9 * self._capacity and bps < 1.5 * self._capacity
        if near:  # close to where the link pushed back: about one packet more per round trip
            return bps + 1200 * 8 * elapsed / ((rtt_ms + 100) / 1000)
        if self._capacity is not None and bps >= 1.5 * self._capacity:
            self._capacity = None  # the link moved: search anew
        return bps * math.pow(INCREASE_PER_S, elapsed)


class SendSideEstimator:
    """One viewer's send-side estimate from its transport-cc feedback."""

    def __init__(self) -> None:
        self.sent = SentPackets()
        self.trendline = Trendline()
        self.rate = AimdRate()
        self.loss = 0.0  # the last interval's lost share
        self.acked_bps: float | None = None
        self.feedback_packets = 0
        # (arrival, size, wait beyond the path's least) within ACKED_WINDOW_MS
        self._acked: deque[tuple[float, int, float]] = deque()
        self._acked_bytes = 0  # their sizes' sum
        self._offsets: deque[tuple[float, float]] = deque()  # (time, offset): a sliding minimum's candidates
        self.queue_ms = 0.0  # how much longer than the path's least delay packets take now
        # What the last-sent packet of each of the last feedbacks waited beyond the path's least: the
        # queue as it is now (``queue_ms``, from a feedback's least delayed packet, is its oldest state).
        self._queue_seen: deque[float] = deque(maxlen=FILLING_STEPS)
        self._interval = [0, 0]  # packets reported, lost, since the last loss judgement
        self._interval_start: float | None = None
        self._first_feedback: float | None = None
        # The last over-use judgements, for whoever asks why the estimate fell (the weak-network lab's
        # trace): (feedback time ms, what said so, queue now ms, estimate before, after).
        self.cuts: deque[tuple[float, str, float, int | None, int | None]] = deque(maxlen=32)

    @property
    def estimate_bps(self) -> int | None:
        return None if self.rate.bps is None else int(self.rate.bps)

    def on_feedback(self, results: list[tuple[int, int | None]], now_ms: float, rtt_ms: float | None) -> None:
        """A feedback packet's (sequence number, arrival µs or None) list, received at ``now_ms``."""
        self.feedback_packets += 1
        if self._first_feedback is None:
            self._first_feedback = now_ms
        acked: list[tuple[float, float, int]] = []
        lost = 0
        for seq, arrival_us in results:
            sent = self.sent.lookup(seq)
            if sent is None:
                continue
            if arrival_us is None:
                lost += 1
            else:
                acked.append((sent[0], arrival_us / 1000, sent[1]))
        acked.sort()
        if acked:
            self._measure_queue(min(arrived - sent for sent, arrived, _ in acked), now_ms)
            self._queue_seen.append(acked[-1][1] - acked[-1][0] - self._offsets[0][1])
        for sent_ms, arrived_ms, size in acked:
            self.trendline.add(sent_ms, arrived_ms)
            self._acked.append((arrived_ms, size, arrived_ms - sent_ms - self._offsets[0][1]))
            self._acked_bytes += size
        self._measure_acked()
        self._judge_loss(len(acked) + lost, lost, now_ms)
        usage = self.trendline.usage
        if self.congested:
            usage = Usage.OVERUSING
        elif usage is Usage.OVERUSING:
            usage = Usage.UNDERUSING  # a slope with no queue behind it: the estimate holds (no cut, no growth)
        acked_bps = self.acked_bps
        if usage is Usage.OVERUSING and acked_bps is not None and self.queue_now >= FILLING_MS:
            acked_bps = self._link_rate(acked_bps)
        before = self.estimate_bps
        if now_ms - self._first_feedback >= FIRST_AFTER_MS or self.rate.bps is not None:
            self.rate.update(usage, acked_bps, rtt_ms or 100.0, now_ms, self.loss)
        if usage is Usage.OVERUSING:
            why = "filling" if self.filling else "trend" if self.trendline.usage is Usage.OVERUSING else "full"
            self.cuts.append((now_ms, why, self.queue_now, before, self.estimate_bps))

    @property
    def congested(self) -> bool:
        """The path's queue grows (the trend line's over-use, with ``TREND_QUEUE_MS`` of queue to show for
        it; or ``filling``), or it stands full and drops: much is lost while packets wait ``FULL_QUEUE_MS``
        longer than the path's least delay (a trend line sees no growth in a queue that is full already;
        random loss comes with no queue)."""
        return ((self.trendline.usage is Usage.OVERUSING and self.queue_now >= TREND_QUEUE_MS) or self.filling
                or (self.loss > LOSS_CONGESTED and self.queue_ms > FULL_QUEUE_MS))

    @property
    def queue_now(self) -> float:
        """How much longer than the path's least the newest packet of the last feedback waited (ms)."""
        return self._queue_seen[-1] if self._queue_seen else 0.0

    @property
    def filling(self) -> bool:
        """The wait of each feedback's last-sent packet grew at each of the last ``FILLING_STEPS``
        feedbacks and is ``FILLING_MS`` now: a link that just got narrower under a running stream. The
        trend line, fitted over 20 packet groups, said so ~0.2 s after a cap from 1.5 Mbit/s to 600
        kbit/s, when the 200 ms queue had overflowed (it fills in ~0.13 s) and the host's frames were
        lost in it; this says so at the second feedback. Jitter makes spikes, not a staircase."""
        seen = self._queue_seen
        rise = JUMP_MS - FILLING_MS
        if len(seen) >= 2 and seen[-1] >= JUMP_MS and seen[-1] - seen[-2] >= rise and seen[-1] - self.queue_ms >= rise:
            # One feedback's jump, the later-sent packets waiting longer within it too: a cap under a running
            # stream, seen a feedback sooner. (A radio's stall releases its packets at once: the later-sent
            # waited less, and is left to the staircase.)
            return True
        return (len(seen) == FILLING_STEPS and seen[-1] >= FILLING_MS
                and all(b > a for a, b in zip(seen, list(seen)[1:], strict=False)))

    def _measure_queue(self, offset: float, now_ms: float) -> None:
        """``offset``: the least (arrival - send) of one feedback; the path's least over ``BASE_WINDOW_MS``
        is its delay with no queue, and the difference the queue now."""
        while self._offsets and (self._offsets[-1][1] >= offset or now_ms - self._offsets[0][0] > BASE_WINDOW_MS):
            if self._offsets[-1][1] >= offset:
                self._offsets.pop()  # a later, lower offset: never the least again
            else:
                self._offsets.popleft()
        self._offsets.append((now_ms, offset))
        self.queue_ms = offset - self._offsets[0][1]

    def _measure_acked(self) -> None:
        if not self._acked:
            return
        newest = self._acked[-1][0]
        while self._acked and newest - self._acked[0][0] > ACKED_WINDOW_MS:
            self._acked_bytes -= self._acked.popleft()[1]
        span = newest - self._acked[0][0]
        if span >= ACKED_WINDOW_MS / 2:
            # The first packet's bytes arrived before the span began: not counted in it.
            self.acked_bps = (self._acked_bytes - self._acked[0][1]) * 8 / (span / 1000)

    def _link_rate(self, acked_bps: float) -> float:
        """What the link carries, read while a queue stands: arrivals over its last busy stretch come at
        the bottleneck's own rate, whatever the relay sent.

        The 500 ms window (``acked_bps``) reads what the relay sent, which is the link's rate only while
        the relay fills it. It still held the free link's rate after a cap from 1.7 Mbit/s to 600 kbit/s
        (the first cut went to 936 kbit/s, the queue kept growing); and on a link the relay sent less than
        it carries (co-hosts paused, the host at a quarter frame rate) a keyframe's queue cut the estimate
        to a share of that thin stream, 390 to 325 kbit/s and lower at each keyframe, though the link
        carried 600. Never under ``BUSY_FLOOR`` of the 500 ms reading: a receiver that stalls stamps
        what the relay sent meanwhile as a busy stretch; a link narrowed more than that is found by the
        next cut, a round trip later."""
        busy = self._busy_acked_bps()
        return acked_bps if busy is None else max(busy, BUSY_FLOOR * acked_bps)

    def _busy_acked_bps(self) -> float | None:
        """What got through over the last stretch (at most ``RECENT_WINDOW_MS``) in which the link never
        idled: each packet waited at least as long as the gap since the one before it arrived, so it was
        queued when that one left and the bottleneck sent without pause (its own rate). None when the
        stretch is under ``BUSY_MIN_PACKETS`` or ``BUSY_MIN_MS``.

        A plain 150 ms window (libwebrtc's) reads the relay's own pace wherever the link idled within it:
        with the host at 5 fps on a 600 kbit/s link, 35 kbit/s, and the estimate went from 389 kbit/s to
        the floor (the lab's three tiles froze the host)."""
        packets = reversed(self._acked)
        later = next(packets, None)  # the earliest packet of the stretch so far
        if later is None:
            return None
        newest, total, count = later[0], later[1], 1
        for packet in packets:
            if later[2] < later[0] - packet[0] or newest - packet[0] > RECENT_WINDOW_MS:
                break  # the later packet was not yet queued when this one left: the link idled between
            total, count, later = total + packet[1], count + 1, packet
        span = newest - later[0]
        if count < BUSY_MIN_PACKETS or span < BUSY_MIN_MS:
            return None
        return (total - later[1]) * 8 / (span / 1000)  # the first's bytes arrived before the span

    def _judge_loss(self, reported: int, lost: int, now_ms: float) -> None:
        """The lost share over intervals of at least ``LOSS_INTERVAL_MS`` (and 20 packets)."""
        if self._interval_start is None:
            self._interval_start = now_ms
        self._interval[0] += reported
        self._interval[1] += lost
        if now_ms - self._interval_start < LOSS_INTERVAL_MS or self._interval[0] < 20:
            return
        self.loss = self._interval[1] / self._interval[0]
        self._interval, self._interval_start = [0, 0], now_ms
