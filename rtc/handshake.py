"""Fast connection set-up through loss: what ICE and DTLS do when a datagram of theirs is lost.

Owns the repair of one ICE transport's DTLS handshake (``HandshakeRepair``), the round-trip samples it
times its resends by (``sample_ice_rtt``), and aioice's STUN retransmission schedule. Each is attached
by ``rtc.adapter.quicken_handshakes``; the decisions are pure functions with table tests
(``tests/test_handshake.py``), apart from the datagrams they move.

Why each piece (1v1 set-up through 100 ms RTT and 5% loss, ``benchmarks/call_setup.py``):
- OpenSSL resends a lost DTLS flight after 1 s, doubling, and pyOpenSSL cannot set it. A flight is sent
  again here after ``resend_delay``: a round trip (measured by the ICE checks just before, or by the
  handshake's own exchanges) plus 25 ms, instead of a fixed 200 ms.
- Reactions before timers. A peer that sends its previous flight again did not get ours: ours goes out
  at once (RFC 6347 4.2.4). A peer that sends SRTP while we are still handshaking has finished, so its
  last flight was lost: ours goes out at once, which makes it send that again.
- SRTP that arrives while the handshake still runs (the peer finished first, and its media overtook
  the flight that would finish ours) is kept, a few dozen packets at most, and handed on once the
  keys exist: aiortc would drop it, and a publisher's first packets are its first keyframe.
- The round trip: each successful ICE check timed (aioice retransmits before it can know, so a sample
  may read long; the smallest wins), and on the answering side, from the answer leaving to the
  offerer's first check arriving, the only sample an answerer has before its first DTLS flight.
- aioice retransmits a STUN check after 500 ms, doubling; libwebrtc pings a not-yet-writable pair
  every 48 ms. ``set_stun_schedule`` starts at 50 ms, doubling, for a few more tries.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_RESEND = 0.2  # seconds, before any round trip is known
MIN_RESEND, MAX_RESEND = 0.05, 1.0
# A peer answers a flight as soon as it has read it (a few ms of crypto): an answer not back a round trip
# and this much later is lost. A resend that was not needed costs a flight's bytes and is dropped by the
# peer's replay check (or answered once more).
RESEND_MARGIN = 0.025
MAX_RESENDS = 4  # our resends per flight; OpenSSL's own 1 s timer remains behind them
MAX_EARLY_SRTP = 64  # SRTP datagrams kept while the handshake finishes
MAX_SEEN = 64  # the peer's handshake datagrams remembered (a handshake has about ten)


def resend_delay(rtt: float | None, attempt: int) -> float:
    """Seconds to wait for an answer to our flight before sending it again, for the ``attempt``-th time
    (0: the first resend), given the round-trip time (None: not known yet). Doubles per attempt."""
    base = DEFAULT_RESEND if rtt is None else min(MAX_RESEND, max(MIN_RESEND, rtt + RESEND_MARGIN))
    return float(base * (1 << min(attempt, 6)))


def is_dtls(data: bytes) -> bool:
    return bool(data) and 19 < data[0] < 64


def is_srtp(data: bytes) -> bool:
    return bool(data) and 127 < data[0] < 192


def flight_key(datagram: bytes) -> tuple[tuple[int, ...], ...]:
    """What identifies a DTLS datagram across retransmissions, which carry new record sequence numbers:
    per record, its content type and epoch, and for a plaintext handshake record the message sequence
    and fragment offset of its message (for an encrypted one, its length). Records cut short end it."""
    out: list[tuple[int, ...]] = []
    at = 0
    while at + 13 <= len(datagram):
        content_type, epoch = datagram[at], int.from_bytes(datagram[at + 3:at + 5], "big")
        length = int.from_bytes(datagram[at + 11:at + 13], "big")
        body = datagram[at + 13:at + 13 + length]
        if content_type == 22 and epoch == 0 and len(body) >= 12:
            out.append((content_type, epoch, body[0], int.from_bytes(body[4:6], "big"),
                        int.from_bytes(body[6:9], "big")))
        else:
            out.append((content_type, epoch, length))
        at += 13 + length
    return tuple(out)


class RoundTrip:
    """The smallest round-trip time seen on one ICE transport (checks and handshake exchanges), seconds."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: float | None = None

    def add(self, sample: float) -> None:
        if sample > 0 and (self.seconds is None or sample < self.seconds):
            self.seconds = sample


def sample_ice_rtt(connection: Any, rtt: RoundTrip) -> None:
    """Time each of the aioice ``connection``'s successful checks into ``rtt`` (a check retransmitted
    on the way reads long; the smallest sample wins)."""
    if getattr(connection, "_live_relay_rtt", None) is not None:
        return
    connection._live_relay_rtt = rtt
    check_start = connection.check_start

    async def timed(pair: Any) -> None:
        started = time.monotonic()
        await check_start(pair)
        if getattr(pair.state, "name", "") == "SUCCEEDED":
            rtt.add(time.monotonic() - started)

    connection.check_start = timed
    request_received = connection.request_received

    def first_request(message: Any, addr: Any, protocol: Any) -> None:
        # The answerer's first sample, before any check of its own has come back: from its answer leaving
        # to the offerer's first check arriving (a round trip, and the offerer's moment to apply it).
        answered = getattr(connection, "_live_relay_answered", None)
        if answered is not None:
            connection._live_relay_answered = None
            rtt.add(time.monotonic() - answered)
        request_received(message, addr, protocol)

    connection.request_received = first_request


