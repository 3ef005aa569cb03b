"""Simulcast layers are ranked by the picture size their keyframes declare (relay/simulcast.py), never by
the offer's rid order alone: OBS lists full size first, Firefox the highest first, our page the lowest.
Keyframes here come from aiortc's real VP8 and H.264 encoders and packetizers."""

from __future__ import annotations

import asyncio
import fractions

import av
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from relay.simulcast import order_layers
from relay.tracks import PublishedTrack
from rtc.codecs import codec_for
from rtc.codecs.h264 import sps_size
from tests.test_relay_units import PARAMS, Wire


@pytest.mark.parametrize(("pixels", "current", "expected"), [
    ([100, 400, 900], [0, 1, 2], [0, 1, 2]),  # our page: smallest first, nothing moves
    ([900, 400, 100], [0, 1, 2], [2, 1, 0]),  # OBS and Firefox: the first rid is the largest
    ([900, None, 100], [0, 1, 2], [2, 1, 0]),  # the middle one not seen yet keeps its place
    ([None, None, 100], [0, 1, 2], [0, 1, 2]),  # one size known: nothing to compare it with
    ([900, 400, None], [0, 1, 2], [1, 0, 2]),  # the two known swap; the unknown stays on top for now
    ([400, 400, 100], [0, 1, 2], [2, 0, 1]),  # equal sizes keep their order
    ([900, 400, 100], [2, 1, 0], [2, 1, 0]),  # already ranked
    ([None, None], [0, 1], [0, 1]),
])
def test_layers_are_ordered_by_the_size_their_keyframes_declare(pixels, current, expected):
    assert order_layers(pixels, current) == expected


def frame(width: int, height: int, index: int = 0) -> av.VideoFrame:
    picture = av.VideoFrame(width, height, "yuv420p")
    for plane in picture.planes:
        plane.update(bytes([(index * 7) % 256]) * plane.buffer_size)
    picture.pts, picture.time_base = index * 3000, fractions.Fraction(1, 90000)
    return picture


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 360), (426, 240), (854, 480), (320, 180),
                                               (1920, 1080)])
def test_an_h264_keyframes_sps_says_its_size_cropping_included(width, height):
    payloads, _ = H264Encoder().encode(frame(width, height), force_keyframe=True)
    h264 = codec_for("h264")
    assert h264.starts_keyframe(payloads[0], True)
    assert h264.keyframe_size(payloads[0]) == (width, height)


def test_a_high_profile_sps_as_libx264_writes_it_and_broken_ones():
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = 1366, 768, "yuv420p"
    context.time_base, context.options = fractions.Fraction(1, 30), {"profile": "high"}
    data = b"".join(bytes(p) for p in context.encode(frame(1366, 768)) + context.encode(None))
    sps = next(nal for nal in data.split(b"\x00\x00\x01")[1:] if nal and nal[0] & 0x1F == 7)
    assert sps[1] == 100  # profile_idc: high (chroma format and bit depths in it; aiortc's encoder: baseline)
    assert sps_size(sps.rstrip(b"\x00")) == (1366, 768)
    assert codec_for("h264").frame_size(data) == (1366, 768)
    assert sps_size(sps[:5]) is None  # cut short
    assert sps_size(b"\x68\xce\x38\x80") is None  # a PPS
    assert sps_size(b"\x67" + b"\x00" * 12) is None  # Exp-Golomb run past 31 zeros


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (320, 180)])
def test_a_vp8_keyframes_first_packet_says_its_size(width, height):
    payloads, _ = Vp8Encoder().encode(frame(width, height), force_keyframe=True)
    vp8 = codec_for("vp8")
    assert vp8.keyframe_size(payloads[0]) == (width, height)
    assert all(vp8.keyframe_size(later) is None for later in payloads[1:])  # later packets of the frame
    later, _ = Vp8Encoder().encode(frame(width, height, 1), force_keyframe=False)
    assert vp8.keyframe_size(later[0]) == (width, height)  # the encoder's first frame is a keyframe anyway


def simulcast_packets(sizes: list[tuple[int, int]], frames: int, codec: str) -> list[list[RtpPacket]]:
    """Each layer's RTP packets for ``frames`` frames (the first a keyframe), from a real encoder."""
    out = []
    for layer, (width, height) in enumerate(sizes):
        encoder = H264Encoder() if codec == "h264" else Vp8Encoder()
        packets, seq = [], 1000 * layer
        for index in range(frames):
            payloads, timestamp = encoder.encode(frame(width, height, index), force_keyframe=index == 0)
            for i, payload in enumerate(payloads):
                p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp, ssrc=500 + layer)
                p.marker, p.payload, seq = int(i == len(payloads) - 1), payload, seq + 1
                packets.append(p)
        out.append(packets)
    return out


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_an_obs_style_offer_listing_full_size_first_gives_the_top_layer_to_who_asks_for_it(codec):
    # OBS 31's WHIP simulcast: rid "0" is the full picture, "1" and "2" smaller, in that order in the offer.
    sizes = [(640, 360), (426, 240), (214, 120)]
    plis: list[int] = []
    track = PublishedTrack("video", "t", "p", plis.append)
    track.set_layers(3)
    top = track.add_down_track(layer=2)
    wire = Wire()
    top.bind(PARAMS, wire, lambda *a: None)
    streams = simulcast_packets(sizes, 6, codec)

    def publish(first: int, frames: int) -> None:
        for index in range(first, first + frames):  # frame by frame, each layer's packets of it in order
            for source, packets in enumerate(streams):
                for p in packets:
                    if (p.timestamp - packets[0].timestamp) // 3000 == index:
                        track.on_packet(codec.upper(), 90000, p, source)

    publish(0, 1)  # each layer's first keyframe: the sizes become known as they come
    assert [s.source for s in track.layers] == [2, 1, 0]  # ranked lowest first
    assert track.top_source == 0
    await asyncio.sleep(0.15)  # the top layer's keyframe came before it was known to be the top one: asked again
    assert 0 in plis  # keyframe requests name layers as the offer does
    publish(1, 2)
    assert not [p for p in wire.packets if p.payload]  # nothing until that keyframe
    streams = simulcast_packets(sizes, 3, codec)  # the encoders answer with keyframes
    publish(0, 3)
    sent = [p for p in wire.packets if p.payload]
    assert sent and codec_for(codec).keyframe_size(sent[0].payload) == (640, 360)
    assert top.layer == 2 and len({p.ssrc for p in sent}) == 1
    track.close()
