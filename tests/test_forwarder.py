"""The forwarder's decisions as a table: packets in, what this subscriber's copy is (or why none) out.

Each row feeds a fresh ``Forwarder`` (last sequence number 1000, timestamp 50000, picture id 300) a run
of source packets, committing every copy as sent, and compares what it answered, packet by packet:
a ``Drop`` reason, or (sequence number - 1000, timestamp - 50000, picture id, padding only, started).
"""

from __future__ import annotations

import pytest

from relay.forwarder import Drop, Forwarder, SourcePacket, Translation
from rtc.codecs import Vp8, Vp9

SEQ, TS, PID = 1000, 50000, 300


def vp8(pid: int, key: bool, start: bool = True, tid: int | None = None) -> bytes:
    x = 0x80 | (0x20 if tid is not None else 0)
    descriptor = bytes([0x90 if start else 0x80, x, 0x80 | pid >> 8, pid & 0xFF])
    if tid is not None:
        descriptor += bytes([tid << 6])
    return descriptor + (bytes([0x10 if key else 0x11, 0, 0]) if start else b"\x07\x07")


def P(seq: int, frame: int, *, key: bool = False, start: bool = True, layer: int = 0, epoch: int = 0,
      tid: int | None = None, pid: int | None = None) -> SourcePacket:
    """A VP8 source packet: sequence number ``seq``, frame number ``frame`` (timestamp 3000 per frame,
    picture id ``pid`` or the frame number)."""
    picture = frame if pid is None else pid
    return SourcePacket(seq & 0xFFFF, 3000 * frame, 1, vp8(picture, key, start, tid), key and start, epoch, 0,
                        b"\x00\x00\x00", (2, 2, picture), layer, tid, codec=Vp8())


def A(seq: int, ts: int, epoch: int = 0) -> SourcePacket:
    """An audio (Opus) packet: every one is a start."""
    return SourcePacket(seq, ts, 0, b"opus", True, epoch, 0, b"\x00\x00\x00", None, 0, None)


def outcome(result: Translation | Drop) -> object:
    if isinstance(result, Drop):
        return result
    vp8_with_pid = not result.padding and len(result.payload) > 3 and result.payload[0] & 0x80
    pid = (result.payload[2] & 0x7F) << 8 | result.payload[3] if vp8_with_pid else None
    return ((result.seq - SEQ) & 0xFFFF, (result.timestamp - TS) & 0xFFFFFFFF, pid, result.padding, result.started)


W, OTHER, B = Drop.WAITING_KEYFRAME, Drop.OTHER_LAYER, Drop.BEFORE_START

TABLE = [
    ("the gate: deltas wait, a keyframe opens it one step after room for the lead padding packet",
     dict(), [P(10, 0), P(11, 1, key=True), P(12, 2)],
     [W, (2, 1, 1, False, True), (3, 3001, 2, False, False)]),
    ("audio opens at its first packet, with no lead", dict(kind="audio"), [A(7, 960), A(8, 1920)],
     [(1, 1, None, False, True), (2, 961, None, False, False)]),
    ("a packet from before the start never goes", dict(), [P(20, 5, key=True), P(21, 6), P(19, 4)],
     [(2, 1, 5, False, True), (3, 3001, 6, False, False), B]),
    ("a new stream (epoch) waits for its keyframe, then numbering goes on from where it stopped",
     dict(), [P(10, 0, key=True), P(11, 1), P(500, 70, epoch=1), P(501, 71, key=True, epoch=1),
              P(502, 72, epoch=1)],
     [(2, 1, 0, False, True), (3, 3001, 1, False, False), W, (4, 3002, 2, False, True),
      (5, 6002, 3, False, False)]),
    ("another simulcast layer is not this subscriber's", dict(), [P(10, 0, key=True), P(40, 0, key=True, layer=1)],
     [(2, 1, 0, False, True), OTHER]),
    ("switching layer: the wanted layer's deltas wait, its keyframe switches with continuous numbering",
     dict(target=1), [P(10, 0, key=True), P(40, 0, key=True, layer=1), P(41, 1, layer=1), P(11, 1)],
     [OTHER, (2, 1, 0, False, True), (3, 3001, 1, False, False), OTHER]),
    ("paused (no target): nothing goes", dict(target=None), [P(10, 0, key=True), P(11, 1)], [OTHER, OTHER]),
    ("above the temporal cap: padding only, and the next kept frame's picture id closes the gap",
     dict(temporal=0), [P(10, 0, key=True, tid=0), P(11, 1, tid=1), P(12, 2, tid=0)],
     [(2, 1, 0, False, True), (3, 3001, None, True, False), (4, 6001, 1, False, False)]),
    ("switching down: until the lower layer's keyframe only the base temporal layer of the current one goes",
     dict(target=1, down_to=0),
     [P(40, 0, key=True, layer=1, tid=0), P(41, 1, layer=1, tid=2), P(42, 2, layer=1, tid=1), P(43, 3, layer=1, tid=0),
      P(10, 4, key=True, tid=0), P(11, 5, tid=2), P(44, 4, layer=1, tid=2)],
     [(2, 1, 0, False, True), (3, 3001, None, True, False), (4, 6001, None, True, False), (5, 9001, 1, False, False),
      (6, 12001, 2, False, True), (7, 15001, 3, False, False), OTHER]),
    ("a switch down called off: its base temporal layer alone until the next base-layer frame, then all",
     dict(target=1, down_to=0, up_after=3),
     [P(40, 0, key=True, layer=1, tid=0), P(41, 1, layer=1, tid=2), P(42, 2, layer=1, tid=1),
      P(43, 3, layer=1, tid=2), P(44, 4, layer=1, tid=0), P(45, 5, layer=1, tid=2)],
     [(2, 1, 0, False, True), (3, 3001, None, True, False), (4, 6001, None, True, False),
      (5, 9001, None, True, False), (6, 12001, 1, False, False), (7, 15001, 2, False, False)]),
    ("switching down decided mid-frame: that frame goes whole, the next frames are thinned",
     dict(target=1, down_to=0, down_after=2), [P(40, 0, key=True, layer=1, tid=0), P(41, 1, layer=1, tid=2),
                                               P(42, 1, start=False, layer=1, tid=2), P(43, 2, layer=1, tid=1)],
     [(2, 1, 0, False, True), (3, 3001, 1, False, False), (4, 3001, 1, False, False), (5, 6001, None, True, False)]),
]


