"""A received-bitrate counter with aiortc's ``RateCounter`` interface and results, at a cost per packet that
does not grow with the time between packets.

aiortc's counter keeps one bucket per millisecond of its window (1000 for the REMB estimator's incoming
bitrate) and, on every ``add`` and ``rate``, walks the buckets one by one from the window's old start to its
new one: a step per millisecond since the last packet, twice per packet, and a thousand after a pause. This
one keeps the packets inside the window in arrival order and drops the ones that fall out, so each packet is
added once and removed once. ``rtc.adapter`` puts it in a publisher's estimator (``_ReceiverStep``).
"""

from __future__ import annotations

from collections import deque


class WindowRateCounter:
    """``add(value, now_ms)`` then ``rate(now_ms)``: the values added in the last ``window_ms`` milliseconds
    (the window starts at the first add until it is that long), times ``scale``, per millisecond of the
    window; None before anything was added or while the window is one millisecond long."""

    def __init__(self, window_ms: int, scale: int = 8000) -> None:
        self._window_ms = window_ms
        self._scale = scale
        self._entries: deque[tuple[int, int]] = deque()
        self._origin_ms: int | None = None
        self._count = 0
        self._value = 0

    def reset(self) -> None:
        self._entries.clear()
        self._origin_ms = None
        self._count = 0
        self._value = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        self._entries.append((now_ms, value))
        self._count += 1
        self._value += value

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is None:
            return None
        self._erase_old(now_ms)
        window = now_ms - self._origin_ms + 1
        if self._count > 0 and window > 1:
            return round(self._scale * self._value / window)
        return None

    def _erase_old(self, now_ms: int) -> None:
        assert self._origin_ms is not None
        origin = now_ms - self._window_ms + 1
        if self._origin_ms >= origin:
            return
        self._origin_ms = origin
        entries = self._entries
        while entries and entries[0][0] < origin:
            _, value = entries.popleft()
            self._count -= 1
            self._value -= value
