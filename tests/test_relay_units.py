"""The relay's parts on their own: the adapter's marker-bit jitter buffer, keyframe detection, and the
packet down-track's rewriting (continuous numbering across its keyframe gate and a publisher restart, RTX
from its history, sender report figures) and bounds (a full subscriber loses packets, nobody else does)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from aiortc.rtp import RtpPacket

from relay.tracks import KEPT_KEYFRAME_AGE, DownTrack, PublishedTrack
from rtc.adapter import SendParameters
from rtc.codecs import is_keyframe
from rtc.jitter import JitterBuffers, MarkerJitterBuffer


def packet(seq: int, ts: int, marker: bool, data: bytes = b"x") -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts, ssrc=1234)
    p.marker = 1 if marker else 0
    p._data = data  # what the receiver's depayloader sets
    return p


def frames_of(packets: list[RtpPacket]) -> tuple[list[tuple[int, bytes, bool]], int]:
    out: list[tuple[int, bytes, bool]] = []
    buf = MarkerJitterBuffer(True, lambda f, pt, ssrc: out.append((f.timestamp, f.data, f.after_gap)), window=64)
    plis = sum(buf.add(p)[0] for p in packets)
    return out, plis


def stream(frames: int, packets_per_frame: int = 3, first_seq: int = 100) -> list[RtpPacket]:
    out = []
    seq = first_seq
    for f in range(frames):
        for i in range(packets_per_frame):
            out.append(packet(seq, 3000 * f, i == packets_per_frame - 1, bytes([f, i])))
            seq += 1
    return out


def test_frames_are_released_on_their_marker_packet():
    packets = stream(4)
    out: list = []
    buf = MarkerJitterBuffer(True, lambda f, pt, ssrc: out.append(f.timestamp))
    released_after = []
    for p in packets:
        buf.add(p)
        released_after.append(len(out))
    # The first frame has no known start (we may have joined mid-frame), so it is skipped; every later
    # frame comes out the moment its last (marker) packet arrives, not when the next frame starts.
    assert out == [3000, 6000, 9000]
    assert released_after[5] == 1 and released_after[8] == 2 and released_after[11] == 3


def test_each_ssrc_is_assembled_apart_and_only_the_newest_eight_are_kept():
    out: list = []
    made: list = []

    def make() -> MarkerJitterBuffer:
        made.append(1)
        return MarkerJitterBuffer(True, lambda f, pt, ssrc: out.append((ssrc, f.timestamp)))

    buffers = JitterBuffers(make)
    made.clear()  # (one made to read its capacity)
    a, b = stream(3), stream(3, first_seq=9000)
    for p in b:
        p.ssrc = 5678
    for pa, pb in zip(a, b, strict=True):  # two layers' packets interleaved, each its own sequence numbers
        buffers.add(pa)
        buffers.add(pb)
    assert sorted(out) == [(1234, 3000), (1234, 6000), (5678, 3000), (5678, 6000)] and len(made) == 2
    for ssrc in range(20):  # a stream of new SSRCs (a hostile publisher): at most eight buffers kept
        q = packet(1, 0, True)
        q.ssrc = 10_000 + ssrc
        buffers.add(q)
    assert len(buffers._buffers) == JitterBuffers.MAX_STREAMS


def test_a_lower_simulcast_layer_is_assembled_only_while_something_observes_it():
    track = PublishedTrack("video", "t", "p", lambda layer: None, layers=3)
    assert track.wants_frames(2) and not track.wants_frames(0) and not track.wants_frames(7)
    seen: list = []
    track.layer_observers[0] = [lambda t, frame, broken: seen.append(("low", frame.timestamp))]
    track.observers.append(lambda t, frame, broken: seen.append(("top", frame.timestamp)))
    assert track.wants_frames(0) and not track.wants_frames(1)
    track.on_frame("VP8", 90000, b"\x00\x00\x00", 10, False, source=0)
    track.on_frame("VP8", 90000, b"\x00\x00\x00", 20, False, source=2)
    track.on_frame("VP8", 90000, b"\x00\x00\x00", 30, False, source=1)  # nobody takes it: dropped
    assert seen == [("low", 10), ("top", 20)] and track.frames_in == 1  # the counts are the top layer's


def test_reordered_and_retransmitted_packets_complete_frames_in_order():
    packets = stream(5)
    shuffled = [*packets[:4], packets[5], packets[4], *packets[6:9], *packets[10:], packets[9]]
    out, plis = frames_of(shuffled)
    assert [ts for ts, _, _ in out] == [3000, 6000, 9000, 12000]
    assert out[0][1] == bytes([1, 0, 1, 1, 1, 2])  # packets joined in sequence order
    assert plis == 0


def test_sequence_numbers_wrap_around():
    out, _ = frames_of(stream(6, first_seq=65530))
    assert [ts for ts, _, _ in out] == [3000, 6000, 9000, 12000, 15000]


def test_a_loss_that_never_recovers_skips_ahead_and_asks_for_a_keyframe():
    packets = stream(40)
    lost = packets[:7] + packets[8:]  # frame 2 loses its middle packet for good
    out, plis = frames_of(lost)
    timestamps = [ts for ts, _, _ in out]
    assert 6000 not in timestamps and timestamps[0] == 3000
    assert plis == 1
    after = [gap for ts, _, gap in out if ts > 6000]
    assert after[0] is True and not any(after[1:])  # the first frame after the hole is flagged


def test_audio_packets_pass_straight_through():
    out: list = []
    buf = MarkerJitterBuffer(False, lambda f, pt, ssrc: out.append(f.data))
    for i in (1, 3, 2):
        buf.add(packet(i, 960 * i, True, bytes([i])))
    assert out == [b"\x01", b"\x03", b"\x02"]


def test_keyframe_detection():
    assert is_keyframe("VP8", bytes([0x10, 0x02, 0x00]))  # P bit clear: key frame
    assert not is_keyframe("VP8", bytes([0x11, 0x02, 0x00]))
    assert is_keyframe("H264", b"\x00\x00\x00\x01\x67rest\x00\x00\x01\x65slice")
    assert not is_keyframe("H264", b"\x00\x00\x00\x01\x41slice")
    assert is_keyframe("opus", b"\xfc")


class Wire:
    """A down-track's output as a subscriber would read it: every packet parsed back from its bytes."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.packets: list[RtpPacket] = []
        self.lead: RtpPacket | None = None  # the padding-only packet a new subscriber's stream opens with

    @property
    def ready(self) -> bool:
        return self.accept

    def write(self, data: bytes) -> bool:
        if self.accept:
            packet = RtpPacket.parse(data)
            if not self.packets and self.lead is None and not packet.payload and packet.padding_size:
                self.lead = packet
            else:
                self.packets.append(packet)
        return self.accept


