"""The send-side estimator (relay/bwe.py) on simulated paths: a bottleneck of a given rate with a queue
of a given depth (a tail-drop policer when shallow), feedback every 50 ms as a browser sends it. The
paths are a model for the estimator's decisions; the weak-network lab (tests/test_weaknet.py) runs the
real thing through Chromium and nft/tbf."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from relay.bwe import MIN_BPS, SendSideEstimator, SentPackets, Usage, slope

PACKET = 1200


def simulate(send_bps: float | Callable[[float], float], link_bps: float, queue_ms: float, seconds: float,
             jitter_ms: float = 0.0, seed: int = 1, est: SendSideEstimator | None = None, start_ms: float = 0.0,
             ) -> tuple[SendSideEstimator, list[tuple[float, int | None, Usage]]]:
    """Packets of ``PACKET`` bytes at ``send_bps`` through the bottleneck from ``start_ms`` on; returns
    the estimator and its (time, estimate, usage) after each feedback."""
    rng = random.Random(seed)
    est = est or SendSideEstimator()
    rate_at = send_bps if callable(send_bps) else (lambda _t: send_bps)
    t = free_at = start_ms
    pending: list[tuple[int, float | None, float]] = []
    next_feedback, trace = start_ms + 50.0, []
    while t < start_ms + seconds * 1000:
        seq = est.sent.add(PACKET, t)
        start = max(t, free_at)
        if start - t > queue_ms:
            pending.append((seq, None, t))  # the queue is full: dropped
        else:
            free_at = start + PACKET * 8 / link_bps * 1000
            pending.append((seq, free_at + 20 + rng.uniform(0, jitter_ms), t))
        t += PACKET * 8 / rate_at(t) * 1000
        while t >= next_feedback:
            due = [(s, a, sent) for s, a, sent in pending if (a if a is not None else sent + 20) <= next_feedback]
            pending = pending[len(due):] if due == pending[:len(due)] else [p for p in pending if p not in due]
            if due:
                est.on_feedback([(s, None if a is None else int(a * 1000)) for s, a, _ in due], next_feedback, 40.0)
            trace.append((next_feedback, est.estimate_bps, est.trendline.usage))
            next_feedback += 50
    return est, trace


def test_a_clean_link_never_reads_as_overused_and_the_estimate_grows_past_what_is_sent():
    est, trace = simulate(1_000_000, 5_000_000, queue_ms=500, seconds=6, jitter_ms=3.0)
    assert all(usage is not Usage.OVERUSING for _, _, usage in trace)
    assert est.estimate_bps is not None and 1_200_000 <= est.estimate_bps <= 1_600_000
    assert est.loss == 0


def test_no_estimate_before_half_a_second_of_feedback():
    _, trace = simulate(1_000_000, 5_000_000, queue_ms=500, seconds=1)
    assert all(estimate is None for t, estimate, _ in trace if t < 500)
    assert trace[-1][1] is not None


def test_a_queue_that_grows_is_overuse_before_anything_is_lost_and_the_estimate_falls_under_the_link():
    est, trace = simulate(1_500_000, 600_000, queue_ms=5_000, seconds=2)
    first_overuse = next(t for t, _, usage in trace if usage is Usage.OVERUSING)
    assert first_overuse <= 700
    assert est.loss == 0  # nothing was lost: the queue told
    assert est.estimate_bps is not None and est.estimate_bps <= 600_000


def test_a_policer_that_drops_without_queueing_holds_the_estimate_near_what_gets_through():
    est, trace = simulate(600_000, 150_000, queue_ms=20, seconds=4)
    assert est.loss > 0.5
    assert est.estimate_bps is not None and est.estimate_bps <= 1.5 * 150_000 + 10_000 < 600_000
    assert all(e is None or e >= MIN_BPS for _, e, _ in trace)


def test_random_loss_on_a_link_with_room_leaves_the_estimate_above_what_is_sent():
    """A noisy radio, not congestion: repairs are the answer there, not a lower layer (relay/link.py)."""
    rng = random.Random(7)
    est = SendSideEstimator()
    t = 0.0
    for round_ in range(100):  # 5 s of 1 Mbit/s, 25% of packets lost at random, feedback every 50 ms
        results = []
        for _ in range(5):
            seq = est.sent.add(PACKET, t)
            arrived = None if rng.random() < 0.25 else int((t + 20) * 1000)
            results.append((seq, arrived))
            t += PACKET * 8 / 1_000_000 * 1000
        est.on_feedback(results, 50.0 * (round_ + 1), 40.0)
    assert 0.15 < est.loss < 0.35
    assert est.trendline.usage is not Usage.OVERUSING and not est.congested and est.queue_ms < 1
    assert est.estimate_bps is not None and est.estimate_bps >= 1_000_000


def test_a_queue_that_stands_full_and_drops_is_congestion_though_it_no_longer_grows():
    """A 200 ms queue (the lab's tbf) kept full: the delay stops growing, the trend line goes quiet, and
    the loss with the standing queue says what it is."""
    est, _ = simulate(300_000, 96_000, queue_ms=200, seconds=8)
    assert est.trendline.usage is not Usage.OVERUSING  # full: no growth to see
    assert est.loss > 0.3 and est.queue_ms > 150
    assert est.congested
    assert est.estimate_bps is not None and est.estimate_bps <= 96_000


def test_a_link_that_frees_up_after_an_overuse_is_found_again():
    est, trace = simulate(1_500_000, 600_000, queue_ms=300, seconds=2)
    cut = est.estimate_bps
    est, trace = simulate(1_500_000, 10_000_000, queue_ms=300, seconds=3, est=est, start_ms=trace[-1][0])
    assert trace[-1][2] is not Usage.OVERUSING
    assert cut is not None and est.estimate_bps is not None and est.estimate_bps > 1.5 * cut


@pytest.mark.parametrize(("sent", "asked", "found"), [
    (10, 9, True),  # the last number sent
    (10, 10, False),  # not sent yet
    (70_000, 70_000 - 1 & 0xFFFF, True),  # past a 16-bit wrap
    (70_000, (70_000 - 9000) & 0xFFFF, False),  # older than what is kept
])
def test_sent_packets_are_found_by_their_16_bit_number(sent, asked, found):
    packets = SentPackets()
    for i in range(sent):
        packets.add(100 + i % 7, float(i))
    assert (packets.lookup(asked) is not None) is found


@pytest.mark.parametrize(("points", "expected"), [
    ([(0, 0), (1, 1), (2, 2)], 1.0),
    ([(0, 5), (1, 5), (2, 5)], 0.0),
    ([(0, 2), (1, 0), (2, -2)], -2.0),
    ([(1, 0), (1, 3)], None),  # x does not vary
])
def test_slope(points, expected):
    assert slope(points) == expected


def test_feedback_for_numbers_never_sent_is_ignored():
    est = SendSideEstimator()
    est.sent.add(PACKET, 0.0)
    est.on_feedback([(500, 1000), (501, None)], 100.0, None)
    assert est.loss == 0 and est.acked_bps is None and est.estimate_bps is None


async def test_a_down_track_numbers_every_packet_it_writes_and_the_feedback_becomes_the_link_s_estimate():
    """The wiring, with real RTP: each packet a down-track writes (media, RTX repairs) carries the next
    transport-wide number in its header (read back by aiortc's parser), feedback built by the receiving
    side's own writer (rtc/twcc.py) for what arrived comes back, and the link's estimate is the relay's."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    from relay.link import SubscriberLink
    from relay.tracks import PublishedTrack
    from rtc.adapter import SendParameters
    from rtc.twcc import URI, TransportFeedback

    class Wire:
        def __init__(self) -> None:
            self.packets: list[bytes] = []
        ready = True

        def write(self, data: bytes) -> bool:
            self.packets.append(data)
            return True

    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=5, uri=URI)]))
    link = SubscriberLink()
    link.estimate_on_send_side()
    track = PublishedTrack("video", "t", "p", lambda *_: None)
    down = track.add_down_track(link)
    wire = Wire()
    down.bind(SendParameters(ssrc=1, rtx_ssrc=2, payload_type=96, rtx_payload_type=97, mid="0", mid_id=None,
                             abs_send_time_id=None, transport_cc_id=5), wire, lambda *a: None)
    receiver_side = TransportFeedback()
    # The stream's own timing: a packet every 33 ms, sent and arriving 33 ms apart (the loop itself runs at
    # its own pace; the send stamps follow this clock, so nothing looks queued).
    sending = [0.0]
    down.clock = lambda: sending[0]  # type: ignore[method-assign]
    for i in range(400):  # ~13 s of a 30 fps stream, a one-packet frame each
        sending[0] = 1.0 + i * 0.033
        payload = bytes((0x90, 0x80, 0x80 | i >> 8, i & 0xFF, 0x10 if i == 0 else 0x11, 0, 0)) + b"\x00" * 900
        rtp = RtpPacket(payload_type=96, sequence_number=i, timestamp=i * 3000, ssrc=9, marker=1, payload=payload)
        track.on_packet("vp8", 90000, rtp)
        if i == 200:
            assert down.retransmit(down.forwarder.last_seq)  # a repair is numbered too
        for data in wire.packets:
            seq = RtpPacket.parse(data, extensions).extensions.transport_sequence_number
            assert seq is not None
            receiver_side.record(seq, 1_000_000 + i * 33_000)
        wire.packets.clear()
        if i % 2:
            for feedback in receiver_side.build(3, 1):
                link.on_transport_feedback(feedback, now=i * 0.033)
    assert link.send_side is not None and link.send_side.sent.next_seq == 402  # 400, the lead padding, the RTX
    assert link.send_side.loss == 0 and link.estimate_bps == link.send_side.estimate_bps
    assert link.estimate_bps is not None and link.estimate_bps > 200_000  # ~230 kbit/s sent, nothing queued
    link.on_transport_feedback(b"\x8f\xcd\x00\x01junk", now=14.0)
    assert link.bad_feedback == 1


