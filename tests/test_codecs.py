"""The codec seam (rtc/codecs): one object per codec behind a registry, each answering the same questions
of its payloads. Tables per codec; the packet facts the forwarding tests lean on are in
tests/test_relay_units.py."""

from __future__ import annotations

import pytest

from rtc.codecs import H264, Codec, PayloadInfo, Vp8, Vp9, codec_for, vp9_descriptor
from rtc.codecs.vp9 import layer_frames, superframe


@pytest.mark.parametrize(("name", "kind"), [("VP8", Vp8), ("vp8", Vp8), ("H264", H264), ("opus", Codec),
                                            ("VP9", Vp9), ("AV1", Codec), (None, Codec)])
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
    # x264's first keyframe (OBS, FFmpeg): an SEI with its version ahead of SPS, PPS (and the IDR), in a STAP-A
    (H264(), bytes([0x78, 0, 2, 0x06, 0x05, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xCE]), True, True, True),
    (H264(), bytes([0x78, 0, 2, 0x09, 0x10, 0, 2, 0x41, 0x9A]), True, True, False),  # delimiter, then a P slice
    (H264(), bytes([0x06, 0x05]), True, True, False),  # an SEI alone: an access unit starts, which is not said
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


def vp9_payload(*, pid: int | None = 300, tid: int = 0, sid: int = 0, u: bool = False, d: bool = False,
                inter: bool = True, begins: bool = True, ends: bool = True, flexible: bool = False,
                diffs: int = 1, sizes: tuple[tuple[int, int], ...] = (), frame: bytes = b"\x86") -> bytes:
    """A VP9 payload as RFC 9628 lays it out: the descriptor, then ``frame`` (a byte of bitstream)."""
    flags = (0x80 if pid is not None else 0) | (0x40 if inter else 0) | 0x20 | (0x10 if flexible else 0) | \
        (0x08 if begins else 0) | (0x04 if ends else 0) | (0x02 if sizes else 0)
    out = bytes([flags])
    if pid is not None:
        out += bytes([0x80 | pid >> 8, pid & 0xFF])
    out += bytes([tid << 5 | int(u) << 4 | sid << 1 | int(d)])
    if not flexible:
        out += b"\x07"  # TL0PICIDX
    elif inter:
        out += bytes([(1 << 1) | (1 if k < diffs - 1 else 0) for k in range(diffs)])  # P_DIFF|N
    if sizes:
        out += bytes([(len(sizes) - 1) << 5 | 0x10])
        for width, height in sizes:
            out += width.to_bytes(2, "big") + height.to_bytes(2, "big")
    return out + frame


@pytest.mark.parametrize(("payload", "expected"), [
    (vp9_payload(), dict(picture_id=(1, 2, 300), temporal=0, spatial=0, begins=True, ends=True, length=5)),
    (vp9_payload(tid=2, sid=1, u=True, begins=False, ends=True),
     dict(temporal=2, spatial=1, switch_up=True, begins=False, ends=True)),
    (vp9_payload(flexible=True, diffs=3, sid=2), dict(spatial=2, length=7)),  # three P_DIFFs, no TL0PICIDX
    (vp9_payload(inter=False, sizes=((320, 180), (640, 360), (1280, 720))),
     dict(inter_picture=False, sizes=((320, 180), (640, 360), (1280, 720)), length=18)),
    (vp9_payload(pid=None), dict(picture_id=None, length=3)),
    (vp9_payload(sid=1, d=True), dict(spatial=1, inter_layer=True)),
])
def test_vp9_reads_its_payload_descriptor(payload, expected):
    descriptor = vp9_descriptor(payload)
    assert descriptor is not None
    for field, value in expected.items():
        assert getattr(descriptor, field) == value, field


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\xa0\x80", vp9_payload(sizes=((320, 180),))[:9],
                                     vp9_payload(flexible=True, diffs=2)[:5]])
def test_a_cut_vp9_descriptor_claims_nothing(payload):
    assert vp9_descriptor(payload) is None
    assert Vp9().describe(payload) == PayloadInfo(None, None)


def test_vp9_keyframes_pictures_and_picture_ids():
    vp9 = Vp9()
    key = vp9_payload(inter=False, sizes=((640, 360), (1280, 720)))
    assert vp9.starts_keyframe(key, True) and vp9.starts_frame(key)
    assert vp9.keyframe_size(key) == (1280, 720)  # the top layer's size
    assert not vp9.starts_keyframe(vp9_payload(inter=False, sid=1), True)  # a keyframe's upper layer
    assert not vp9.starts_keyframe(vp9_payload(), True)  # a predicted picture
    assert not vp9.starts_frame(vp9_payload(begins=False))
    info = vp9.describe(vp9_payload(tid=1, sid=1, ends=True))
    assert (info.temporal, info.spatial, info.layer_end) == (1, 1, True)
    rewritten = vp9.with_picture_id(key, info.picture_id, 0x1234)  # type: ignore[arg-type]
    assert vp9.describe(rewritten).picture_id == (1, 2, 0x1234) and rewritten[3:] == key[3:]
    # The uncompressed header: frame marker 0b10, profile 0, show_existing_frame 0, frame_type 0 (key) / 1.
    assert vp9.is_keyframe(bytes([0b10000000])) and not vp9.is_keyframe(bytes([0b10000100]))
    assert not vp9.is_keyframe(bytes([0b10001000]))  # show_existing_frame: no new picture
    assert not vp9.is_keyframe(b"\x00")