@pytest.mark.parametrize(("name", "setup", "packets", "expected"), TABLE, ids=[row[0][:40] for row in TABLE])
def test_translation(name, setup, packets, expected):
    forwarder = Forwarder(setup.get("kind", "video"), SEQ, TS, PID)
    forwarder.target_layer = setup.get("target", 0)
    forwarder.target_temporal = setup.get("temporal")
    clock_rate = 48000 if setup.get("kind") == "audio" else 90000
    got = []
    for n, packet in enumerate(packets):
        if "down_to" in setup and n == setup.get("down_after", 1):
            forwarder.target_layer = setup["down_to"]  # the chooser wants a lower layer from here on
        if n == setup.get("up_after"):
            forwarder.target_layer = setup["target"]  # ...and no longer: the link keeps this layer after all
        result = forwarder.translate(packet, now=float(n) * 1e-6, clock_rate=clock_rate)
        if isinstance(result, Translation):
            if result.started and not forwarder.started and setup.get("kind", "video") == "video":
                forwarder.commit_lead((result.seq - 1) & 0xFFFF)
            forwarder.commit(result, now=float(n) * 1e-6)
        got.append(outcome(result))
    assert got == expected


def test_a_second_start_renumbers_picture_ids_after_the_last_one_sent():
    forwarder = Forwarder("video", SEQ, TS, PID)
    for packet in [P(10, 0, key=True, pid=700), P(11, 1, pid=701)]:
        result = forwarder.translate(packet, 0.0, 90000)
        assert isinstance(result, Translation)
        forwarder.commit(result, 0.0)
    # The publisher restarts with other picture ids: ours go on from 701.
    assert forwarder.translate(P(90, 5, epoch=1, pid=20), 0.0, 90000) is Drop.WAITING_KEYFRAME
    result = forwarder.translate(P(91, 6, key=True, epoch=1, pid=21), 0.0, 90000)
    assert isinstance(result, Translation) and outcome(result)[2] == 702


def test_first_packets_that_could_not_go_start_again_at_a_keyframe():
    forwarder = Forwarder("video", SEQ, TS, PID)
    result = forwarder.translate(P(10, 0, key=True), 0.0, 90000)
    assert isinstance(result, Translation) and result.started
    forwarder.start_again()  # the subscriber's transport was not up: nothing was committed
    assert forwarder.translate(P(11, 1), 0.0, 90000) is Drop.WAITING_KEYFRAME
    again = forwarder.translate(P(12, 2, key=True), 0.0, 90000)
    assert isinstance(again, Translation) and again.started and again.seq == result.seq  # the same numbers


