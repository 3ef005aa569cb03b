"""VP9 in RTP (RFC 9628): the payload descriptor (picture id, temporal and spatial layer, the start and end
of each layer frame, inter-picture prediction, the scalability structure) and the uncompressed header's
frame type.

With spatial scalability (SVC, as Chromium's L3T3_KEY and L1T3 send) one RTP stream carries every spatial
layer: a picture is a superframe of up to three layer frames, each its own run of packets (B ... E), the
RTP marker on the last packet of the picture's highest layer. A relay gives a viewer fewer spatial layers
by leaving out the higher layer frames and setting the marker on the last packet it keeps.

What a decoder or a file takes (``assemble``) is the picture's top layer frame and the ones below it that it
is predicted from (the descriptor's D), descriptors cut off, as one VP9 superframe (VP9 bitstream, Annex B):
the frames one after another, then an index of their sizes. With L3T3_KEY (the page's) only a keyframe's
picture needs its lower layers; the others are their top frame alone, which every decoder shows as the one
picture (libvpx shows a superframe's last frame only, FFmpeg's own decoder each shown frame: a keyframe's
three layers are three frames there). aiortc has no VP9 depayloader, so the payloads come here whole.
"""

from __future__ import annotations

from typing import NamedTuple

from rtc.codecs.base import Codec, PayloadInfo

# The first octet's flags.
I_BIT, P_BIT, L_BIT, F_BIT, B_BIT, E_BIT, V_BIT = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02


class Vp9Descriptor(NamedTuple):
    """What one VP9 payload descriptor says."""

    picture_id: tuple[int, int, int] | None  # (offset, width in bytes, value)
    temporal: int | None  # TID
    spatial: int | None  # SID
    switch_up: bool  # U: a temporal switching point
    inter_picture: bool  # P: predicted from an earlier picture (clear: a keyframe's layer frames)
    begins: bool  # B: the first packet of a layer frame
    ends: bool  # E: the last packet of a layer frame
    sizes: tuple[tuple[int, int], ...]  # the scalability structure's layer sizes (V set, with sizes)
    length: int  # octets of descriptor before the VP9 bitstream
    inter_layer: bool = False  # D: predicted from the layer frame below it in the same picture


def vp9_descriptor(payload: bytes) -> Vp9Descriptor | None:
    """Parse ``payload``'s descriptor; None when it is cut short."""
    if not payload:
        return None
    flags, i, n = payload[0], 1, len(payload)
    picture_id = None
    if flags & I_BIT:
        if i >= n:
            return None
        width = 2 if payload[i] & 0x80 else 1
        if i + width > n:
            return None
        value = (payload[i] & 0x7F) << 8 | payload[i + 1] if width == 2 else payload[i] & 0x7F
        picture_id, i = (i, width, value), i + width
    temporal = spatial = None
    switch_up = inter_layer = False
    if flags & L_BIT:
        if i >= n:
            return None
        temporal, switch_up, spatial = payload[i] >> 5, bool(payload[i] & 0x10), payload[i] >> 1 & 0x07
        inter_layer = bool(payload[i] & 0x01)
        i += 1 if flags & F_BIT else 2  # non-flexible mode adds TL0PICIDX
    if flags & F_BIT and flags & P_BIT:  # up to three reference indices, N set while more follow
        for _ in range(3):
            if i >= n:
                return None
            more = payload[i] & 0x01
            i += 1
            if not more:
                break
    sizes: tuple[tuple[int, int], ...] = ()
    if flags & V_BIT:
        parsed = _scalability_structure(payload, i)
        if parsed is None:
            return None
        sizes, i = parsed
    return Vp9Descriptor(picture_id, temporal, spatial, switch_up, bool(flags & P_BIT), bool(flags & B_BIT),
                         bool(flags & E_BIT), sizes, i, inter_layer)