@pytest.mark.parametrize(("frames", "index"), [
    ([b"\x82\x49"], b""),  # one frame: as it is, no index
    ([b"\x01" * 3, b"\x02" * 5], bytes([0xC1, 3, 5, 0xC1])),  # one byte per size, two frames
    ([b"\x01" * 3, b"\x02" * 300, b"\x03"], bytes([0xCA, 3, 0, 44, 1, 1, 0, 0xCA])),  # two bytes, three
    ([b"\x01" * 70_000, b"\x02"], bytes([0xD1]) + (70_000).to_bytes(3, "little") + b"\x01\x00\x00" + bytes([0xD1])),
])
def test_a_vp9_superframe_is_its_frames_then_their_index(frames, index):
    assert superframe(frames) == b"".join(frames) + index


def test_a_vp9_picture_is_assembled_from_the_layer_frames_its_top_one_needs():
    base = dict(inter=False, tid=0)
    payloads = [vp9_payload(sid=0, begins=True, ends=False, frame=b"\x82\x01", **base),
                vp9_payload(sid=0, begins=False, ends=True, frame=b"\x02", **base),
                vp9_payload(sid=1, d=True, begins=True, ends=True, frame=b"\x83\x03\x03", **base),
                b"\xa0"]  # a cut descriptor: left out
    assert layer_frames(payloads) == [b"\x82\x01\x02", b"\x83\x03\x03"]
    assert Vp9().assemble(payloads) == b"\x82\x01\x02\x83\x03\x03" + bytes([0xC1, 3, 3, 0xC1])
    assert Vp8().assemble([b"ab", b"c"]) == b"abc"  # aiortc's depayloader has done its part already


@pytest.mark.parametrize(("predicted", "kept"), [
    ((False, True, True), [b"S0", b"S1", b"S2"]),  # a keyframe's picture (L3T3_KEY): each from the one below
    ((False, False, False), [b"S2"]),  # any other picture of L3T3_KEY: the top frame alone
    ((False, False, True), [b"S1", b"S2"]),  # S2 from S1 only
    ((False, True, False), [b"S2"]),  # S1 from S0, but S2 from neither: S0 and S1 are not needed
])
def test_below_the_top_a_vp9_layer_frame_is_kept_while_the_one_above_is_predicted_from_it(predicted, kept):
    payloads = [vp9_payload(sid=sid, d=d, frame=f"S{sid}".encode()) for sid, d in enumerate(predicted)]
    assert layer_frames(payloads) == kept


def test_libvpx_decodes_vp9_assembled_from_rtp_and_a_superframe_of_two_pictures():
    """Real VP9 (libvpx): each frame cut into payloads with descriptors and assembled again is the frame,
    and two pictures as one superframe decode as both (the next frame, predicted from the second, decodes)."""
    import fractions

    import av
    import numpy as np

    encoder = av.CodecContext.create("libvpx-vp9", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 160, 120, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames = []
    for n in range(4):
        image = av.VideoFrame.from_ndarray(np.full((120, 160, 3), n * 40, np.uint8), format="rgb24")
        image.pts = n
        frames += [bytes(packet) for packet in encoder.encode(image.reformat(format="yuv420p"))]
    frames += [bytes(packet) for packet in encoder.encode(None)]
    assert len(frames) == 4
    for frame in frames:
        chunks = [frame[i:i + 50] for i in range(0, len(frame), 50)]
        payloads = [vp9_payload(begins=k == 0, ends=k == len(chunks) - 1, frame=chunk)
                    for k, chunk in enumerate(chunks)]
        assert Vp9().assemble(payloads) == frame
    decoder = av.CodecContext.create("libvpx-vp9", "r")
    assert decoder.decode(av.Packet(frames[0]))
    assert decoder.decode(av.Packet(superframe([frames[1], frames[2]])))  # two pictures, one packet
    assert decoder.decode(av.Packet(frames[3]))  # needs the second of them decoded


def test_x264_s_first_keyframe_is_found_as_aiortc_packetizes_it():
    """OBS and FFmpeg push x264, whose first keyframe opens with an SEI (its version string) before SPS, PPS
    and the IDR. Packetized as aiortc does for the RTMP bridge (a STAP-A opening with the SEI), it is a
    keyframe start: missing it kept every viewer who came early waiting a whole GOP."""
    import fractions

    import av
    import numpy as np
    from aiortc.codecs.h264 import H264Encoder

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.options = {"profile": "baseline", "tune": "zerolatency", "preset": "veryfast"}
    image = av.VideoFrame.from_ndarray(np.full((360, 320), 128, np.uint8), format="yuv420p")
    image.pts = 0
    [encoded] = [p for p in codec.encode(image)] or list(codec.encode(None))
    nals = {nal[0] & 0x1F: nal.rstrip(b"\x00") for nal in bytes(encoded).split(b"\x00\x00\x01")[1:] if nal}
    assert {5, 6, 7, 8} <= set(nals)  # IDR, SEI, SPS, PPS
    # As the bridge's h264_mp4toannexb hands it on from an FLV: the sample's SEI, then the parameter sets it
    # inserts before the IDR, then the IDR.
    packet = av.Packet(b"".join(b"\x00\x00\x00\x01" + nals[t] for t in (6, 7, 8, 5)))
    packet.pts, packet.time_base = 0, fractions.Fraction(1, 90000)
    payloads, _ = H264Encoder().pack(packet)
    assert H264().starts_keyframe(payloads[0], True)
    assert not any(H264().starts_keyframe(p, False) for p in payloads[1:])