def test_a_flood_of_feedback_is_read_at_most_a_hundred_a_second_and_the_rest_counted():
    """A hostile viewer sending feedback as fast as it can costs the server at most what a browser's does
    several times over: past 100 a second, packets are counted and not read."""
    from relay.link import MAX_FEEDBACK_PER_S, SubscriberLink
    from rtc.twcc import TransportFeedback

    link = SubscriberLink()
    link.estimate_on_send_side()
    assert link.send_side is not None
    seq = link.send_side.sent.add(PACKET, 0.0)
    feedback = TransportFeedback()
    feedback.record(seq, 1_000_000)
    [packet] = feedback.build(1, 2)
    for n in range(500):  # all within 0.5 s
        link.on_transport_feedback(packet, now=10.0 + n / 1000)
    assert link.send_side.feedback_packets == MAX_FEEDBACK_PER_S and link.bad_feedback == 500 - MAX_FEEDBACK_PER_S
    link.on_transport_feedback(packet, now=11.5)  # the next second: read again
    assert link.send_side.feedback_packets == MAX_FEEDBACK_PER_S + 1


def test_a_link_capped_under_a_running_stream_is_cut_at_once_to_under_the_cap():
    """The lab's three tiles: 1.7 Mbit/s flowing freely, then a 600 kbit/s cap with a 200 ms queue. The
    first cut goes under the cap (what arrives while the queue grows is the cap's rate), not to a share
    of the half second before, which still held the free link's rate."""
    est, trace = simulate(1_700_000, 20_000_000, queue_ms=200, seconds=3)
    start = trace[-1][0]
    est, trace = simulate(1_700_000, 600_000, queue_ms=200, seconds=1, est=est, start_ms=start)
    first = next(t for t, _, usage in trace if usage is Usage.OVERUSING)
    assert first - start <= 300
    assert all(e is not None and e <= 600_000 for t, e, _ in trace if t >= first + 50)  # the next feedback on