PARAMS = SendParameters(ssrc=0xABCD, rtx_ssrc=0xBCDE, payload_type=100, rtx_payload_type=101, mid="1",
                        mid_id=None, abs_send_time_id=None)


def bound(track: PublishedTrack) -> tuple[DownTrack, Wire]:
    """A new down-track of ``track`` sending to a fresh wire."""
    down, wire = track.add_down_track(), Wire()
    down.bind(PARAMS, wire, lambda *a: None)
    return down, wire


def vp8(pid: int, key: bool, start: bool = True) -> bytes:
    """A VP8 RTP payload: descriptor with a 15-bit picture id, then (on a frame's first packet) the frame tag."""
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x80 | pid >> 8, pid & 0xFF])
    return descriptor + (bytes([0x10 if key else 0x11, 0, 0]) if start else b"\x07\x07")


def send_frames(track: PublishedTrack, first_frame: int, frames: int, *, ssrc: int = 1234, seq0: int = 100,
                ts0: int = 0, pid0: int = 0, keys: tuple[int, ...] = (), per_frame: int = 2) -> None:
    for f in range(first_frame, first_frame + frames):
        for i in range(per_frame):
            p = RtpPacket(payload_type=96, sequence_number=(seq0 + f * per_frame + i) & 0xFFFF,
                          timestamp=(ts0 + 3000 * f) & 0xFFFFFFFF, ssrc=ssrc)
            p.marker = 1 if i == per_frame - 1 else 0
            p.payload = vp8((pid0 + f) & 0x7FFF, f in keys, start=i == 0)
            track.on_packet("VP8", 90000, p)


def picture_id(packet: RtpPacket) -> int:
    return (packet.payload[2] & 0x7F) << 8 | packet.payload[3]


def assert_continuous(packets: list[RtpPacket]) -> None:
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs
    frames = [p for p in packets if p.payload and p.payload[0] & 0x10]  # padding-only packets carry none
    stamps = [p.timestamp for p in frames]
    assert all(0 < (b - a) & 0xFFFFFFFF < 90000 for a, b in itertools.pairwise(stamps)), stamps
    pids = [picture_id(p) for p in frames]
    assert all((b - a) & 0x7FFF == 1 for a, b in itertools.pairwise(pids)), pids
    assert {p.ssrc for p in packets} == {PARAMS.ssrc} and {p.payload_type for p in packets} == {100}


