"""What the relay must know of codec payloads without decoding them: where a frame starts in an RTP
payload, and whether an encoded frame is a keyframe (a decoding entry point)."""

from __future__ import annotations


def packet_starts_frame(codec_name: str, payload: bytes) -> bool:
    """Whether an RTP payload certainly begins a frame.

    VP8 (RFC 7741): the payload descriptor's S bit with partition index 0. H.264 (RFC 6184): a packet
    that opens with SPS/PPS (alone or aggregated in STAP-A), the usual start of a keyframe's access unit.
    """
    if not payload:
        return False
    name = codec_name.lower()
    if name == "vp8":
        return bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0
    if name == "h264":
        nal_type = payload[0] & 0x1F
        if nal_type == 24 and len(payload) > 3:  # STAP-A: look at the first aggregated NAL unit
            nal_type = payload[3] & 0x1F
        return nal_type in (7, 8)
    return False


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether an encoded frame can be decoded on its own."""
    name = codec_name.lower()
    if name == "vp8":
        # RFC 6386 9.1: the frame tag's first bit is 0 for a key frame.
        return bool(data) and not (data[0] & 0x01)
    if name == "h264":
        # Annex-B: an IDR slice (NAL type 5) or SPS (7) makes a decoding entry point.
        i = 0
        while True:
            i = data.find(b"\x00\x00\x01", i)
            if i < 0 or i + 3 >= len(data):
                return False
            if data[i + 3] & 0x1F in (5, 7):
                return True
            i += 3
    return True  # audio: every Opus packet stands alone
