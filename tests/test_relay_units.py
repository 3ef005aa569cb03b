"""The relay's parts on their own: the adapter's marker-bit jitter buffer, keyframe detection, and the
bounds of a down-track (a slow subscriber skips to the next keyframe instead of growing)."""

from __future__ import annotations

import asyncio

from aiortc.rtp import RtpPacket

from relay.tracks import PublishedTrack
from rtc.codecs import is_keyframe
from rtc.jitter import MarkerJitterBuffer


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


async def test_slow_down_track_skips_to_next_keyframe_and_asks_once():
    plis = []
    track = PublishedTrack("video", "t", "p", lambda: plis.append(1), keyframe_interval=0.05, max_queue=5)
    slow = track.add_down_track()
    fast = track.add_down_track()
    key, delta = bytes([0x10, 0, 0]), bytes([0x11, 0, 0])
    received = []

    async def reader() -> None:
        while True:
            received.append((await fast.recv()).pts)

    task = asyncio.create_task(reader())
    track.on_frame("VP8", 90000, key, 0, False)
    for n in range(1, 20):
        track.on_frame("VP8", 90000, delta, n * 3000, False)
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    # The slow one never read: it holds at most its bound, and went back to waiting for a keyframe.
    assert len(slow._queue) <= 5 and slow.waiting_keyframe and slow.frames_skipped > 0
    # The fast one got every frame, untouched by its slow neighbour.
    assert received == [n * 3000 for n in range(20)]
    assert 1 <= len(plis) <= 3  # new subscribers + the overflow, coalesced
    track.on_frame("VP8", 90000, key, 60000, False)
    assert not slow.waiting_keyframe and len(slow._queue) == 1
    track.close()
    task.cancel()
    assert slow.readyState == "ended" and fast.readyState == "ended"


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
    track = PublishedTrack("video", "t", "p", lambda: plis.append(1), keyframe_interval=0.01)
    for _ in range(10):
        track.add_down_track()  # ten joiners at once
        await asyncio.sleep(0.02)
    assert len(plis) == 1  # the keyframe asked for first serves them all
    track.on_frame("VP8", 90000, bytes([0x10, 0, 0]), 0, False)  # it arrives
    track.add_down_track()
    await asyncio.sleep(0.02)
    assert len(plis) == 2  # a later joiner asks again, at once
    track.close()


async def test_a_waiting_subscriber_keeps_asking_when_a_keyframe_request_is_lost():
    plis = []
    track = PublishedTrack("video", "t", "p", lambda: plis.append(1), keyframe_interval=0.01, keyframe_timeout=0.1)
    down = track.add_down_track()
    await asyncio.sleep(0.02)
    assert len(plis) == 1  # asked once; suppose the publisher ignores it
    for n in range(1, 8):  # delta frames keep coming, no keyframe
        track.on_frame("VP8", 90000, bytes([0x11, 0, 0]), n * 3000, False)
        await asyncio.sleep(0.03)
    assert len(plis) >= 2 and down.waiting_keyframe  # asked again once the first request timed out
    track.close()