async def test_a_down_track_starts_at_a_keyframe_and_rewrites_every_header():
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    send_frames(track, 0, 3)  # no keyframe yet: nothing leaves
    assert wire.packets == [] and down.waiting_keyframe
    send_frames(track, 3, 5, keys=(3,))
    assert len(wire.packets) == 10 and wire.packets[0].payload[4] == 0x10  # the keyframe first
    # ... right after a padding-only packet with its timestamp and the sequence number before it: the
    # subscriber sees the keyframe's first packet missing, if it is, and asks for it.
    assert wire.lead is not None and wire.lead.timestamp == wire.packets[0].timestamp
    assert (wire.packets[0].sequence_number - wire.lead.sequence_number) & 0xFFFF == 1
    assert_continuous(wire.packets)
    assert [p.marker for p in wire.packets[:2]] == [0, 1]
    assert wire.packets[0].payload[4:] == vp8(3, True)[4:]  # the payload itself is the publisher's
    track.close()


async def test_numbering_stays_continuous_across_the_keyframe_gate_and_a_publisher_restart():
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    send_frames(track, 0, 4, keys=(0,))
    track.set_muted(True)
    send_frames(track, 4, 3)  # muted: nothing
    track.set_muted(False)
    send_frames(track, 7, 3)  # the gate: deltas wait for a keyframe
    send_frames(track, 10, 3, keys=(10,))
    # The publisher reconnects: new SSRC, sequence numbers, timestamps and picture ids.
    send_frames(track, 0, 2, ssrc=999, seq0=60000, ts0=123456789, pid0=32000)
    send_frames(track, 2, 4, ssrc=999, seq0=60000, ts0=123456789, pid0=32000, keys=(2,))
    assert len(wire.packets) == 2 * (4 + 3 + 4)
    assert_continuous(wire.packets)
    assert down.restarts == 3
    track.close()


async def test_a_keyframe_whose_first_packet_came_late_still_reaches_a_new_subscriber_whole():
    """The keyframe's first packet is lost on the publisher's link and repaired after its other packets
    arrived: the waiting down-track opens on the repair and then gets the packets it skipped, in order."""
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    send_frames(track, 0, 2)  # deltas: the gate stays shut
    packets = []
    for i in range(3):  # a keyframe in 3 packets at frame 2 (seq 106-108), then a delta frame (109-111)
        p = RtpPacket(payload_type=96, sequence_number=106 + i, timestamp=6000, ssrc=1234)
        p.marker = 1 if i == 2 else 0
        p.payload = vp8(2, True, start=i == 0)
        packets.append(p)
    for packet in packets[1:]:  # its first packet is lost...
        track.on_packet("VP8", 90000, packet)
    send_frames(track, 3, 1, seq0=100, per_frame=3)
    assert wire.packets == [] and down.waiting_keyframe
    track.on_packet("VP8", 90000, packets[0])  # ...and comes as a repair after the rest
    assert [p.timestamp for p in wire.packets[:3]] == [wire.packets[0].timestamp] * 3  # the keyframe, whole
    assert [p.marker for p in wire.packets[:3]] == [0, 0, 1] and len(wire.packets) == 6
    assert_continuous(wire.packets)
    send_frames(track, 4, 2, seq0=100, per_frame=3)  # and on as usual
    assert len(wire.packets) == 12
    assert_continuous(wire.packets)
    track.close()


async def test_nacks_are_answered_as_rtx_from_the_down_tracks_own_history():
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    send_frames(track, 0, 3, keys=(0,))
    lost = wire.packets[3]
    down.retransmit(lost.sequence_number)
    down.retransmit((lost.sequence_number + 1000) & 0xFFFF)  # never sent: nothing to answer with
    rtx = wire.packets[-1]
    assert len(wire.packets) == 7 and down.retransmitted == 1
    assert rtx.payload_type == 101 and rtx.ssrc == PARAMS.rtx_ssrc
    assert int.from_bytes(rtx.payload[:2], "big") == lost.sequence_number and rtx.payload[2:] == lost.payload
    track.close()


async def test_a_late_retransmission_from_before_a_restart_is_not_forwarded():
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    _down, wire = bound(track)
    send_frames(track, 5, 2, keys=(5,))
    send_frames(track, 4, 1)  # frame 4 repaired upstream, arriving late: older than where we started
    assert len(wire.packets) == 4
    track.close()


async def test_a_packet_that_comes_twice_is_forwarded_once():
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    _down, wire = bound(track)
    send_frames(track, 0, 2, keys=(0,))
    send_frames(track, 1, 1)  # frame 1 again: a retransmission the publisher sent although both came
    assert len(wire.packets) == 4
    track.close()


