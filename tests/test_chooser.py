"""The layer chooser's decision as a table: a memory and what is seen now -> the option wanted, the state,
the padding a probe wants (relay/chooser.py's ``decide``, a pure function)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.chooser import (
    PAUSE_HOLD,
    REMB_TIMING,
    SEND_SIDE_TIMING,
    ChooserMemory,
    ChooserState,
    Situation,
    decide,
)

RATES = (150e3, 350e3, 1.2e6)  # three simulcast layers
STEADY_TOP = ChooserMemory(current=2, backoff=REMB_TIMING.backoff[0])
STEADY_LOW = ChooserMemory(current=0, backoff=REMB_TIMING.backoff[0])
PROBING_1 = replace(STEADY_LOW, probe_layer=1, probe_until=11.5, probe_estimate=400_000, probe_bps=200_000)


def seen(**changes: object) -> Situation:
    base = Situation(rates=RATES, layer_of=(0, 1, 2), sending_bps=1.2e6, usable_bps=3e6, estimate_bps=3_000_000,
                     loss=0.0, congested=False, headroom=True, timing=REMB_TIMING)
    return replace(base, **changes)


S = ChooserState
CASES = [
    # name, memory, situation, now -> current, state, probe_bps
    ("a clean link keeps the top", STEADY_TOP, seen(), 10.0, 2, S.STEADY, 0),
    ("congested under the top: down to what fits", STEADY_TOP,
     seen(congested=True, usable_bps=500e3, estimate_bps=500_000), 10.0, 1, S.BACKING_OFF, 0),
    ("congested, the share at 80% of the layer: it stays (shares wobble)", STEADY_TOP,
     seen(congested=True, shared=True, usable_bps=960e3, estimate_bps=1_500_000), 10.0, 2, S.STEADY, 0),
    ("... but not when the congestion has just begun: the queue must drain", STEADY_TOP,
     seen(congested=True, shared=True, alarm=True, usable_bps=960e3, estimate_bps=1_500_000), 10.0, 1,
     S.BACKING_OFF, 0),
    ("a co-host given no share pauses at once", STEADY_LOW,
     seen(shared=True, leads=False, usable_bps=0.0, estimate_bps=500_000), 10.0, None, S.PAUSED, 0),
    ("... from its top layer too, not by way of the lowest (whose keyframe a full queue drops)", STEADY_TOP,
     seen(congested=True, alarm=True, shared=True, leads=False, usable_bps=0.0, estimate_bps=500_000), 10.0,
     None, S.PAUSED, 0),
    ("congested under the lowest: holds it at first", STEADY_LOW,
     seen(congested=True, usable_bps=50e3, estimate_bps=50_000, sending_bps=150e3), 10.0, 0, S.BACKING_OFF, 0),
    ("... and pauses when that lasts", replace(STEADY_LOW, nothing_fits_since=10.0 - PAUSE_HOLD),
     seen(congested=True, usable_bps=50e3, estimate_bps=50_000, sending_bps=150e3), 10.0, None, S.PAUSED, 0),
    ("an estimate under the layer without congestion: stays (REMB lags)", STEADY_TOP,
     seen(usable_bps=500e3, estimate_bps=500_000), 10.0, 2, S.STEADY, 0),
    ("a share too small for the layer goes down though the link is not congested", STEADY_TOP,
     seen(usable_bps=500e3, shared=True), 10.0, 1, S.BACKING_OFF, 0),
    ("heavy loss beyond the estimate (a policer): down to the loss-cut budget", STEADY_TOP,
     seen(loss=0.4, headroom=False, sending_bps=1.0e6, usable_bps=1.3e6), 10.0, 1, S.BACKING_OFF, 0),
    ("heavy random loss with headroom: left to repairs", STEADY_TOP,
     seen(loss=0.3, headroom=True), 10.0, 2, S.STEADY, 0),
    ("the estimate fits a higher layer: straight up", STEADY_LOW,
     seen(sending_bps=150e3), 10.0, 2, S.STEADY, 0),
    ("the relay's own estimate fits the top, far over what goes out: probed first (padding, no keyframe)",
     replace(STEADY_LOW, backoff=SEND_SIDE_TIMING.backoff[0]),
     seen(sending_bps=150e3, timing=SEND_SIDE_TIMING, shared=True), 10.0, 0, S.PROBING, 200_000),
    ("... a video alone on its link: straight up, as before",
     replace(STEADY_LOW, backoff=SEND_SIDE_TIMING.backoff[0]), seen(sending_bps=150e3, timing=SEND_SIDE_TIMING),
     10.0, 2, S.STEADY, 0),
    ("... more frames of the same layer (its quarter frame rate to all of it): straight up, no keyframe",
     ChooserMemory(current=0, backoff=SEND_SIDE_TIMING.backoff[0]),
     seen(rates=(30e3, 60e3, 150e3, 350e3), layer_of=(0, 0, 0, 1), sending_bps=30e3, usable_bps=300e3,
          estimate_bps=300_000, timing=SEND_SIDE_TIMING, shared=True), 10.0, 2, S.STEADY, 0),
    ("... a step within 1.5x of what goes out: straight up",
     ChooserMemory(current=1, backoff=SEND_SIDE_TIMING.backoff[0]),
     seen(sending_bps=900e3, timing=SEND_SIDE_TIMING, shared=True), 10.0, 2, S.STEADY, 0),
    ("... a viewer's second video (no probes of its own): straight up, as its share says",
     replace(STEADY_LOW, backoff=SEND_SIDE_TIMING.backoff[0]),
     seen(sending_bps=150e3, timing=SEND_SIDE_TIMING, shared=True, leads=False), 10.0, 2, S.STEADY, 0),
    ("a co-host paused for lack of room waits before it may come back (its keyframe costs the host)",
     ChooserMemory(current=None, backoff=SEND_SIDE_TIMING.backoff[0], next_probe=12.0),
     seen(sending_bps=0.0, timing=SEND_SIDE_TIMING, shared=True, leads=False), 10.0, None, S.PAUSED, 0),
    ("... or once the link's estimate grew half again since the pause (freed: the host's probes showed it)",
     ChooserMemory(current=None, backoff=SEND_SIDE_TIMING.backoff[0], next_probe=12.0, paused_estimate=400_000),
     seen(sending_bps=0.0, timing=SEND_SIDE_TIMING, shared=True, leads=False, estimate_bps=600_000), 10.0, 2,
     S.STEADY, 0),
    ("... and comes back once it has waited",
     ChooserMemory(current=None, backoff=SEND_SIDE_TIMING.backoff[0], next_probe=12.0),
     seen(sending_bps=0.0, timing=SEND_SIDE_TIMING, shared=True, leads=False), 12.5, 2, S.STEADY, 0),
    ("no estimate yet: the best allowed", STEADY_LOW, seen(usable_bps=None, estimate_bps=None), 10.0, 2, S.STEADY, 0),
    ("the subscriber's wish caps it", STEADY_TOP, seen(max_layer=0), 10.0, 0, S.STEADY, 0),
    ("a hidden tab: no video", STEADY_TOP, seen(paused_by_subscriber=True), 10.0, None, S.PAUSED, 0),
    ("nothing coming: no video", STEADY_TOP, seen(rates=(None, None, None)), 10.0, None, S.PAUSED, 0),
    ("the top stops coming: the best below", STEADY_TOP, seen(rates=(150e3, 350e3, None)), 10.0, 1, S.STEADY, 0),
    ("too little for the next layer: a probe pads up to it", STEADY_LOW,
     seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=150e3), 10.0, 0, S.PROBING, 200_000),
    ("not before the next probe's time", replace(STEADY_LOW, next_probe=12.0),
     seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=150e3), 10.0, 0, S.STEADY, 0),
    ("no padding possible (no RTX): tries the layer itself", STEADY_LOW,
     seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=150e3, can_probe=False), 10.0, 1, S.STEADY, 0),
    ("a viewer's second video never probes", STEADY_LOW,
     seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=150e3, shared=True, leads=False),
     10.0, 0, S.STEADY, 0),
    ("a probe that lasted, clean: up", PROBING_1,
     seen(usable_bps=300e3, estimate_bps=400_000, sending_bps=350e3), 11.5, 1, S.STEADY, 0),
    ("a probe under way keeps padding", PROBING_1,
     seen(usable_bps=300e3, estimate_bps=400_000, sending_bps=250e3), 11.0, 0, S.PROBING, 100_000),
    ("a probe that met loss fails, and the next waits longer", PROBING_1,
     seen(usable_bps=300e3, estimate_bps=400_000, sending_bps=350e3, loss=0.05), 11.0, 0, S.BACKING_OFF, 0),
    ("a probe whose estimate fell fails", PROBING_1,
     seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=350e3), 11.0, 0, S.BACKING_OFF, 0),
]


@pytest.mark.parametrize(("memory", "situation", "now", "current", "state", "probe_bps"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_decide(memory, situation, now, current, state, probe_bps):
    after = decide(memory, situation, now)
    assert (after.current, after.state(situation.timing), after.probe_bps) == (current, state, probe_bps)


def test_failed_probes_wait_longer_each_time_up_to_the_most():
    memory = replace(STEADY_LOW, backoff=SEND_SIDE_TIMING.backoff[0])
    waits = []
    now = 10.0
    for _ in range(5):
        probing = decide(memory, seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=150e3,
                                      timing=SEND_SIDE_TIMING), now)
        assert probing.state(SEND_SIDE_TIMING) is ChooserState.PROBING
        memory = decide(probing, seen(usable_bps=300e3, estimate_bps=300_000, sending_bps=350e3, loss=0.1,
                                      timing=SEND_SIDE_TIMING), now + 0.5)
        waits.append(memory.next_probe - (now + 0.5))
        now = memory.next_probe
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_decide_is_pure():
    memory, situation = STEADY_TOP, seen(congested=True, usable_bps=500e3, estimate_bps=500_000)
    assert decide(memory, situation, 10.0) == decide(memory, situation, 10.0)
    assert memory == STEADY_TOP  # (frozen: nothing the caller holds changes)


def test_each_pause_for_lack_of_room_makes_a_co_host_wait_longer_before_it_comes_back():
    from relay.chooser import RESUME_WAIT

    nothing = seen(shared=True, leads=False, usable_bps=0.0, estimate_bps=500_000, timing=SEND_SIDE_TIMING)
    room = seen(shared=True, leads=False, sending_bps=0.0, timing=SEND_SIDE_TIMING)
    memory, now, waits = ChooserMemory(current=0, backoff=SEND_SIDE_TIMING.backoff[0]), 10.0, []
    for _ in range(4):
        memory = decide(memory, nothing, now)  # paused
        assert memory.current is None
        waits.append(memory.next_probe - now)
        now = memory.next_probe
        memory = decide(memory, room, now)  # back, once waited
        assert memory.current is not None
        memory = replace(memory, current=0)  # (on its lowest layer, as the adaptation would say)
    assert waits == [RESUME_WAIT[0], 2 * RESUME_WAIT[0], RESUME_WAIT[1], RESUME_WAIT[1]]
    climbed = decide(memory, room, now + 1)  # room to climb: the link has room again
    assert climbed.current == 2 and climbed.resume_wait == RESUME_WAIT[0]
