"""Asking for lost video packets (RTCP NACK) on the receiving side: what stands in a receiver's place of
aiortc's ``NackGenerator``.

aiortc asks for a packet once, when the gap that lost it appears; if the retransmission is lost too, the
packet is never asked for again, and a keyframe with a hole stays undecodable until a new one is asked
for and comes (most of the slowest 1v1 set-ups through 5% loss). Here, as in Pion's NACK generator
interceptor and libwebrtc's NackRequester, a packet still missing is asked for again every
``interval`` seconds, ``tries`` times at most. One generator per SSRC: simulcast layers share a receiver
and have unrelated sequence numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.rtp import RtpPacket

NACK_INTERVAL = 0.15  # seconds between asks for one packet: past a typical round trip, so seldom twice for nothing
NACK_TRIES = 4
MAX_MISSING = 256  # packets tracked at once; a larger hole is a lost cause (a keyframe request repairs it)
TOO_OLD = 512  # sequence numbers behind the newest after which a packet is no longer asked for


class RepeatingNacks:
    """One SSRC's missing packets and when each was last asked for. ``add`` takes each arriving packet and
    says whether some are due now; ``missing`` is then exactly those (what aiortc's receiver sends)."""

    def __init__(self, interval: float = NACK_INTERVAL, tries: int = NACK_TRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.tries, self._clock = interval, tries, clock
        self.max_seq: int | None = None
        self._asked: dict[int, tuple[float, int]] = {}  # missing seq -> (when last asked, how often)
        self.missing: set[int] = set()
        self.asked = 0  # NACKed sequence numbers sent, repeats included

    def add(self, packet: RtpPacket) -> bool:
        seq = packet.sequence_number
        if self.max_seq is None:
            self.max_seq = seq
            return False
        ahead = (seq - self.max_seq) & 0xFFFF
        if 0 < ahead < 0x8000:
            if ahead > MAX_MISSING:  # a jump (a new stream, a long outage): nothing behind it is worth asking
                self._asked.clear()
            else:
                for n in range(1, ahead):
                    self._asked[(self.max_seq + n) & 0xFFFF] = (float("-inf"), 0)
            self.max_seq = seq
        else:
            self._asked.pop(seq, None)
        return self._due()

    def _due(self) -> bool:
        if not self._asked:  # the usual case, on every packet: nothing missing
            if self.missing:
                self.missing = set()
            return False
        now = self._clock()
        due = set()
        assert self.max_seq is not None
        for seq, (at, times) in list(self._asked.items()):
            if (self.max_seq - seq) & 0xFFFF > TOO_OLD or times >= self.tries:
                del self._asked[seq]
            elif now - at >= self.interval:
                due.add(seq)
                self._asked[seq] = (now, times + 1)
        while len(self._asked) > MAX_MISSING:
            del self._asked[next(iter(self._asked))]
        self.missing = due
        self.asked += len(due)
        return bool(due)


class NacksPerSsrc:
    """Stands where a receiver's one NACK generator was: a ``RepeatingNacks`` per SSRC. ``missing`` is that
    of the last packet's SSRC, which is the one aiortc sends the NACK for."""

    def __init__(self) -> None:
        self._generators: dict[int, RepeatingNacks] = {}
        self._current = RepeatingNacks()

    @property
    def missing(self) -> set[int]:
        return self._current.missing

    @property
    def asked(self) -> int:
        return sum(g.asked for g in self._generators.values())

    def add(self, packet: RtpPacket) -> bool:
        generator = self._generators.get(packet.ssrc)
        if generator is None:
            if len(self._generators) >= 16:  # bounded: a publisher changing SSRCs forever
                self._generators.clear()
            generator = self._generators[packet.ssrc] = RepeatingNacks()
        self._current = generator
        return generator.add(packet)