async def test_a_full_subscriber_loses_packets_without_touching_the_others():
    plis = []
    track = PublishedTrack("video", "t", "p", lambda *_: plis.append(1), keyframe_interval=0.05)
    slow, fast = track.add_down_track(), track.add_down_track()
    slow_wire, fast_wire = Wire(), Wire()
    slow.bind(PARAMS, slow_wire, lambda *a: None)
    fast.bind(PARAMS, fast_wire, lambda *a: None)
    send_frames(track, 0, 3, keys=(0,))
    slow_wire.accept = False  # its socket is full
    send_frames(track, 3, 5)
    slow_wire.accept = True
    send_frames(track, 8, 2)
    assert len(fast_wire.packets) == 20 and slow.packets_dropped == 10
    assert_continuous(fast_wire.packets)
    # The slow one lost what did not fit, as on a lossy link: a gap it can NACK, filled from history.
    gap = (slow_wire.packets[6].sequence_number - slow_wire.packets[5].sequence_number) & 0xFFFF
    assert gap == 11
    slow.retransmit((slow_wire.packets[5].sequence_number + 1) & 0xFFFF)
    assert slow_wire.packets[-1].payload_type == 101
    track.close()
    assert slow.readyState == "ended" and fast.readyState == "ended"


async def test_sender_reports_pair_each_frames_timestamp_with_the_time_it_came():
    reports: list[tuple[int, int, int, int]] = []
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = track.add_down_track(), Wire()
    down.bind(PARAMS, wire, lambda *a: reports.append(a))
    send_frames(track, 0, 3, keys=(0,))
    assert [r[1] for r in reports] == [wire.packets[i].timestamp for i in (0, 2, 4)]
    assert [r[2] for r in reports] == [1, 3, 5]  # packets sent when the frame's first packet left
    ntp_seconds = reports[-1][0] / (1 << 32) - 2208988800
    assert abs(ntp_seconds - time.time()) < 5
    track.close()


def test_codec_frame_starts_let_the_very_first_frame_through():
    from rtc.codecs import packet_starts_frame

    assert packet_starts_frame("VP8", bytes([0x90, 0x80, 0x01]))  # S bit, partition 0
    assert not packet_starts_frame("VP8", bytes([0x80, 0x80, 0x01]))  # continuation
    assert packet_starts_frame("H264", bytes([0x18, 0x00, 0x0A, 0x67]))  # STAP-A opening with SPS
    assert not packet_starts_frame("H264", bytes([0x7C, 0x05]))  # FU-A fragment
    out: list = []
    buf = MarkerJitterBuffer(True, lambda f, pt, ssrc: out.append(f.timestamp),
                             starts_frame=lambda p: p.sequence_number == 100)
    for p in stream(2):
        buf.add(p)
    assert out == [0, 3000]  # without codec knowledge the first frame (ts 0) would be skipped


async def test_keyframe_requests_coalesce_while_one_is_on_its_way():
    plis = []
    track = PublishedTrack("video", "t", "p", lambda *_: plis.append(1), keyframe_interval=0.01)
    for _ in range(10):
        track.add_down_track()  # ten joiners at once
        await asyncio.sleep(0.02)
    assert len(plis) == 1  # the keyframe asked for first serves them all
    send_frames(track, 0, 1, keys=(0,))  # it arrives
    track.add_down_track()
    await asyncio.sleep(0.02)
    assert len(plis) == 2  # a later joiner asks again, at once
    track.close()


async def test_a_waiting_subscriber_keeps_asking_when_a_keyframe_request_is_lost():
    plis = []
    track = PublishedTrack("video", "t", "p", lambda *_: plis.append(1), keyframe_interval=0.01, keyframe_timeout=0.1)
    down = track.add_down_track()
    await asyncio.sleep(0.02)
    assert len(plis) == 1  # asked once; suppose the publisher ignores it
    down.bind(PARAMS, Wire(), lambda *a: None)
    for n in range(1, 8):  # delta frames keep coming, no keyframe
        send_frames(track, n, 1)
        await asyncio.sleep(0.03)
    assert len(plis) >= 2 and down.waiting_keyframe  # asked again once the first request timed out
    track.close()


def test_red_payload_carries_earlier_packets_before_the_primary():
    from relay.packets import red_payload

    data = red_payload(111, b"now", 2880, [(1920, b"two-ago"), (2880, b"same-time"), (960, b"x" * 2000)])
    # One redundant block (offset 960, length 7), then the primary's header; the block with the same
    # timestamp and the one too long for 10 bits are left out.
    assert data[0] == 0x80 | 111 and int.from_bytes(data[1:4], "big") == (960 << 10 | 7)
    assert data[4] == 111 and data[5:] == b"two-ago" + b"now"


