"""Transport-wide congestion control feedback for what the relay receives (draft-holmer-rmcat-transport-
wide-cc-extensions-01): each packet's transport-wide sequence number and arrival time, reported back to
the sender every ``FEEDBACK_INTERVAL`` in RTCP transport feedback (RTPFB, FMT 15).

Why: a browser publishing to us estimates its uplink from this feedback (delay-based, with probes that
reach the link's rate within a second or two). With REMB alone, as aiortc answers, Chromium's estimate
grows ~8% a second from 300 kbit/s, and a host's top simulcast layer (1.5 Mbit/s) waits half a minute to
be sent at all. ``TransportFeedback`` keeps the arrivals and writes the packets; ``parse_feedback`` reads
them back (tests, and the relay's own send side later).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
FEEDBACK_INTERVAL = 0.05  # seconds between feedback packets while packets come (libwebrtc: 50-250 ms)
MAX_PENDING = 4096  # arrivals kept while no feedback goes out (a stalled loop): the oldest are dropped
MAX_STATUS_PER_PACKET = 1024  # packets one feedback packet reports at most
MAX_STATUS_READ = 4096  # packets a feedback packet we read may report (more is refused as malformed)

NOT_RECEIVED, SMALL_DELTA, LARGE_DELTA = 0, 1, 2
DELTA_TICK_US = 250
REFERENCE_TICK_US = 64_000


class TransportFeedback:
    """The arrivals not reported yet, and the feedback packets that report them."""

    def __init__(self) -> None:
        self._arrivals: dict[int, int] = {}  # unwrapped sequence number -> arrival (µs)
        self._last_unwrapped: int | None = None
        self._next_base: int | None = None  # the first sequence number the next feedback reports
        self._count = 0  # feedback packet count (8 bits on the wire)
        self.reported = 0

    def record(self, seq: int, arrival_us: int) -> None:
        """A packet with transport-wide sequence number ``seq`` (16 bits) arrived at ``arrival_us``."""
        if self._last_unwrapped is None:
            unwrapped = seq
        else:
            delta = (seq - self._last_unwrapped) & 0xFFFF
            unwrapped = self._last_unwrapped + (delta if delta < 0x8000 else delta - 0x10000)
        if self._last_unwrapped is None or unwrapped > self._last_unwrapped:
            self._last_unwrapped = unwrapped
        if self._next_base is not None and unwrapped < self._next_base:
            return  # reported already (as lost): too late to matter to the sender's estimate
        self._arrivals.setdefault(unwrapped, arrival_us)
        if len(self._arrivals) > MAX_PENDING:
            oldest = next(iter(self._arrivals))  # the first recorded (the oldest but for reordering)
            del self._arrivals[oldest]
            self._next_base = max(self._next_base or oldest, oldest + 1)

    def build(self, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """RTCP packets reporting every arrival recorded since the last call (none when nothing came)."""
        if not self._arrivals:
            return []
        arrivals, self._arrivals = self._arrivals, {}
        base = min(arrivals) if self._next_base is None else self._next_base
        last = max(arrivals)
        # A sender that jumps its numbers ahead (a hostile publisher) would have us report every number
        # in between as lost: at most MAX_PENDING of them, the latest.
        base = max(base, last - MAX_PENDING + 1)
        self._next_base = last + 1
        packets = []
        while base <= last:
            packet, base = self._one(arrivals, base, last, sender_ssrc, media_ssrc)
            packets.append(packet)
        return packets

    def _one(self, arrivals: dict[int, int], base: int, last: int, sender_ssrc: int,
             media_ssrc: int) -> tuple[bytes, int]:
        """One feedback packet from ``base`` on; returns it and where the next one starts."""
        first_arrival = next(arrivals[s] for s in range(base, last + 1) if s in arrivals)
        reference = first_arrival // REFERENCE_TICK_US
        previous = reference * REFERENCE_TICK_US
        symbols: list[int] = []
        deltas = bytearray()
        seq = base
        while seq <= last and len(symbols) < MAX_STATUS_PER_PACKET:
            arrival = arrivals.get(seq)
            if arrival is None:
                symbols.append(NOT_RECEIVED)
            else:
                ticks = round((arrival - previous) / DELTA_TICK_US)
                if 0 <= ticks <= 0xFF:
                    symbols.append(SMALL_DELTA)
                    deltas.append(ticks)
                elif -0x8000 <= ticks <= 0x7FFF:
                    symbols.append(LARGE_DELTA)
                    deltas += struct.pack("!h", ticks)
                else:
                    break  # too far from the one before: the next packet starts from a new reference
                previous += ticks * DELTA_TICK_US
            seq += 1
        body = struct.pack("!IIHHI", sender_ssrc, media_ssrc, base & 0xFFFF, len(symbols),
                           (reference & 0xFFFFFF) << 8 | self._count & 0xFF)
        body += b"".join(struct.pack("!H", chunk) for chunk in _chunks(symbols)) + bytes(deltas)
        padding = -len(body) % 4  # RTCP padding: the P bit, and the last octet counts the padding octets
        if padding:
            body += bytes(padding - 1) + bytes((padding,))
        self._count += 1
        self.reported += len(symbols)
        first = 0x80 | (0x20 if padding else 0) | 15
        return struct.pack("!BBH", first, 205, len(body) // 4) + body, seq


def _chunks(symbols: list[int]) -> Iterator[int]:
    """Packet status chunks: a run-length chunk for 7 or more equal symbols, else a two-bit status vector
    of up to 7 (the last one's unused places read as "not received" and lie past the status count)."""
    i = 0
    while i < len(symbols):
        run = 1
        while i + run < len(symbols) and symbols[i + run] == symbols[i] and run < 0x1FFF:
            run += 1
        if run >= 7:
            yield symbols[i] << 13 | run
            i += run
            continue
        vector = symbols[i:i + 7]
        chunk = 0xC000
        for place, symbol in enumerate(vector):
            chunk |= symbol << (12 - 2 * place)
        yield chunk
        i += len(vector)


def parse_feedback(data: bytes) -> tuple[int, list[tuple[int, int | None]]]:
    """A transport feedback packet's media SSRC and its packets: (sequence number, arrival in µs on the
    reference clock, or None when not received). Raises ValueError for a malformed packet."""
    if len(data) < 20 or data[0] & 0x1F != 15 or data[1] != 205:
        raise ValueError("not a transport feedback packet")
    data = data[:(int.from_bytes(data[2:4], "big") + 1) * 4]
    if data[0] & 0x20:  # padded: the last octet says how much
        data = data[:len(data) - data[-1]]
    _, media_ssrc, base, count, ref = struct.unpack_from("!IIHHI", data, 4)
    if count > MAX_STATUS_READ:
        # A run-length chunk says "8191 lost" in two bytes: a 24-byte packet could have us walk 65535
        # entries. A sender never has that many in flight between two feedbacks.
        raise ValueError("reports more packets than feedback ever covers")
    reference = ref >> 8
    if reference & 0x800000:
        reference -= 0x1000000
    i, symbols = 20, list[int]()
    while len(symbols) < count:
        if i + 2 > len(data):
            raise ValueError("status chunks cut short")
        (chunk,) = struct.unpack_from("!H", data, i)
        i += 2
        if not chunk & 0x8000:  # run length
            symbols += [chunk >> 13 & 0x3] * (chunk & 0x1FFF)
        elif chunk & 0x4000:  # two-bit vector
            symbols += [chunk >> (12 - 2 * k) & 0x3 for k in range(7)]
        else:  # one-bit vector
            symbols += [chunk >> (13 - k) & 0x1 for k in range(14)]
    at = reference * REFERENCE_TICK_US
    out: list[tuple[int, int | None]] = []
    for k, symbol in enumerate(symbols[:count]):
        seq = (base + k) & 0xFFFF
        if symbol == NOT_RECEIVED:
            out.append((seq, None))
            continue
        width = 1 if symbol == SMALL_DELTA else 2
        if i + width > len(data):
            raise ValueError("receive deltas cut short")
        ticks = data[i] if width == 1 else struct.unpack_from("!h", data, i)[0]
        i += width
        at += ticks * DELTA_TICK_US
        out.append((seq, at))
    return media_ssrc, out
