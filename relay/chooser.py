"""Which layer of a layered video (simulcast, or SVC's spatial layers) one subscriber gets.

The decision is a pure function, ``decide(memory, situation, now) -> memory``, over plain values: what the
chooser carries from one choice to the next (``ChooserMemory``: the option it wants, a probe under way,
when the next probe may start and how long it waits after a failed one, since when nothing fits) and what
it sees now (``Situation``: the options' bitrates, what it sends, the estimate it may use, loss and
congestion, the subscriber's own wish). Its state (``ChooserState``) is read from the memory: steady,
probing, backing off or paused. ``LayerChooser`` is the thin stateful shell the adaptation timer drives:
it reads the subscriber's link into a ``Situation``, keeps the memory and counts the switches.

The rules. Down: when the link is congested (or the track's share of its viewer's estimate is too small)
and the estimate is under ``DOWN_AT`` of the current option's bitrate, to the best option within ``FIT``
of it (none, and it lasts ``PAUSE_HOLD``: video pauses, audio goes on); on loss over ``LOSS_CEILING``
without headroom, to what the loss-cut budget fits (never a pause for loss alone: random loss is left to
repairs). Up: straight to the best option the estimate fits (or the best allowed, with no estimate yet);
beyond that, padding raises what the subscriber receives to the next option's bitrate for
``timing.probe_for``; no loss, no congestion and no fall in its estimate meanwhile, and the layer goes up
(the next probe may follow after ``timing.up_hold``); otherwise the next probe waits twice as long (at
most ``timing.backoff[1]``). The timing is shorter where the relay estimates the link itself
(``SEND_SIDE_TIMING``). With VP8 temporal layers, the lowest layer at a quarter or half frame rate are
options of their own, before no video at all.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from relay.link import SubscriberLink

UP_HOLD = 2.0  # seconds on a new layer before probing for the next one (REMB; see ProbeTiming)
FIT = 0.9  # a lower layer fits when its bitrate is at most this share of the estimate
DOWN_AT = 0.75  # the current layer is left when the estimate falls under this share of its bitrate
LOSS_CEILING = 0.10  # above this loss the estimate is cut to what is getting through
PROBE_FOR = 1.5  # seconds a probe lasts
PROBE_LOSS = 0.03  # loss during a probe that fails it
PROBE_BACKOFF = (2.0, 8.0)  # the wait before the next probe: first, and at most (doubling after a failure)
PAUSE_HOLD = 2.0  # seconds even the lowest layer must not fit before video pauses
UNPROVEN_STEP = 1.5  # a step up to more than this times what is sent now is probed first (send-side only)
# A viewer's less important video, paused for lack of room, waits this long before it may come back (first,
# at most; doubling at each such pause, back to the first once it climbs): coming back costs a keyframe
# on a link that just had no room, and in the three-tiles lab co-hosts came back every 3.5 s, each keyframe
# queueing the host's frames behind it (a freeze, or a cut that left the host at a quarter frame rate).
RESUME_WAIT = (4.0, 16.0)


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


class ChooserState(enum.StrEnum):
    STEADY = "steady"
    PROBING = "probing"
    BACKING_OFF = "backing_off"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class ChooserMemory:
    """What a chooser carries from one choice to the next."""

    current: int | None  # the option wanted now (None: no video)
    backoff: float  # the wait before the next probe after a failed one
    next_probe: float = 0.0  # no probe starts before this time
    probe_layer: int | None = None  # the option a probe under way is for
    probe_until: float = 0.0
    probe_estimate: int | None = None  # the link's estimate when the probe started (a fall fails it)
    probe_bps: int = 0  # padding the probe wants on top of the media
    nothing_fits_since: float | None = None
    resume_wait: float = RESUME_WAIT[0]  # a less important video's wait after its next pause
    paused_estimate: int | None = None  # the link's estimate when it was paused so (its wait ends at half again)

    def state(self, timing: ProbeTiming) -> ChooserState:
        if self.current is None:
            return ChooserState.PAUSED
        if self.probe_layer is not None:
            return ChooserState.PROBING
        if self.backoff > timing.backoff[0]:
            return ChooserState.BACKING_OFF
        return ChooserState.STEADY


@dataclass(frozen=True, slots=True)
class Situation:
    """What a chooser sees at one choice."""

    rates: Sequence[float | None]  # the options' bitrates, cheapest first (None: not coming now)
    layer_of: Sequence[int]  # the layer of each option (the subscriber's wish is on layers)
    sending_bps: float  # what the track (or the link, when the track has it alone) sends now
    usable_bps: float | None  # the video estimate this track may use (its share); None: none yet
    estimate_bps: int | None  # the link's own estimate (a probe fails when it falls)
    loss: float
    congested: bool
    headroom: bool  # the link sends no more than its estimate
    timing: ProbeTiming
    max_layer: int | None = None  # the subscriber's wish (a small tile)
    paused_by_subscriber: bool = False  # a hidden tab
    shared: bool = False  # the track has a share of its viewer's estimate (several videos on one link)
    leads: bool = True  # the track whose probes may raise the estimate
    can_probe: bool = True  # False when the subscriber negotiated no RTX to pad with
    alarm: bool = False  # congestion has just begun on the link (the first choice since)

    @property
    def budget(self) -> float:
        """What the link is taken to carry: the estimate, cut when loss is high (GCC's rule)."""
        budget = self.usable_bps if self.usable_bps is not None else float("inf")
        if self.loss > LOSS_CEILING and self.sending_bps > 0:
            budget = min(budget, self.sending_bps * (1 - 0.5 * self.loss))
        return budget


def decide(memory: ChooserMemory, seen: Situation, now: float) -> ChooserMemory:
    """The next memory (its ``current`` is the option wanted) from the last one and what is seen now."""
    after = _decide(memory, seen, now)
    second = seen.shared and not seen.leads
    if second and memory.current is not None and after.current is None and not seen.paused_by_subscriber:
        # Paused for lack of room: it may come back (``_up``) only after its wait, longer at each such pause.
        return replace(after, next_probe=now + memory.resume_wait, paused_estimate=seen.estimate_bps,
                       resume_wait=min(memory.resume_wait * 2, RESUME_WAIT[1]))
    if second and memory.current is not None and after.current is not None and after.current > memory.current:
        return replace(after, resume_wait=RESUME_WAIT[0])  # it climbs: the link has room again
    return after


def _decide(memory: ChooserMemory, seen: Situation, now: float) -> ChooserMemory:
    rates = seen.rates
    available = [i for i, rate in enumerate(rates) if rate is not None]
    if seen.paused_by_subscriber or not available:
        return replace(_end_probe(memory, seen, now, failed=False), current=None)
    allowed = [i for i in available if seen.max_layer is None or seen.layer_of[i] <= seen.max_layer] \
        or available[:1]
    if memory.current is not None and memory.current not in allowed:
        # The layer stopped coming (the publisher's encoder dropped it) or the preference changed.
        below = [i for i in allowed if i < memory.current]
        memory = replace(memory, current=below[-1] if below else allowed[0])
    if memory.current is not None:
        memory, decided = _down(memory, seen, allowed, now)
        if decided:
            return memory
    return _up(memory, seen, allowed, now)


def _down(memory: ChooserMemory, seen: Situation, allowed: list[int], now: float) -> tuple[ChooserMemory, bool]:
    """Whether the link can keep the current option: (memory, True) when it goes down or pauses."""
    current = memory.current
    assert current is not None
    rates, budget = seen.rates, seen.budget
    rate = rates[current] or 0.0
    fitting = [i for i in allowed if i < current and (rates[i] or 0.0) <= budget * FIT]
    # Once a link is congested an option may stay while its budget wobbles down to DOWN_AT of its rate;
    # but at the moment congestion begins the queue before the viewer is filling, and only what fits
    # within FIT stays, so that it drains (the stage host kept its top layer 0.4 s into a full queue,
    # its share 79% of the layer, and froze for a second).
    if (seen.congested or seen.shared) and budget < (rate / FIT if seen.alarm else rate * DOWN_AT):
        # The link (or this track's share of it) cannot carry this option: down to the best that fits; if
        # none does and it lasts, video pauses (audio goes on).
        memory = _end_probe(memory, seen, now, failed=True)
        # A viewer's less important video given no share at all pauses at once, from whatever layer: its
        # allocation already decided (the hold is for a video alone on its link, whose estimate may dip
        # for a moment), and a step to the lowest layer first would cost a keyframe the full queue drops.
        given_nothing = seen.shared and not seen.leads and budget <= 0
        if not given_nothing and (fitting or current != allowed[0]):
            return replace(memory, current=fitting[-1] if fitting else allowed[0], nothing_fits_since=None), True
        since = memory.nothing_fits_since if memory.nothing_fits_since is not None else now
        hold = 0.0 if given_nothing else PAUSE_HOLD
        return replace(memory, nothing_fits_since=since, current=None if now - since >= hold else current), True
    memory = replace(memory, nothing_fits_since=None)
    if seen.loss > LOSS_CEILING and (not seen.headroom or seen.estimate_bps is None):
        # Heavy loss while sending more than the receiver estimates (a policer that drops without queueing,
        # so the estimate never falls), or before any estimate came (a new subscriber on a thin link): step
        # down to what the loss-cut budget fits, but never pause for loss alone. Random loss on a link with
        # room (a noisy radio) is left to repairs.
        memory = _end_probe(memory, seen, now, failed=True)
        if budget < rate * DOWN_AT:
            memory = replace(memory, current=fitting[-1] if fitting else current)
        return memory, True
    return memory, False


def _up(memory: ChooserMemory, seen: Situation, allowed: list[int], now: float) -> ChooserMemory:
    """With the link keeping the current option: a probe's progress, a step up the estimate allows, or a
    probe."""
    current, rates = memory.current, seen.rates
    higher = [i for i in allowed if current is None or i > current]
    if not higher:
        return _end_probe(memory, seen, now, failed=False)
    if memory.probe_layer is not None:
        return _probing(memory, seen, now)
    if seen.loss >= PROBE_LOSS or seen.congested:
        return memory
    if _waiting_to_resume(memory, seen.leads, seen.estimate_bps, now):
        return memory  # a less important video paused for lack of room waits before it comes back
    estimate = seen.usable_bps
    fits = [i for i in higher if estimate is None or (rates[i] or 0.0) <= estimate * FIT]
    if fits:
        return _step_up(memory, seen, [i for i in higher if i <= fits[-1]], now)
    if not seen.leads or now < memory.next_probe:
        return memory  # (only the viewer's first video probes: the others wait for its share to grow)
    return _start_probe(memory, seen, higher, now)


def _step_up(memory: ChooserMemory, seen: Situation, upto: list[int], now: float) -> ChooserMemory:
    """The estimate fits ``upto[-1]`` (or there is none yet: nothing says the link cannot): straight to it,
    as after the subscriber raised its own limit; unless that step is unproven (``_unproven``). The relay's
    own estimate holds while the link carries less (a paused co-host, a low layer), so it can stand far above
    anything the link was shown to carry lately: such a step is probed first (padding, dropped at no cost)
    rather than tried with a keyframe (the host's jump from 140 to 360 kbit/s on a 600 kbit/s link whose
    estimate said 750 queued the keyframe and froze its tile)."""
    if not _unproven(memory, seen, upto[-1]):
        return replace(memory, current=upto[-1], next_probe=now + seen.timing.up_hold)
    if now < memory.next_probe:
        return memory
    return _start_probe(memory, seen, upto, now)


def _waiting_to_resume(memory: ChooserMemory, leads: bool, estimate_bps: int | None, now: float) -> bool:
    """A less important video paused for lack of room, within its wait: until ``next_probe``, or until the
    link's estimate grew half again since the pause (the link was freed: the host's probes showed it)."""
    if memory.current is not None or leads or now >= memory.next_probe:
        return False
    paused_at = memory.paused_estimate
    return not (paused_at is not None and estimate_bps is not None and estimate_bps >= 1.5 * paused_at)


def _unproven(memory: ChooserMemory, seen: Situation, option: int) -> bool:
    """Whether a step up to ``option`` is more than the link was shown to carry: where the relay estimates
    the link itself and it carries several videos, the one whose probes raise the estimate stepping to
    another layer (a keyframe) at over ``UNPROVEN_STEP`` times what it sends now (or its current option's
    rate)."""
    current = memory.current
    if current is None or not seen.shared or not seen.leads or not seen.can_probe \
            or seen.timing is not SEND_SIDE_TIMING:
        # (A video alone on its link steps straight up as before: a viewer of one stream whose publisher's
        # top layer came back after a busy moment was kept off it by the probe, in CI's H.264 lab test.)
        return False
    if seen.layer_of[option] == seen.layer_of[current]:
        return False  # more frames of the same layer: no keyframe to queue, and back at once if it fails
    shown = max(seen.sending_bps, seen.rates[current] or 0.0)
    return (seen.rates[option] or 0.0) > UNPROVEN_STEP * shown


def _start_probe(memory: ChooserMemory, seen: Situation, higher: list[int], now: float) -> ChooserMemory:
    """Probe towards the next option worth it: at least half again what it gets now (a half-frame-rate step
    of the lowest layer is not worth a probe of its own), else the best there is."""
    rates, current = seen.rates, memory.current
    floor = (rates[current] or 0.0) * 1.5 if current is not None else 0.0
    wanted = next((i for i in higher if (rates[i] or 0.0) >= floor), higher[-1])
    if not seen.can_probe:  # no RTX to pad with: try the option itself
        return replace(memory, current=wanted, next_probe=now + seen.timing.up_hold)
    return replace(memory, probe_layer=wanted, probe_until=now + seen.timing.probe_for,
                   probe_estimate=seen.estimate_bps, probe_bps=max(0, int((rates[wanted] or 0.0) - seen.sending_bps)))


def _probing(memory: ChooserMemory, seen: Situation, now: float) -> ChooserMemory:
    """A probe under way: fails on loss, congestion or a falling estimate; else, once it has lasted
    ``timing.probe_for``, the option goes up."""
    layer = memory.probe_layer
    assert layer is not None
    dropped = (memory.probe_estimate is not None and seen.estimate_bps is not None
               and seen.estimate_bps < memory.probe_estimate * 0.85)
    if seen.loss > PROBE_LOSS or dropped or seen.congested:
        return _end_probe(memory, seen, now, failed=True)
    if now >= memory.probe_until:
        return replace(_end_probe(memory, seen, now, failed=False), current=layer)
    return replace(memory, probe_bps=max(0, int((seen.rates[layer] or 0.0) - seen.sending_bps)))


def _end_probe(memory: ChooserMemory, seen: Situation, now: float, failed: bool) -> ChooserMemory:
    if memory.probe_layer is None and not failed:
        return memory
    was_probing = memory.probe_layer is not None
    memory = replace(memory, probe_layer=None, probe_bps=0)
    timing = seen.timing
    if not failed:
        return replace(memory, backoff=timing.backoff[0], next_probe=now + timing.up_hold)
    if was_probing or now >= memory.next_probe:
        return replace(memory, next_probe=now + memory.backoff, backoff=min(memory.backoff * 2, timing.backoff[1]))
    return memory


class LayerChooser:
    """One subscriber's layered video: reads its link into a ``Situation`` about twice a second (``choose``),
    keeps the ``ChooserMemory`` that ``decide`` returns, and counts the switches."""

    def __init__(self, link: SubscriberLink) -> None:
        self.link = link
        self.max_layer: int | None = None  # the subscriber's preference (a small tile); None: no limit
        self.paused_by_subscriber = False  # a hidden tab
        self.can_probe = True  # False when the subscriber negotiated no RTX to pad with
        # Set by the viewer's allocation when its one connection carries several videos (relay/allocation.py):
        # this track's part of the link's video estimate (0: none fits beside more important ones), and
        # whether it is the track whose probes may raise the estimate. None: the track has the link alone.
        self.share: float | None = None
        self.leads = True
        self.switches = {"up": 0, "down": 0, "pause": 0, "resume": 0}
        self.memory = ChooserMemory(current=None, backoff=self.timing.backoff[0])

    @property
    def current(self) -> int | None:
        """The option wanted now (None: no video)."""
        return self.memory.current

    @current.setter
    def current(self, option: int | None) -> None:
        """Where the down-track is aimed now, as an index of today's options (which grow when temporal
        layers show up): the caller says so before each choice."""
        self.memory = replace(self.memory, current=option)

    def waiting_to_resume(self, now: float) -> bool:
        """A less important video paused for lack of room, within its wait before it may come back (its
        viewer's allocation gives it nothing meanwhile: a share it cannot use would only be the host's less)."""
        return _waiting_to_resume(self.memory, self.leads, self.link.estimate_bps, now)

    @property
    def probe_bps(self) -> int:
        """Padding a probe wants on top of the media (0 when not probing)."""
        return self.memory.probe_bps

    @property
    def timing(self) -> ProbeTiming:
        return SEND_SIDE_TIMING if self.link.send_side is not None else REMB_TIMING

    @property
    def state(self) -> ChooserState:
        return self.memory.state(self.timing)

    @property
    def usable_bps(self) -> float | None:
        """The video estimate this track may use: the link's, or its share of it."""
        video = self.link.video_estimate_bps
        if self.share is None:
            return video
        return self.share if video is None else min(video, self.share)

    def start(self, top: int) -> int:
        """The layer a new subscriber starts on: the best one, its link unknown yet (most links carry it)."""
        allowed = top if self.max_layer is None else min(top, self.max_layer)
        self.current = allowed
        return allowed

    def situation(self, rates: Sequence[float | None], sending_bps: float, now: float,
                  spatial: Sequence[int] | None = None) -> Situation:
        link = self.link
        return Situation(rates=rates, layer_of=spatial if spatial is not None else range(len(rates)),
                         sending_bps=sending_bps, usable_bps=self.usable_bps, estimate_bps=link.estimate_bps,
                         loss=link.loss, congested=link.congested(now), headroom=link.headroom(now),
                         timing=self.timing, max_layer=self.max_layer, paused_by_subscriber=self.paused_by_subscriber,
                         shared=self.share is not None, leads=self.leads, can_probe=self.can_probe,
                         alarm=link.alarm)

    def choose(self, rates: Sequence[float | None], sending_bps: float, now: float | None = None,
               spatial: Sequence[int] | None = None) -> int | None:
        """``rates`` are the options cheapest first (a layer, or a layer at a lower frame rate); ``spatial``
        names the layer of each; by default option i is layer i. Returns the option wanted (None: no video)."""
        now = time.monotonic() if now is None else now
        before = self.memory.current
        self.memory = decide(self.memory, self.situation(rates, sending_bps, now, spatial), now)
        self._count(before, self.memory.current)
        return self.memory.current

    def _count(self, before: int | None, after: int | None) -> None:
        if after == before:
            return
        if after is None:
            self.switches["pause"] += 1
        elif before is None:
            self.switches["resume"] += 1
        else:
            self.switches["up" if after > before else "down"] += 1