@pytest.mark.parametrize(("waits", "filling"), [
    ([0, 10, 30], True),  # the last-sent packet of each feedback waited longer each time: a queue filling
    ([0, 10, 20], False),  # growing, but not deep enough to act on yet
    ([0, 40, 30], False),  # a spike of jitter, not a staircase
    ([30, 30, 30], False),  # a queue that stands (the full-queue rule, with loss, is for that)
    ([0, 0, 45], False),  # a rise under the jump mark: the staircase is waited for
])
def test_a_queue_filling_is_seen_at_the_second_feedback_that_grew(waits, filling):
    est = SendSideEstimator()
    t = 0.0
    for n, wait in enumerate([0, 0, *waits]):
        results = []
        for _ in range(5):
            seq = est.sent.add(PACKET, t)
            results.append((seq, int((t + 20 + wait) * 1000)))
            t += 10
        est.on_feedback(results, 50.0 * (n + 1), 40.0)
    assert est.filling is filling


def test_a_link_tells_once_when_congestion_begins_and_drains_while_its_queue_stands():
    """The wiring from feedback to the adaptation (relay/adaptation.py chooses at once on the call): a link
    that gets narrower under 1.5 Mbit/s says so once, from the feedback, and is draining (only its first
    video served) while packets wait more than 50 ms beyond the path's least."""
    from relay.link import SubscriberLink
    from rtc.twcc import TransportFeedback

    link = SubscriberLink()
    link.estimate_on_send_side()
    assert link.send_side is not None
    called: list[SubscriberLink] = []
    link.on_alarm = called.append
    receiver_side = TransportFeedback()
    free_at = 0.0
    for n in range(40):  # 2 s of feedback every 50 ms; the link narrows to 600 kbit/s after 1 s
        link_bps = 20_000_000 if n < 20 else 600_000
        for k in range(8):  # 8 packets of 1200 bytes per 50 ms: 1.5 Mbit/s
            sent_ms = n * 50.0 + k * 6.25
            seq = link.send_side.sent.add(1200, sent_ms)
            free_at = max(free_at, sent_ms) + 1200 * 8 / link_bps * 1000
            receiver_side.record(seq, int((free_at + 20) * 1000))
        for feedback in receiver_side.build(3, 1):
            link.on_transport_feedback(feedback, now=(n + 1) * 0.05)
        if n == 19:
            assert not called and not link.draining(now=1.0)
    assert called == [link]
    assert link.draining(now=2.0) and link.send_side.queue_ms > 50




