"""rtc.nack: a missing video packet is asked for at once, again every interval while it stays missing, at
most ``tries`` times, and never once it came; per SSRC. A clock of the test's own."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from rtc.nack import NacksPerSsrc, RepeatingNacks


def packet(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, ssrc=ssrc)


def test_a_missing_packet_is_asked_for_again_until_it_comes_or_the_tries_run_out():
    now = [0.0]
    nacks = RepeatingNacks(interval=0.15, tries=3, clock=lambda: now[0])
    asked = []
    for t, seq in [(0.00, 10), (0.01, 13), (0.05, 14), (0.17, 15), (0.18, 11), (0.35, 16), (0.52, 17), (0.70, 18)]:
        now[0] = t
        asked.append(sorted(nacks.missing) if nacks.add(packet(seq)) else [])
    assert asked == [
        [],  # the first packet: nothing to compare with
        [11, 12],  # a gap: asked at once
        [],  # not yet an interval since
        [11, 12],  # still missing: asked again
        [],  # 11 came
        [12],  # a third time
        [],  # tries used up: given up
        [],
    ]


def test_a_wrap_and_a_jump():
    now = [0.0]
    nacks = RepeatingNacks(clock=lambda: now[0])
    nacks.add(packet(65534))
    assert nacks.add(packet(1)) and nacks.missing == {65535, 0}  # across the wrap
    assert not nacks.add(packet(3000))  # a jump (a new stream): nothing behind it is worth asking for
    assert not nacks.add(packet(3001)) and nacks.missing == set()


def test_each_ssrc_has_its_own():
    nacks = NacksPerSsrc()
    nacks.add(packet(100, ssrc=1))
    nacks.add(packet(5000, ssrc=2))
    assert not nacks.add(packet(101, ssrc=1))  # layer 1's next packet: no gap, whatever layer 2 does
    assert nacks.add(packet(5002, ssrc=2)) and nacks.missing == {5001}
