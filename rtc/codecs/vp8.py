"""VP8 in RTP (RFC 7741): the payload descriptor (S bit, partition index, picture id, TL0PICIDX, TID) and
the frame tag's keyframe bit (RFC 6386 9.1)."""

from __future__ import annotations

from rtc.codecs.base import NO_INFO, Codec, PayloadInfo


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


def _frame_offset(payload: bytes) -> int | None:
    """Where the VP8 frame begins in a payload that starts partition 0 (S set, PID 0); None otherwise."""
    if not payload or not payload[0] & 0x10 or payload[0] & 0x07:
        return None
    if not payload[0] & 0x80:
        return 1
    if len(payload) < 2:
        return None
    x, i = payload[1], 2
    if x & 0x80:  # picture id, 7 or 15 bits
        i += 2 if len(payload) > 2 and payload[2] & 0x80 else 1
    if x & 0x40:  # TL0PICIDX
        i += 1
    if x & 0x30:  # TID/Y/KEYIDX
        i += 1
    return i


class Vp8(Codec):
    name = "vp8"

    def starts_frame(self, payload: bytes) -> bool:
        # The S bit with partition index 0.
        return bool(payload) and bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0

    def starts_keyframe(self, payload: bytes, previous_marker: bool) -> bool:
        # The start of partition 0 whose VP8 frame tag has the P bit clear.
        i = _frame_offset(payload)
        return i is not None and len(payload) > i and not payload[i] & 0x01

    def keyframe_size(self, payload: bytes) -> tuple[int, int] | None:
        i = _frame_offset(payload)
        return None if i is None else self.frame_size(payload[i:])

    def is_keyframe(self, frame: bytes) -> bool:
        return bool(frame) and not (frame[0] & 0x01)  # the frame tag's first bit is 0 for a key frame

    def frame_size(self, keyframe: bytes) -> tuple[int, int] | None:
        if len(keyframe) < 10 or not self.is_keyframe(keyframe):
            return None
        # The keyframe header (RFC 6386 9.1): 14-bit width and height after the start code.
        return (int.from_bytes(keyframe[6:8], "little") & 0x3FFF, int.from_bytes(keyframe[8:10], "little") & 0x3FFF)

    def describe(self, payload: bytes) -> PayloadInfo:
        where, temporal = vp8_descriptor(payload)
        if where is None:
            return NO_INFO if temporal is None else PayloadInfo(None, temporal)
        offset, width = where
        value = (payload[offset] & 0x7F) << 8 | payload[offset + 1] if width == 2 else payload[offset] & 0x7F
        return PayloadInfo((offset, width, value), temporal)

    def with_picture_id(self, payload: bytes, picture_id: tuple[int, int, int], value: int) -> bytes:
        offset, width, _ = picture_id
        if width == 2:
            return payload[:offset] + bytes((0x80 | (value >> 8) & 0x7F, value & 0xFF)) + payload[offset + 2:]
        return payload[:offset] + bytes((value & 0x7F,)) + payload[offset + 1:]  # a 7-bit id stays in 7 bits