def test_the_trend_line_s_lag_past_a_queue_that_emptied_is_not_congestion():
    """A burst that queued 30 ms and passed: the trend line, fitted over the last 20 packet groups, still
    says over-use a feedback or two after the queue emptied. With nothing waiting that is not congestion:
    no second cut, no congestion hold (in the lab such judgements with no queue cut the estimate to half
    what the link carried)."""
    est, t, seen = SendSideEstimator(), 0.0, []
    for n in range(60):  # 3 s of ~580 kbit/s; from 2 s the delay creeps up 30 ms over 300 ms, then drops
        results = []
        for _ in range(3):
            seq = est.sent.add(PACKET, t)
            creep = 30 * (t - 2000) / 300 if 2000 <= t < 2300 else 0.0
            results.append((seq, int((t + 20 + creep) * 1000)))
            t += 50 / 3
        est.on_feedback(results, 50.0 * (n + 1), 40.0)
        seen.append((est.trendline.usage, est.queue_now, est.congested, est.estimate_bps))
    while_queued = [e for usage, queue, congested, e in seen if congested and queue >= 10]
    lagging = [(congested, e) for usage, queue, congested, e in seen if usage is Usage.OVERUSING and queue < 10]
    assert while_queued and lagging  # the queue was congestion; the trend line lagged past it
    assert not any(congested for congested, _ in lagging)
    assert all(e is not None and e >= min(while_queued) for _, e in lagging)  # held, not cut again


def test_a_link_the_relay_estimates_counts_loss_from_transport_cc_and_sends_audio_bare_while_congested():
    """Loss on such a link is what its feedback says, not its NACKs (a viewer asks again and again for what
    a paused video will never send); audio carries one earlier packet while the link has room, none once
    it is congested and loses nothing (the queue drained: copies would only take from the video)."""
    import time

    from relay.link import SubscriberLink
    from rtc.twcc import TransportFeedback

    link = SubscriberLink()
    link.estimate_on_send_side()
    assert link.send_side is not None
    receiver_side, free_at, base = TransportFeedback(), 0.0, time.monotonic()
    for n in range(40):  # as above: 1.5 Mbit/s, the link narrows to 600 kbit/s after 1 s (a deep queue)
        link_bps = 20_000_000 if n < 20 else 600_000
        for k in range(8):
            sent_ms = n * 50.0 + k * 6.25
            seq = link.send_side.sent.add(1200, sent_ms)
            free_at = max(free_at, sent_ms) + 1200 * 8 / link_bps * 1000
            receiver_side.record(seq, int((free_at + 20) * 1000))
        for feedback in receiver_side.build(3, 1):
            link.on_transport_feedback(feedback, now=base + (n + 1) * 0.05 - 2.0)
        if n == 19:
            assert link.audio_redundancy == 1  # room: one earlier packet
    for seq in range(30):
        link.on_nack(seq)
    link.nack_loss(40)
    link.on_receiver_report(0.5, 20, 1.0, 20.0)
    assert link.loss == 0.0  # nothing was lost: the feedback says so, whatever the NACKs and reports claim
    assert link.congested() and link.audio_redundancy == 0


