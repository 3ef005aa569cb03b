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


def vp8_descriptor(payload: bytes) -> tuple[tuple[int, int] | None, int | None]:
    """What a VP8 payload descriptor (RFC 7741 4.2) says, read once: where its picture id is (offset, 1 or 2
    bytes; None without one) and its temporal layer (TID 0-3; None without one)."""
    if len(payload) < 2 or not payload[0] & 0x80:  # no X: no extension byte, so neither field
        return None, None
    x, i, where = payload[1], 2, None
    if x & 0x80:  # picture id, 7 or 15 bits
        if len(payload) < 3:
            return None, None
        width = 2 if payload[2] & 0x80 else 1
        where, i = (2, width), 2 + width
    if x & 0x40:  # TL0PICIDX
        i += 1
    return where, (payload[i] >> 6 if x & 0x20 and len(payload) > i else None)


def vp8_picture_id_at(payload: bytes) -> tuple[int, int] | None:
    return vp8_descriptor(payload)[0]


def vp8_temporal_index(payload: bytes) -> int | None:
    return vp8_descriptor(payload)[1]


def packet_starts_keyframe(codec_name: str, payload: bytes, previous_marker: bool) -> bool:
    """Whether an RTP payload is the first packet of a keyframe: where a subscriber can start decoding.

    VP8: the start of partition 0 (S bit, PID 0) whose VP8 header has the P bit clear. H.264: a packet
    opening with SPS/PPS (alone or first in a STAP-A), or the first fragment or single NAL of an IDR
    slice right after a frame ended (``previous_marker``). Audio: every packet."""
    if not payload:
        return False
    name = codec_name.lower()
    if name == "vp8":
        if not payload[0] & 0x10 or payload[0] & 0x07:
            return False
        i = 1
        if payload[0] & 0x80:  # extended control bits
            if len(payload) < 2:
                return False
            x = payload[1]
            i = 2
            if x & 0x80:  # picture id, 7 or 15 bits
                i += 2 if len(payload) > 2 and payload[2] & 0x80 else 1
            if x & 0x40:  # TL0PICIDX
                i += 1
            if x & 0x30:  # TID/Y/KEYIDX
                i += 1
        return len(payload) > i and not payload[i] & 0x01
    if name == "h264":
        nal_type = payload[0] & 0x1F
        if nal_type == 24 and len(payload) > 3:  # STAP-A
            return payload[3] & 0x1F in (5, 7, 8)
        if nal_type in (7, 8):
            return True
        if nal_type == 28 and len(payload) > 1:  # FU-A: the first fragment of an IDR slice
            return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5 and previous_marker
        return nal_type == 5 and previous_marker
    return True
