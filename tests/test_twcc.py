"""Transport-wide congestion control feedback (rtc/twcc.py): what is written reads back as it was recorded
(losses, reordering, wrap-around, large and negative gaps, long runs), within the wire's 250 µs ticks."""

from __future__ import annotations

import pytest

from rtc.twcc import DELTA_TICK_US, TransportFeedback, parse_feedback


def round_trip(arrivals: list[tuple[int, int]]) -> list[tuple[int, int | None]]:
    feedback = TransportFeedback()
    for seq, at in arrivals:
        feedback.record(seq, at)
    out: list[tuple[int, int | None]] = []
    for packet in feedback.build(1, 2):
        assert len(packet) % 4 == 0 and (int.from_bytes(packet[2:4], "big") + 1) * 4 == len(packet)
        media_ssrc, reported = parse_feedback(packet)
        assert media_ssrc == 2
        out += reported
    return out


def close(reported: list[tuple[int, int | None]], expected: dict[int, int | None]) -> bool:
    assert [seq for seq, _ in reported] == list(expected), (reported, expected)
    for seq, at in reported:
        want = expected[seq]
        if (at is None) != (want is None):
            return False
        if at is not None and want is not None and abs(at - want) > DELTA_TICK_US:
            return False
    return True


@pytest.mark.parametrize(("case", "arrivals", "expected"), [
    ("in order, 1 ms apart", [(s, 10_000_000 + s * 1000) for s in range(10)],
     {s: 10_000_000 + s * 1000 for s in range(10)}),
    ("two lost in the middle", [(0, 5_000_000), (1, 5_001_000), (4, 5_004_000)],
     {0: 5_000_000, 1: 5_001_000, 2: None, 3: None, 4: 5_004_000}),
    ("a gap over 64 ms: a large delta", [(0, 5_000_000), (1, 5_100_000)], {0: 5_000_000, 1: 5_100_000}),
    ("reordered: a negative delta", [(0, 5_000_000), (2, 5_002_000), (1, 5_003_000)],
     {0: 5_000_000, 1: 5_003_000, 2: 5_002_000}),
    ("across the 16-bit wrap", [(65534, 7_000_000), (65535, 7_001_000), (0, 7_002_000), (1, 7_003_000)],
     {65534: 7_000_000, 65535: 7_001_000, 0: 7_002_000, 1: 7_003_000}),
    ("a long run of losses: run-length chunks", [(0, 5_000_000), (300, 5_300_000)],
     {**{0: 5_000_000}, **dict.fromkeys(range(1, 300)), 300: 5_300_000}),
])
def test_feedback_reads_back_what_was_recorded(case, arrivals, expected):
    assert close(round_trip(arrivals), expected), case


def test_each_packet_is_reported_once_and_later_feedback_continues_the_sequence():
    feedback = TransportFeedback()
    for seq in range(5):
        feedback.record(seq, 1_000_000 + seq * 500)
    first = [p for packet in feedback.build(1, 2) for p in parse_feedback(packet)[1]]
    assert feedback.build(1, 2) == []  # nothing new, nothing sent
    feedback.record(7, 1_010_000)
    feedback.record(3, 1_011_000)  # a straggler from the reported range: too late, not reported again
    second = [p for packet in feedback.build(1, 2) for p in parse_feedback(packet)[1]]
    assert [s for s, _ in first] == [0, 1, 2, 3, 4]
    assert [s for s, _ in second] == [5, 6, 7] and second[0][1] is None and second[2][1] is not None


def test_a_flood_of_arrivals_without_feedback_is_bounded():
    feedback = TransportFeedback()
    for seq in range(20_000):
        feedback.record(seq & 0xFFFF, 1_000_000 + seq * 10)
    packets = feedback.build(1, 2)
    reported = [p for packet in packets for p in parse_feedback(packet)[1]]
    assert len(reported) <= 4096 and reported[-1][0] == (20_000 - 1) & 0xFFFF


# A 40-byte packet claiming 65535 packets in ten run-length chunks of "not received": a hostile viewer's
# way to make the server walk 65535 entries per packet, refused before it is read.
_AMPLIFIER = b"\x8f\xcd\x00\x09" + b"\x00" * 8 + b"\x00\x00\xff\xff" + b"\x00" * 4 + b"\x1f\xff" * 10


def test_numbers_that_jump_ahead_are_reported_at_most_a_flood_s_worth():
    feedback = TransportFeedback()
    feedback.record(0, 1_000_000)
    feedback.record(30_000, 1_001_000)  # a hostile publisher's jump: 29,999 "lost" in between
    reported = [p for packet in feedback.build(1, 2) for p in parse_feedback(packet)[1]]
    assert len(reported) <= 4096 and reported[-1] == (30_000, 1_001_000)


@pytest.mark.parametrize("data", [b"", b"\x8f\xcd\x00\x01" + b"\x00" * 4, b"\x81\xc8" + b"\x00" * 30,
                                  b"\x8f\xcd\x00\x04" + b"\x00" * 8 + b"\x00\x00\x00\x05" + b"\x00" * 4,
                                  _AMPLIFIER])
def test_malformed_feedback_is_refused(data):
    with pytest.raises(ValueError):
        parse_feedback(data)


def _rr(ssrc: int) -> bytes:
    """A receiver report with no report blocks (8 bytes)."""
    return bytes((0x80, 201)) + (1).to_bytes(2, "big") + ssrc.to_bytes(4, "big")


@pytest.mark.parametrize(("case", "parts", "feedback_at"), [
    ("feedback alone", ["fb"], [0]),
    ("a receiver report, then feedback", ["rr", "fb"], [1]),
    ("feedback between two reports", ["rr", "fb", "rr"], [1]),
    ("no feedback", ["rr", "rr"], []),
])
def test_transport_feedback_is_split_from_what_aiortc_reads(case, parts, feedback_at):
    from rtc.adapter import split_transport_feedback

    feedback = TransportFeedback()
    for seq in range(3):
        feedback.record(seq, 1_000_000 + seq * 700)
    [fb] = feedback.build(1, 2)
    pieces = [fb if part == "fb" else _rr(7 + i) for i, part in enumerate(parts)]
    found, rest = split_transport_feedback(b"".join(pieces))
    assert found == [pieces[i] for i in feedback_at], case
    assert rest == b"".join(p for i, p in enumerate(pieces) if i not in feedback_at), case


def test_a_datagram_cut_short_goes_to_aiortc_as_it_came():
    from rtc.adapter import split_transport_feedback

    cut = _rr(1) + bytes((0x8F, 205, 0, 9)) + b"\x00" * 8  # says 40 bytes, has 12
    found, rest = split_transport_feedback(cut)
    assert found == [] and rest == cut