def test_sending_less_than_the_estimate_on_a_clean_link_does_not_lower_it():
    """A relay that sends less for a while (co-hosts paused, the host at a quarter frame rate) learns
    nothing about the link: the estimate holds, where a policer's loss brings it down to what gets through."""
    est, trace = simulate(1_000_000, 5_000_000, queue_ms=500, seconds=3)
    before = est.estimate_bps
    est, trace = simulate(150_000, 5_000_000, queue_ms=500, seconds=3, est=est, start_ms=trace[-1][0])
    assert before is not None and est.estimate_bps is not None and est.estimate_bps >= before
    assert all(usage is not Usage.OVERUSING for _, _, usage in trace)


@pytest.mark.parametrize(("within", "filling"), [
    ([10, 25, 40, 55, 70], True),  # each packet sent later waits longer: a queue growing under the stream
    ([90, 80, 70, 60, 55], False),  # a stall released at once (a radio): the later-sent waited less
])
def test_a_jump_in_one_feedback_is_filling_when_it_grows_within_it(within, filling):
    """A link narrowed under a running stream shows at the first feedback after it as a jump whose packets
    wait longer the later they were sent; the same jump from a stall that releases its packets together is
    not acted on until it makes a staircase."""
    est = SendSideEstimator()
    t = 0.0
    for n, waits in enumerate([[0] * 5, [0] * 5, within]):
        results = []
        for wait in waits:
            seq = est.sent.add(PACKET, t)
            results.append((seq, int((t + 20 + wait) * 1000)))
            t += 10
        est.on_feedback(results, 50.0 * (n + 1), 40.0)
    assert est.filling is filling


def thin_stream(link_bps: float, frame_packets: int, key_packets: int, relay_stall_ms: float) -> SendSideEstimator:
    """3 s of a host on a link with room: Opus every 20 ms, video at 5 fps (10 packets a frame for the
    first 2 s, then ``frame_packets``: co-hosts paused, the host at a quarter frame rate); at 3 s a
    keyframe of ``key_packets``, sent after the relay stalled ``relay_stall_ms`` (what it held going out
    at once). Feedback every 50 ms until 250 ms after."""
    sends = [(t * 20.0, 150) for t in range(200)]
    for frame in range(20):
        count = key_packets if frame == 15 else frame_packets if frame >= 10 else 10
        sends += [(frame * 200.0 + k * 0.5, 1200) for k in range(count)]
    end = 3000 + relay_stall_ms
    sends = sorted((end if 3000 <= t < end else t, size) for t, size in sends)
    est, free_at, arrivals = SendSideEstimator(), 0.0, []
    for sent_ms, size in sends:
        seq = est.sent.add(size, sent_ms)
        free_at = max(free_at, sent_ms) + size * 8 / link_bps * 1000
        arrivals.append((seq, free_at + 20))
    for n in range(1, int(end + 250) // 50):
        due = [(seq, int(at * 1000)) for seq, at in arrivals if 50 * (n - 1) < at <= 50 * n]
        if due:
            est.on_feedback(due, 50.0 * n, 40.0)
    return est


@pytest.mark.parametrize(("frame_packets", "key_packets", "relay_stall_ms"), [
    (2, 8, 0),  # a keyframe of a thin stream
    (0, 4, 150),  # the relay stalled 150 ms, then sent what it held
    (3, 3, 300),
])
def test_a_queue_on_a_link_the_relay_uses_thinly_is_cut_to_under_the_link_not_to_a_share_of_the_stream(
        frame_packets, key_packets, relay_stall_ms):
    """What arrives while the queue stands comes at the link's rate: the cut goes just under it. Cut to a
    share of what the relay sent over the last 500 ms (a few frames, mostly audio), a 600 kbit/s link's
    estimate went from 555 to 137-209 kbit/s here, and in the lab the host's tile froze."""
    est = thin_stream(600_000, frame_packets, key_packets, relay_stall_ms)
    overuse = [cut for cut in est.cuts if cut[0] > 3000]
    assert overuse and est.acked_bps is not None and est.acked_bps < 300_000  # a queue; the relay sent thinly
    assert est.estimate_bps is not None and 400_000 <= est.estimate_bps <= 600_000