async def test_audio_goes_out_in_red_with_more_redundancy_as_the_subscriber_reports_loss():
    from relay.link import SubscriberLink

    track = PublishedTrack("audio", "a", "p", lambda *_: None)
    link = SubscriberLink()
    down, wire = track.add_down_track(link), Wire()
    down.bind(SendParameters(ssrc=1, rtx_ssrc=2, payload_type=111, rtx_payload_type=None, mid="0", mid_id=None,
                             abs_send_time_id=None, red_payload_type=63), wire, lambda *a: None)

    def send(n: int) -> None:
        for _ in range(n):
            p = RtpPacket(payload_type=111, sequence_number=len(wire.packets) + 1, timestamp=960 * len(wire.packets),
                          ssrc=9)
            p.payload = bytes([len(wire.packets)]) * 20
            track.on_packet("opus", 48000, p)

    def redundant_blocks(packet: RtpPacket) -> int:
        blocks = 0
        while packet.payload[blocks * 4] & 0x80:
            blocks += 1
        return blocks

    send(4)
    assert [p.payload_type for p in wire.packets] == [63] * 4
    assert [redundant_blocks(p) for p in wire.packets] == [0, 1, 1, 1]  # a clean link: one earlier packet
    link.on_receiver_report(0.25, 100, 1.0, 20.0)
    send(3)
    assert [redundant_blocks(p) for p in wire.packets[-3:]] == [3, 3, 3]
    last = wire.packets[-1].payload
    assert last[3 * 4] == 111 and last.endswith(bytes([6]) * 20)  # the primary comes last, as it came
    assert link.retransmission_copies == 3
    track.close()


class ChooserClock:
    """Drives a LayerChooser as the adaptation timer does, twice a second, on a clock of the test's own."""

    RATES = (150e3, 350e3, 1.2e6)

    def __init__(self, send_side: bool = False) -> None:
        from relay.chooser import LayerChooser
        from relay.link import SubscriberLink

        self.link = SubscriberLink()
        if send_side:
            self.link.estimate_on_send_side()
        self.chooser = LayerChooser(self.link)
        self.chooser.start(2)
        self.now = 0.0

    def step(self, sending: float, estimate: int | None = None, loss: float | None = None, n: int = 1) -> int | None:
        layer = self.chooser.current
        for _ in range(n):
            self.now += 0.5
            if estimate is not None:
                self.link.on_estimate(estimate, now=self.now)
            if loss is not None:
                if self.link.send_side is not None:  # (its loss is what transport-cc feedback says)
                    self.link.send_side.loss = loss
                    self.link.nack_loss(0, now=self.now)
                else:
                    self.link.on_receiver_report(loss, 0, 1.0, 10.0, now=self.now)
            self.link.sending_bps = sending
            layer = self.chooser.choose(self.RATES, sending, now=self.now)
        return layer


def test_a_layer_chooser_goes_down_when_the_estimate_falls_and_probes_its_way_back_up():
    c = ChooserClock()
    assert c.step(1.3e6, estimate=1_500_000, n=4) == 2
    # A low estimate that is still rising (a receiver ramping up) is not congestion: the layer stays.
    assert c.step(1.3e6, estimate=1_600_000) == 2
    # The estimate falls (over-use): down at once to the best layer that fits.
    assert c.step(1.3e6, estimate=420_000) == 1
    assert c.step(400e3, estimate=200_000) == 0
    assert c.chooser.probe_bps == 0
    # Clean and stable: a probe pads up to the next layer's bitrate, then the layer goes up.
    probes, layer = [], 0
    for _ in range(20):
        layer = c.step(200e3, estimate=200_000, loss=0.0)
        probes.append(c.chooser.probe_bps)
        if layer == 1:
            break
    assert layer == 1 and max(probes) > 100_000
    assert c.chooser.switches["down"] == 2 and c.chooser.switches["up"] == 1


@pytest.mark.parametrize(("send_side", "probe_s", "up_hold_s", "longest_wait_s"), [
    (False, 1.5, 2.0, 8.0),  # REMB: a probe's harm shows only as a fall over a second or more
    (True, 1.0, 1.0, 4.0),  # the relay's own estimate sees the queue within a feedback interval
])
def test_probes_are_shorter_and_come_back_sooner_where_the_relay_estimates_the_link(send_side, probe_s, up_hold_s,
                                                                                   longest_wait_s):
    c = ChooserClock(send_side)
    c.step(1.3e6, estimate=1_500_000, n=2)
    c.step(1.3e6, estimate=420_000)
    c.step(400e3, estimate=200_000)  # down to layer 0, congested for a while
    for _ in range(20):
        c.step(200e3, estimate=200_000, loss=0.0)
        if c.chooser.probe_bps:
            break
    started = c.now
    while c.chooser.current == 0 and c.now - started < 5:
        c.step(200e3, estimate=200_000, loss=0.0)
    assert c.chooser.current == 1 and c.now - started == probe_s  # on the 0.5 s grid of the adaptation timer
    assert c.chooser.memory.next_probe - c.now == up_hold_s
    for _ in range(30):  # every probe meets loss: the waits double up to the longest
        c.step(400e3, estimate=400_000, loss=0.2 if c.chooser.probe_bps else 0.0)
    assert c.chooser.memory.backoff == longest_wait_s