def _scalability_structure(payload: bytes, i: int) -> tuple[tuple[tuple[int, int], ...], int] | None:
    """The SS (RFC 9628 4.2.1): N_S, Y (sizes follow), G (a picture group follows)."""
    if i >= len(payload):
        return None
    head = payload[i]
    layers, with_sizes, with_group = (head >> 5) + 1, bool(head & 0x10), bool(head & 0x08)
    i += 1
    sizes = []
    if with_sizes:
        if i + 4 * layers > len(payload):
            return None
        for k in range(layers):
            at = i + 4 * k
            sizes.append((payload[at] << 8 | payload[at + 1], payload[at + 2] << 8 | payload[at + 3]))
        i += 4 * layers
    if with_group:
        if i >= len(payload):
            return None
        pictures = payload[i]
        i += 1
        for _ in range(pictures):
            if i >= len(payload):
                return None
            i += 1 + (payload[i] >> 2 & 0x03)  # TID|U|R, then R reference differences
    return tuple(sizes), i


class Vp9(Codec):
    name = "vp9"
    identity_parameters = ("profile-id",)  # another profile is another decoder

    def starts_frame(self, payload: bytes) -> bool:
        # A picture starts with the first packet of its lowest layer frame.
        d = vp9_descriptor(payload)
        return d is not None and d.begins and not d.spatial

    def starts_keyframe(self, payload: bytes, previous_marker: bool) -> bool:
        d = vp9_descriptor(payload)
        return d is not None and d.begins and not d.spatial and not d.inter_picture

    def keyframe_size(self, payload: bytes) -> tuple[int, int] | None:
        d = vp9_descriptor(payload)
        return d.sizes[-1] if d is not None and d.sizes else None

    def is_keyframe(self, frame: bytes) -> bool:
        # The uncompressed header (VP9 bitstream 6.2): frame_marker (2 bits, 0b10), profile (2 bits; a
        # reserved zero after them for profile 3), show_existing_frame, then frame_type (0: key).
        if not frame or frame[0] >> 6 != 0b10:
            return False
        profile = (frame[0] >> 5 & 1) | (frame[0] >> 3 & 2)
        bit = 3 if profile < 3 else 2  # the bit (from the right of the first octet) of show_existing_frame
        if frame[0] >> bit & 1:
            return False
        return not frame[0] >> (bit - 1) & 1

    def describe(self, payload: bytes) -> PayloadInfo:
        d = vp9_descriptor(payload)
        if d is None:
            return PayloadInfo(None, None)
        return PayloadInfo(d.picture_id, d.temporal, d.spatial, d.ends)

    def assemble(self, payloads: list[bytes]) -> bytes:
        return superframe(layer_frames(payloads))

    def with_picture_id(self, payload: bytes, picture_id: tuple[int, int, int], value: int) -> bytes:
        offset, width, _ = picture_id
        if width == 2:
            return payload[:offset] + bytes((0x80 | (value >> 8) & 0x7F, value & 0xFF)) + payload[offset + 2:]
        return payload[:offset] + bytes((value & 0x7F,)) + payload[offset + 1:]


def layer_frames(payloads: list[bytes]) -> list[bytes]:
    """A picture's payloads (descriptors included, in order) as the layer frames its top one needs, lowest
    first: a frame begins at a payload with B set; below the top, a frame is kept while the one above it is
    predicted from it (D). A payload whose descriptor is cut short is left out."""
    frames: list[tuple[bytearray, bool]] = []  # (bitstream, predicted from the frame below)
    for payload in payloads:
        d = vp9_descriptor(payload)
        if d is None:
            continue
        if d.begins or not frames:
            frames.append((bytearray(), d.inter_layer))
        frames[-1][0].extend(payload[d.length:])
    kept: list[bytes] = []
    needed = True
    for bitstream, inter_layer in reversed(frames):
        if needed and bitstream:
            kept.append(bytes(bitstream))
        needed = needed and inter_layer
    return kept[::-1]


def superframe(frames: list[bytes]) -> bytes:
    """``frames`` as one VP9 superframe (Annex B): a single frame as it is, several followed by the index
    (marker 0b110, bytes per size - 1, frames - 1; each size little-endian; the marker again)."""
    if len(frames) <= 1:
        return frames[0] if frames else b""
    largest = max(len(frame) for frame in frames)
    width = 1 if largest < 1 << 8 else 2 if largest < 1 << 16 else 3 if largest < 1 << 24 else 4
    marker = 0b11000000 | (width - 1) << 3 | (len(frames) - 1)
    index = bytes([marker]) + b"".join(len(frame).to_bytes(width, "little") for frame in frames) + bytes([marker])
    return b"".join(frames) + index