def S(seq: int, picture: int, sid: int, *, key: bool = False, begins: bool = True, ends: bool = True,
      top: int = 2) -> SourcePacket:
    """A VP9 SVC source packet: spatial layer ``sid`` of picture ``picture`` (one packet per layer frame
    unless said), the RTP marker on the top layer's end."""
    from tests.test_codecs import vp9_payload

    payload = vp9_payload(pid=picture, sid=sid, inter=not key, begins=begins, ends=ends)
    marker = int(sid == top and ends)
    return SourcePacket(seq, 3000 * picture, marker, payload, key and sid == 0 and begins, 0, 0, b"\x00\x00\x00",
                        (1, 2, picture), 0, 0, codec=Vp9(), spatial=sid, layer_end=ends)


def svc_outcome(result: Translation | Drop) -> object:
    if isinstance(result, Drop):
        return result
    return ((result.seq - SEQ) & 0xFFFF, "pad" if result.padding else result.marker)


def picture(seq: int, number: int, key: bool = False) -> list[SourcePacket]:
    return [S(seq, number, 0, key=key), S(seq + 1, number, 1, key=key), S(seq + 2, number, 2, key=key)]


def svc_run(forwarder: Forwarder, packets: list[SourcePacket]) -> list[object]:
    """Each packet translated (and committed when sent): the outcomes."""
    out = []
    for packet in packets:
        result = forwarder.translate(packet, 0.0, 90000)
        if isinstance(result, Translation):
            forwarder.commit(result, 0.0)
        out.append(svc_outcome(result))
    return out


@pytest.mark.parametrize(("name", "target", "packets", "expected"), [
    ("all layers: the publisher's own markers", None, picture(10, 0, key=True) + picture(13, 1),
     [(2, 0), (3, 0), (4, 1), (5, 0), (6, 0), (7, 1)]),
    ("two of three: the top layer goes as padding, the middle one ends the picture", 1,
     picture(10, 0, key=True) + picture(13, 1),
     [(2, 0), (3, 1), (4, "pad"), (5, 0), (6, 1), (7, "pad")]),
    ("the lowest alone: its layer frame carries the marker", 0, picture(10, 0, key=True),
     [(2, 1), (3, "pad"), (4, "pad")]),
])
def test_spatial_layers_are_left_out_with_the_marker_moved(name, target, packets, expected):
    forwarder = Forwarder("video", SEQ, TS, PID)
    forwarder.target_spatial = target
    assert svc_run(forwarder, packets) == expected, name


def test_fewer_spatial_layers_from_the_next_picture_more_only_from_a_keyframe():
    forwarder = Forwarder("video", SEQ, TS, PID)

    def run(packets: list[SourcePacket]) -> list[object]:
        return svc_run(forwarder, packets)

    assert run(picture(10, 0, key=True)) == [(2, 0), (3, 0), (4, 1)]
    forwarder.target_spatial = 0
    assert run(picture(13, 1)) == [(5, 1), (6, "pad"), (7, "pad")]  # down at once, at the picture's start
    forwarder.target_spatial = 2
    assert run(picture(16, 2)) == [(8, 1), (9, "pad"), (10, "pad")]  # up: not on a predicted picture
    assert run(picture(19, 3, key=True)) == [(11, 0), (12, 0), (13, 1)]  # ...but at the keyframe
    assert forwarder.spatial_cap == 2


def test_a_long_stream_keeps_flowing_past_half_the_sequence_space_and_its_nacks_are_answered():
    """Sixteen-bit sequence numbers wrap: "from before the start" may only be judged near the start. It was
    judged always, so every packet from 32,768 after a viewer's start on was taken for an old one: video
    stopped for every viewer after about five minutes at 1 Mbit/s (found by a 10-minute load run)."""
    forwarder = Forwarder("video", SEQ, TS, PID)
    forwarder.target_layer = 0
    first = 60_000  # the publisher's numbers wrap on the way too
    late = P(first - 1, 0)
    dropped = []
    for n in range(70_000):
        result = forwarder.translate(P(first + n, n // 3, key=n == 0, start=n % 3 == 0), now=n * 1e-4,
                                     clock_rate=90000)
        if isinstance(result, Drop):
            dropped.append((n, result))
            continue
        if result.started:
            forwarder.commit_lead((result.seq - 1) & 0xFFFF)
        forwarder.commit(result, now=n * 1e-4)
        if n == 10:  # near the start, a packet from before it still never goes
            assert forwarder.translate(late, now=n * 1e-4, clock_rate=90000) is Drop.BEFORE_START
            assert forwarder.from_before_start((forwarder.restart_out_seq - 3) & 0xFFFF)
    assert dropped == []
    # Far past the start, a NACK for a packet just sent is answered (not taken for one from before the start).
    assert not forwarder.from_before_start((forwarder.last_seq - 5) & 0xFFFF)