def test_a_failed_probe_backs_off_and_a_link_that_carries_nothing_pauses_video():
    c = ChooserClock()
    c.step(1.3e6, estimate=1_500_000, n=2)
    c.step(1.3e6, estimate=200_000)  # fell: congested
    assert c.chooser.current == 0
    c.step(150e3, estimate=100_000, n=6)  # even the lowest layer does not fit, and it lasts: no video
    assert c.chooser.current is None and c.chooser.switches["pause"] == 1
    # A probe that meets loss fails, and the next one waits longer.
    c.step(20e3, estimate=100_000, loss=0.0, n=12)
    first_wait = c.chooser.memory.backoff
    for _ in range(12):
        c.step(20e3, estimate=100_000, loss=0.2 if c.chooser.probe_bps else 0.0)
    assert c.chooser.memory.backoff > first_wait or c.chooser.current is None


def test_the_chooser_says_which_state_it_is_in():
    from relay.chooser import ChooserState

    c = ChooserClock()
    states = [c.chooser.state]
    c.step(1.3e6, estimate=1_500_000, n=2)
    states.append(c.chooser.state)  # on the top layer, nothing under way
    c.step(1.3e6, estimate=420_000)  # congested: down
    c.step(400e3, estimate=200_000)
    for _ in range(20):  # clean and stable: a probe starts
        c.step(200e3, estimate=200_000, loss=0.0)
        if c.chooser.state is ChooserState.PROBING:
            break
    states.append(c.chooser.state)
    c.step(200e3, estimate=200_000, loss=0.2)  # loss during the probe: it fails, the next one waits longer
    states.append(c.chooser.state)
    c.chooser.paused_by_subscriber = True
    c.step(200e3, estimate=200_000)
    states.append(c.chooser.state)
    assert states == [ChooserState.STEADY, ChooserState.STEADY, ChooserState.PROBING, ChooserState.BACKING_OFF,
                      ChooserState.PAUSED]


def test_a_subscribers_own_limit_and_pause_are_kept_whatever_its_link():
    c = ChooserClock()
    c.chooser.max_layer = 0
    assert c.step(1.3e6, estimate=5_000_000) == 0
    c.chooser.max_layer = None
    assert c.step(1.3e6, estimate=5_000_000) == 2  # raised: straight up, the estimate says it fits
    c.chooser.paused_by_subscriber = True
    assert c.step(1.3e6, estimate=5_000_000) is None


async def test_a_down_track_switches_layer_on_the_wanted_layers_keyframe_with_continuous_numbering():
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    track.set_layers(2)
    down, wire = track.add_down_track(layer=1), Wire()
    down.bind(PARAMS, wire, lambda *a: None)

    def both(first: int, frames: int, keys: tuple[int, ...] = ()) -> None:
        for f in range(first, first + frames):
            for layer, ssrc, seq0 in ((0, 500, 9000), (1, 600, 100)):
                p = RtpPacket(payload_type=96, sequence_number=seq0 + f, timestamp=3000 * f + layer * 77, ssrc=ssrc)
                p.marker = 1
                p.payload = vp8((layer * 1000 + f) & 0x7FFF, f in keys)
                track.on_packet("VP8", 90000, p, layer)

    both(0, 3, keys=(0,))
    assert len(wire.packets) == 3 and down.layer == 1
    down.set_target_layer(0)
    both(3, 2)  # no keyframe of layer 0 yet: layer 1 goes on meanwhile
    assert down.layer == 1 and len(wire.packets) == 5
    both(5, 3, keys=(5,))
    assert down.layer == 0 and len(wire.packets) == 8
    assert_continuous(wire.packets)
    assert wire.packets[-1].ssrc == PARAMS.ssrc
    assert picture_id(wire.packets[5]) == (picture_id(wire.packets[4]) + 1) & 0x7FFF
    down.set_target_layer(None)  # paused: nothing more, at once
    both(8, 2, keys=(8,))
    assert len(wire.packets) == 8
    track.close()