def answer_sent(connection: Any) -> None:
    """The answer carrying ``connection``'s credentials just left: time the offerer's first check from now."""
    connection._live_relay_answered = time.monotonic()


def set_stun_schedule(first: float = 0.05, tries: int = 8) -> None:
    """aioice's STUN retransmissions: the first after ``first`` seconds, doubling, ``tries`` in all
    (50 ms .. 6.4 s: a check gives up after about 12.8 s). A module setting of aioice's, so it holds for
    every connection of the process (TURN's transactions too, which coturn answers idempotently)."""
    import aioice.stun

    aioice.stun.RETRY_RTO = first
    aioice.stun.RETRY_MAX = tries


class HandshakeRepair:
    """Stands between one DTLS transport and its ICE transport (their ``_send``/``_recv``) while the
    handshake runs, and for the repeats that come after it; see the module's docstring for what it does.
    Counters say how often each repair happened."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], receive: Callable[[], Awaitable[bytes]],
                 handshaking: Callable[[], bool], rtt: RoundTrip) -> None:
        self._send, self._receive, self._handshaking = send, receive, handshaking
        self.rtt = rtt
        self._flight: list[bytes] = []  # our datagrams since the peer last sent something new
        self._flight_sent = 0.0  # when its first datagram went
        self._resent = 0  # how often it was sent again
        self._last: list[bytes] = []  # our previous complete flight (what a repeat of the peer's asks for)
        self._seen: set[tuple[tuple[int, ...], ...]] = set()  # the peer's handshake datagrams so far
        self._early: deque[bytes] = deque()
        self._reacted_at = 0.0
        self.resends_timer = 0
        self.resends_reaction = 0
        self.early_srtp = 0

    async def send(self, data: bytes) -> None:
        if is_dtls(data) and self._handshaking():
            if not self._flight:
                self._flight_sent, self._resent = time.monotonic(), 0
            self._flight.append(data)
        await self._send(data)

    async def receive(self) -> bytes:
        if not self._handshaking():
            return await self._after_handshake()
        while True:
            data = await self._next()
            if not is_dtls(data):
                if is_srtp(data) and self._handshaking():
                    await self._peer_is_done(data)
                    continue
                if is_srtp(data) and self._seen:
                    self._seen.clear()  # the peer finished too: nothing of the handshake will come again
                    self._last = []
                return data
            key = flight_key(data)
            if key in self._seen:  # the peer sent a datagram again: ours did not reach it; answer at once
                await self._resend(self._flight or self._last, reaction=True)
                continue
            if not self._handshaking():
                return data  # after the handshake: an alert, or what OpenSSL wants to see
            if len(self._seen) < MAX_SEEN:
                self._seen.add(key)
            if self._flight:
                if not self._resent:  # an exchange not blurred by resends times the round trip (Karn)
                    self.rtt.add(time.monotonic() - self._flight_sent)
                self._last = self._flight
                self._flight = []  # the peer answered: our next datagrams are a new flight
            return data

    async def _after_handshake(self) -> bytes:
        """Every datagram once the handshake is done (the hot path: a publisher's every packet): the SRTP kept
        meanwhile first, then straight from the transport, only a repeat of the peer's last flight answered."""
        if self._early:
            return self._early.popleft()
        while True:
            data: bytes = await self._receive()
            if self._seen:
                if is_dtls(data) and flight_key(data) in self._seen:
                    await self._resend(self._flight or self._last, reaction=True)  # it lacks our last flight
                    continue
                if is_srtp(data):
                    self._seen.clear()  # the peer finished too: nothing of the handshake will come again
                    self._last = []
            return data

    async def _next(self) -> bytes:
        """The next datagram; while our flight waits for an answer, it is sent again when none came in
        time (only the peer's handshake datagrams count as an answer, not its media)."""
        pending = asyncio.ensure_future(self._receive())
        try:
            while self._flight and self._handshaking() and self._resent < MAX_RESENDS:
                due = self._flight_sent + sum(resend_delay(self.rtt.seconds, n) for n in range(self._resent + 1))
                # Wake at least every 25 ms: a round trip measured meanwhile moves the deadline closer.
                done, _ = await asyncio.wait({pending}, timeout=max(0.0, min(due - time.monotonic(), 0.025)))
                if done:
                    break
                if time.monotonic() >= due:
                    self._resent += 1
                    self.resends_timer += 1
                    await self._resend(self._flight, reaction=False)
            data: bytes = await pending
        except BaseException:
            pending.cancel()
            raise
        return data

    async def _peer_is_done(self, data: bytes) -> None:
        """SRTP while we still handshake: kept for later, and our flight sent again (at most once per
        round trip) so the peer repeats the last flight we are missing."""
        if len(self._early) < MAX_EARLY_SRTP:
            self._early.append(data)
            self.early_srtp += 1
        now = time.monotonic()
        if now - self._reacted_at >= (self.rtt.seconds or DEFAULT_RESEND):
            self._reacted_at = now
            await self._resend(self._flight or self._last, reaction=True)

    async def _resend(self, datagrams: list[bytes], reaction: bool) -> None:
        if reaction and datagrams:
            self.resends_reaction += 1
        for data in list(datagrams):
            try:
                await self._send(data)
            except ConnectionError:
                return  # closed meanwhile: nothing left to repair
