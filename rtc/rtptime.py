"""RTP timestamps (32 bits, wrapping, in the sender's clock) as one count that only grows with the media."""

from __future__ import annotations


class RtpTimeline:
    """``extend(ts)``: the timestamp as an unbounded count near the previous one (a wrap past 2^32 goes on
    upwards, a packet a little out of order steps back), counted from the first timestamp seen."""

    def __init__(self) -> None:
        self._last_raw: int | None = None
        self._extended = 0
        self._first: int | None = None

    def extend(self, timestamp: int) -> int:
        if self._last_raw is None:
            self._extended = timestamp
        else:
            self._extended += (timestamp - self._last_raw + (1 << 31)) % (1 << 32) - (1 << 31)
        self._last_raw = timestamp
        if self._first is None:
            self._first = self._extended
        return self._extended - self._first

    def reset(self) -> None:
        """The next timestamp starts a new count from 0 (a new stream whose timestamps start elsewhere)."""
        self._last_raw = self._first = None