def vp8_temporal(pid: int, tid: int, tl0: int, key: bool, start: bool = True) -> bytes:
    """A VP8 payload whose descriptor has a picture id, TL0PICIDX and TID (as Chromium's simulcast sends)."""
    descriptor = bytes([0x90 if start else 0x80, 0xE0, 0x80 | pid >> 8, pid & 0xFF, tl0 & 0xFF, tid << 6])
    return descriptor + (bytes([0x10 if key else 0x11, 0, 0]) if start else b"\x07\x07")


async def test_temporal_layers_above_the_cap_go_out_as_padding_and_picture_ids_stay_contiguous():
    from rtc.codecs import vp8_descriptor

    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    pattern = (0, 2, 1, 2)  # L1T3: TID of frame f is pattern[f % 4]; TL0PICIDX counts the TID 0 frames

    def send(first: int, frames: int, keys: tuple[int, ...] = ()) -> None:
        for f in range(first, first + frames):
            for i in range(2):
                p = RtpPacket(payload_type=96, sequence_number=100 + 2 * f + i, timestamp=3000 * f, ssrc=7)
                p.marker = i
                p.payload = vp8_temporal(f, pattern[f % 4], f // 4, f in keys, start=i == 0)
                track.on_packet("VP8", 90000, p)

    send(0, 4, keys=(0,))
    assert track.layers[0].temporal_layers == 3 and vp8_descriptor(wire.packets[2].payload)[1] == 2
    down.set_target_temporal(0)
    send(4, 8)  # from here only TID 0 frames (4 and 8) keep their payload
    sent = wire.packets[8:]
    assert_continuous(wire.packets)  # padding keeps the sequence whole: nothing for the subscriber to NACK
    padding = [p for p in sent if p.padding_size]
    assert len(padding) == 12 and all(not p.payload for p in padding) and down.frames_thinned == 6
    kept = [picture_id(p) for p in sent if p.payload]
    assert kept == [4, 4, 5, 5]  # frames 4 and 8, numbered one after the other
    down.set_target_temporal(None)
    send(12, 4)  # back to all layers from the next base-layer frame (12) on
    assert [picture_id(p) for p in wire.packets[-8:]] == [6, 6, 7, 7, 8, 8, 9, 9]
    track.close()


def test_a_chooser_drops_the_frame_rate_before_it_drops_the_video():
    from relay.chooser import LayerChooser
    from relay.link import SubscriberLink

    link = SubscriberLink()
    chooser = LayerChooser(link)
    chooser.start(2)
    rates = (40e3, 70e3, 150e3, 350e3, 1.2e6)  # layer 0 at TID<=0, TID<=1, all; layers 1, 2
    spatial = (0, 0, 0, 1, 2)
    chooser.current = 4
    link.on_estimate(1_500_000, now=0.0)
    link.on_estimate(100_000, now=0.5)  # fell: congested, and only layer 0 at TID 0-1 fits
    assert chooser.choose(rates, 1.3e6, now=0.5, spatial=spatial) == 1
    chooser.max_layer = 0  # "low" still means the whole lowest layer when it fits
    link.on_estimate(5_000_000, now=10.0)
    assert chooser.choose(rates, 80e3, now=10.0, spatial=spatial) == 2


async def test_a_new_subscriber_starts_from_the_last_keyframe_still_at_hand():
    """A stream that just started (a call): the keyframe and what followed are still kept, so a subscriber
    that connects a moment later starts from them at once instead of waiting for the next keyframe."""
    track = PublishedTrack("video", "t", "p", lambda layer: None)
    send_frames(track, 0, 4, keys=(0,))  # nobody subscribed yet
    down, wire = bound(track)
    send_frames(track, 4, 1)  # the first packet it sees is a delta
    assert wire.packets[0].payload[4] == 0x10 and len(wire.packets) == 10  # the keyframe, then all since
    assert_continuous(wire.packets)
    # The past (frames 0-4: the fifth's first packet had come) is caught up at once: its frames a tick apart
    # (decoded and shown at once, not at their pace), the live frame after them at its own spacing (3000).
    send_frames(track, 5, 1)
    stamps = [p.timestamp for p in wire.packets if p.payload[0] & 0x10]
    assert [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)] == [1, 1, 1, 1, 3000], stamps
    assert down.caught_up == 1
    late = PublishedTrack("video", "t", "p", lambda layer: None)
    send_frames(late, 0, 600, keys=(0,))  # the keyframe is long gone from what is kept: wait for one
    down, wire = bound(late)
    send_frames(late, 80, 1)
    assert wire.packets == [] and down.waiting_keyframe
    gappy = PublishedTrack("video", "t", "p", lambda layer: None)
    send_frames(gappy, 0, 1, keys=(0,))
    send_frames(gappy, 2, 2)  # frame 1 never came: a keyframe with a hole after it is no start
    down, wire = bound(gappy)
    send_frames(gappy, 4, 1)
    assert wire.packets == [] and down.waiting_keyframe
    old = PublishedTrack("video", "t", "p", lambda layer: None)
    send_frames(old, 0, 4, keys=(0,))  # all kept, but by the time a subscriber comes it is the past
    epoch = old.layers[0].epoch
    assert old.since_keyframe(0, epoch) is not None
    assert old.since_keyframe(0, epoch, now=time.monotonic() + KEPT_KEYFRAME_AGE + 0.1) is None
    heavy = PublishedTrack("video", "t", "p", lambda layer: None)
    send_frames(heavy, 0, 1, keys=(0,))
    for f in range(1, 40):  # ~470 kB since the keyframe: more than a start may burst out at once
        p = RtpPacket(payload_type=96, sequence_number=101 + f, timestamp=3000 * f, ssrc=1234, marker=1,
                      payload=vp8(f, False) + bytes(12_000))
        heavy.on_packet("VP8", 90000, p)
    assert heavy.since_keyframe(0, heavy.layers[0].epoch) is None
    for t in (track, late, gappy, old, heavy):
        t.close()


