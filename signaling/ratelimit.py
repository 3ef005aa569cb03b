"""Token buckets for per-user and per-connection rate limits."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    """Holds up to ``burst`` tokens, refilled at ``rate`` per second; ``take`` spends them."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self, amount: float = 1.0) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def take_up_to(self, amount: int) -> int:
        """Spend as many whole tokens as are there, up to ``amount``; return how many."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        granted = min(amount, int(self._tokens))
        self._tokens -= granted
        return granted

    def give_back(self, amount: int) -> None:
        self._tokens = min(self.burst, self._tokens + amount)

    @property
    def exhausted(self) -> bool:
        """True while not even one token is left."""
        return self._tokens + (time.monotonic() - self._stamp) * self.rate < 1.0

    @property
    def full(self) -> bool:
        """True once the bucket has refilled: it no longer carries any state worth keeping."""
        return self._tokens + (time.monotonic() - self._stamp) * self.rate >= self.burst


class KeyedBuckets:
    """A ``TokenBucket`` per key (an address, a show), made on first use, at most ``max_keys`` kept: the
    least recently used is forgotten first (it starts full again if it comes back)."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, rate: float, burst: int) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket.take()

    def __len__(self) -> int:
        return len(self._buckets)
