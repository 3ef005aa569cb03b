"""``rtc.ratecount.WindowRateCounter``: aiortc's ``RateCounter`` results (the REMB estimator's incoming
bitrate) at a cost that does not grow with the gap between packets. A table of the edges, then aiortc's own
counter run beside it on seeded random traffic (gaps of 0 to 1.5 windows, resets)."""

from __future__ import annotations

import random

import pytest
from aiortc.rate import RateCounter

from rtc.ratecount import WindowRateCounter


@pytest.mark.parametrize(("adds", "now", "expected"), [
    ([], 0, None),  # nothing added
    ([(100, 5)], 5, None),  # a window one millisecond long
    ([(100, 5)], 6, 400_000),  # 100 octets over 2 ms, in bits per second (scale 8000)
    ([(100, 0), (100, 9)], 9, 160_000),  # 200 octets over the 10 ms since the first add
    ([(100, 0), (100, 999)], 999, 1_600),  # the window full: 1000 ms
    ([(100, 0), (100, 999)], 1000, 800),  # the first packet's millisecond has left the window
    ([(100, 0)], 5000, None),  # everything has left it
])
def test_rate_table(adds, now, expected):
    counter = WindowRateCounter(1000, 8000)
    for value, at in adds:
        counter.add(value, at)
    assert counter.rate(now) == expected


@pytest.mark.parametrize("seed", range(20))
def test_same_rates_as_aiortcs_counter(seed):
    rng = random.Random(seed)
    window = rng.choice([5, 50, 1000])
    theirs, ours = RateCounter(window, 8000), WindowRateCounter(window, 8000)
    now = rng.randint(0, 10**6)
    for _ in range(500):
        now += rng.choice([0, 0, 1, 2, 3, 6, 10, 40, window - 1, window, window + window // 2])
        if rng.random() < 0.8:
            value = rng.randint(1, 1500)
            theirs.add(value, now)
            ours.add(value, now)
        if rng.random() < 0.02:
            theirs.reset()
            ours.reset()
        assert ours.rate(now) == theirs.rate(now)
