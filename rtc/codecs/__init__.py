"""What the relay must know of each codec's payloads without decoding them: one object per codec behind a
registry (as mediasoup's payload descriptor handlers), so a new codec is a new module here and a line in
``CODECS``, not a string switch in every file that touches a payload.

A ``Codec`` says where a frame and a keyframe start in an RTP payload, whether an assembled frame is a
keyframe, what the payload descriptor says (picture id, temporal layer) and how to rewrite its picture id.
``codec_for(name)`` gives the one for an SDP codec name; names it does not know get ``Codec`` itself, which
treats every packet as its own frame (audio: Opus) and knows no descriptor. The functions below the
registry are the same questions by name, for callers that hold a name, not an object.
"""

from __future__ import annotations

from rtc.codecs.base import Codec, PayloadInfo
from rtc.codecs.h264 import H264
from rtc.codecs.vp8 import Vp8, vp8_descriptor
from rtc.codecs.vp9 import Vp9, vp9_descriptor

__all__ = [
    "CODECS",
    "H264",
    "Codec",
    "PayloadInfo",
    "Vp8",
    "Vp9",
    "codec_for",
    "is_keyframe",
    "packet_starts_frame",
    "packet_starts_keyframe",
    "vp8_descriptor",
    "vp9_descriptor",
]

CODECS: dict[str, Codec] = {"vp8": Vp8(), "vp9": Vp9(), "h264": H264()}
"""Video codecs the relay forwards and understands, by lower-case SDP name."""

_ANY = Codec()


def codec_for(name: str | None) -> Codec:
    """The codec object for an SDP codec name (any case); ``Codec()`` for one this relay does not parse."""
    return CODECS.get(name.lower(), _ANY) if name else _ANY


def packet_starts_frame(codec_name: str, payload: bytes) -> bool:
    return codec_for(codec_name).starts_frame(payload)


def packet_starts_keyframe(codec_name: str, payload: bytes, previous_marker: bool) -> bool:
    return codec_for(codec_name).starts_keyframe(payload, previous_marker)


def is_keyframe(codec_name: str, data: bytes) -> bool:
    return codec_for(codec_name).is_keyframe(data)
