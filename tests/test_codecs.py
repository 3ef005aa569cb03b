"""The codec seam (rtc/codecs): one object per codec behind a registry, each answering the same questions
of its payloads. Tables per codec; the packet facts the forwarding tests lean on are in
tests/test_relay_units.py."""

from __future__ import annotations

import pytest

from rtc.codecs import H264, Codec, PayloadInfo, Vp8, codec_for


@pytest.mark.parametrize(("name", "kind"), [("VP8", Vp8), ("vp8", Vp8), ("H264", H264), ("opus", Codec),
                                            ("VP9", Codec), (None, Codec)])
def test_the_registry_gives_one_object_per_codec(name, kind):
    assert type(codec_for(name)) is kind


def vp8_payload(pid: int | None, wide: bool = True, tid: int | None = None, key: bool = True) -> bytes:
    x = (0x80 if pid is not None else 0) | (0x20 if tid is not None else 0)
    out = bytes([0x90 if x else 0x10])
    if x:
        out += bytes([x])
        if pid is not None:
            out += bytes([0x80 | pid >> 8, pid & 0xFF]) if wide else bytes([pid & 0x7F])
        if tid is not None:
            out += bytes([tid << 6])
    return out + bytes([0x00 if key else 0x01, 0, 0])


@pytest.mark.parametrize(("payload", "info"), [
    (vp8_payload(1234), PayloadInfo((2, 2, 1234), None)),
    (vp8_payload(99, wide=False), PayloadInfo((2, 1, 99), None)),
    (vp8_payload(1234, tid=2), PayloadInfo((2, 2, 1234), 2)),
    (vp8_payload(None, tid=1), PayloadInfo(None, 1)),
    (vp8_payload(None), PayloadInfo(None, None)),
    (b"\x90", PayloadInfo(None, None)),  # cut short: nothing claimed
])
def test_vp8_describes_its_descriptor(payload, info):
    assert Vp8().describe(payload) == info


@pytest.mark.parametrize(("wide", "value", "expected"), [(True, 32767, 32767), (True, 5, 5), (False, 200, 200 & 0x7F)])
def test_vp8_rewrites_its_picture_id_in_place_and_in_its_width(wide, value, expected):
    vp8 = Vp8()
    payload = vp8_payload(3, wide=wide)
    rewritten = vp8.with_picture_id(payload, vp8.describe(payload).picture_id, value)  # type: ignore[arg-type]
    assert len(rewritten) == len(payload) and vp8.describe(rewritten).picture_id[2] == expected  # type: ignore[index]
    assert rewritten[-3:] == payload[-3:]  # the frame itself untouched


@pytest.mark.parametrize(("codec", "payload", "previous_marker", "starts", "key"), [
    (Vp8(), vp8_payload(7), True, True, True),
    (Vp8(), vp8_payload(7, key=False), True, True, False),
    (Vp8(), b"\x80\x80\x87\x07\x00", True, False, False),  # a later packet of the frame (S clear)
    (H264(), bytes([0x67, 0x42]), True, True, True),  # SPS
    (H264(), bytes([0x78, 0, 2, 0x67, 0x42]), True, True, True),  # STAP-A opening with SPS
    (H264(), bytes([0x65, 0x88]), True, False, True),  # IDR right after a frame ended
    (H264(), bytes([0x65, 0x88]), False, False, False),  # IDR inside a frame: not where a decoder can start
    (H264(), bytes([0x7C, 0x85, 0x88]), True, False, True),  # FU-A, first fragment of an IDR
    (H264(), bytes([0x41, 0x9A]), True, False, False),  # a P slice
    (Codec(), b"opus", True, False, True),  # audio: every packet stands alone
])
def test_where_frames_and_keyframes_start(codec, payload, previous_marker, starts, key):
    assert codec.starts_frame(payload) is starts
    assert codec.starts_keyframe(payload, previous_marker) is key


def test_a_vp8_keyframe_says_its_size():
    header = bytes([0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + (1280).to_bytes(2, "little") + (720).to_bytes(2, "little")
    assert Vp8().frame_size(header + b"\x00" * 20) == (1280, 720)
    assert Vp8().frame_size(bytes([0x01]) + header[1:]) is None  # an interframe says nothing
    assert H264().frame_size(b"\x00\x00\x00\x01\x67") is None