def send_svc_pictures(track: PublishedTrack, first: int, pictures: int, *, keys: tuple[int, ...] = ()) -> None:
    """VP9 SVC as Chromium's L3T3_KEY sends it: each picture one packet per spatial layer (0, 1, 2), the RTP
    marker on the top layer's."""
    from tests.test_codecs import vp9_payload

    for n in range(first, first + pictures):
        for sid in range(3):
            p = RtpPacket(payload_type=98, sequence_number=(100 + 3 * n + sid) & 0xFFFF, timestamp=3000 * n,
                          ssrc=4321)
            p.marker = int(sid == 2)
            p.payload = vp9_payload(pid=n, sid=sid, inter=n not in keys)
            track.on_packet("VP9", 90000, p)


async def test_after_a_switch_down_an_svc_subscriber_s_nacks_for_the_layers_it_lost_are_not_answered():
    # Answering them (full-size top-layer packets) kept the congested link that made the switch congested:
    # in the lab, 79% loss at the lowest layer under a 400 kbit/s cap and a picture every few seconds.
    from tests.test_codecs import vp9_payload

    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    send_svc_pictures(track, 0, 2, keys=(0,))
    assert track.svc and down.layer == 2 and len(wire.packets) == 6
    top, lowest = wire.packets[5], wire.packets[3]  # picture 1's layer 2 and layer 0, as the subscriber got them
    down.set_target_layer(0)
    send_svc_pictures(track, 2, 1)  # from this picture on, layer 0 only (the others go as padding)
    assert down.layer == 0 and wire.packets[-3].payload == vp9_payload(pid=2, sid=0, inter=True)
    sent = len(wire.packets)
    down.retransmit(top.sequence_number)  # a layer it no longer gets: not repaired
    assert len(wire.packets) == sent and down.retransmitted == 0
    down.retransmit(lowest.sequence_number)  # the layer it decodes: repaired
    assert len(wire.packets) == sent + 1 and down.retransmitted == 1
    assert wire.packets[-1].payload[2:] == lowest.payload
    track.close()


@pytest.mark.parametrize(("per_tick", "ticks"), [(1250, 20), (500, 30), (3000, 10)])
async def test_a_probe_pads_at_the_rate_it_asks_for_not_a_packet_more_each_tick(per_tick, ticks):
    """Padding (RTX copies of the latest packets) goes out as asked over the ticks, within a packet: the
    copies that do not fit one tick's share wait for the next (sending until the share was reached sent a
    packet more each tick: a 200 kbit/s probe padded at ~400)."""
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down, wire = bound(track)
    for f in range(10):  # a keyframe, then deltas: 3 packets of ~1100 bytes a frame
        for i in range(3):
            p = RtpPacket(payload_type=96, sequence_number=100 + f * 3 + i, timestamp=3000 * f, ssrc=1234)
            p.marker = 1 if i == 2 else 0
            p.payload = vp8(f, f == 0, start=i == 0) + bytes(1100)
            track.on_packet("VP8", 90000, p)
    before = len(wire.packets)
    sent = sum(down.pad(per_tick) for _ in range(ticks))
    copies = wire.packets[before:]
    assert copies and all(p.payload_type == 101 for p in copies)
    assert per_tick * ticks - 1500 <= sent <= per_tick * ticks
    track.close()
