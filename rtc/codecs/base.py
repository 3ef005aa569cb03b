"""The questions the relay asks of a codec's RTP payloads, and the answers for a codec it does not parse."""

from __future__ import annotations

from typing import NamedTuple


class PayloadInfo(NamedTuple):
    """What a payload descriptor says, read once per packet: where its picture id is and its value
    (offset, width in bytes, value; None without one), its temporal layer (None without one), and for a
    codec with spatial layers in one stream (VP9 SVC) its spatial layer and whether it ends its layer frame."""

    picture_id: tuple[int, int, int] | None
    temporal: int | None
    spatial: int | None = None
    layer_end: bool = False


NO_INFO = PayloadInfo(None, None)


class Codec:
    """A codec the relay forwards without parsing: every packet is a frame of its own and a decoding entry
    point (audio such as Opus). Subclasses say otherwise for what they know (rtc/codecs/vp8.py, h264.py)."""

    name = ""
    identity_parameters: tuple[str, ...] = ()  # fmtp parameters that make two offers of it different codecs

    def starts_frame(self, payload: bytes) -> bool:
        """Whether the payload certainly begins a frame (unknown codecs: never certain)."""
        return False

    def starts_keyframe(self, payload: bytes, previous_marker: bool) -> bool:
        """Whether the payload is the first packet of a keyframe: where a subscriber can start decoding.
        ``previous_marker``: the packet before it ended a frame."""
        return bool(payload)

    def is_keyframe(self, frame: bytes) -> bool:
        """Whether an assembled frame (as aiortc's depayloader gives it) decodes on its own."""
        return True

    def frame_size(self, keyframe: bytes) -> tuple[int, int] | None:
        """(width, height) a keyframe says of itself, where the bitstream says it cheaply; else None."""
        return None

    def keyframe_size(self, payload: bytes) -> tuple[int, int] | None:
        """(width, height) the first packet of a keyframe (as ``starts_keyframe`` found it) says, where it
        says it; else None. What tells simulcast layers apart when their rids do not."""
        return None

    def describe(self, payload: bytes) -> PayloadInfo:
        """The payload descriptor's picture id and temporal layer."""
        return NO_INFO

    def with_picture_id(self, payload: bytes, picture_id: tuple[int, int, int], value: int) -> bytes:
        """``payload`` with its picture id (as ``describe`` found it) set to ``value``."""
        return payload

    def assemble(self, payloads: list[bytes]) -> bytes:
        """One frame, as a decoder or a file takes it, from the depayloaded payloads of its packets in order
        (what aiortc's depayloader made of each: VP8 and H.264 have theirs, so joining them is enough)."""
        return b"".join(payloads)
