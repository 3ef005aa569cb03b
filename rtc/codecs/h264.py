"""H.264 in RTP (RFC 6184): NAL unit types in single NAL, STAP-A and FU-A payloads, Annex-B frames, and the
picture size a sequence parameter set (ITU-T H.264 7.3.2.1.1) declares."""

from __future__ import annotations

from rtc.codecs.base import Codec

SPS, PPS, IDR, STAP_A, FU_A = 7, 8, 5, 24, 28
SEI, AUD = 6, 9  # what may open an access unit before its parameter sets and slices
# Profiles whose SPS carries chroma format, bit depths and scaling matrices (H.264 7.3.2.1.1).
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


class _Bits:
    """An RBSP read bit by bit: fixed-width fields and Exp-Golomb codes (H.264 9.1)."""

    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._left = len(rbsp) * 8

    def u(self, n: int) -> int:
        if n > self._left:
            raise ValueError("SPS cut short")
        self._left -= n
        return (self._value >> self._left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The NAL unit's payload without its header byte and emulation prevention bytes (00 00 03 -> 00 00)."""
    return nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


def sps_size(nal: bytes) -> tuple[int, int] | None:
    """(width, height) of the pictures a sequence parameter set NAL unit declares, cropping applied; None
    for anything that is not a well-formed SPS."""
    if not nal or nal[0] & 0x1F != SPS:
        return None
    try:
        bits = _Bits(_rbsp(nal))
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        chroma_format = 1
        if profile in _HIGH_PROFILES:
            chroma_format = bits.ue()
            if chroma_format == 3:
                bits.u(1)  # separate_colour_plane_flag
            bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass_flag
            if bits.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format != 3 else 12):
                    if bits.u(1):
                        _skip_scaling_list(bits, 16 if i < 6 else 64)
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1), bits.se(), bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue(), bits.u(1)  # max_num_ref_frames, gaps_in_frame_num_value_allowed_flag
        width_mbs, height_units = bits.ue() + 1, bits.ue() + 1
        frame_mbs_only = bits.u(1)
        if not frame_mbs_only:
            bits.u(1)  # mb_adaptive_frame_field_flag
        bits.u(1)  # direct_8x8_inference_flag
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
    except ValueError:
        return None
    # Crop units (H.264 7.4.2.1.1): 4:2:0 halves both chroma dimensions, 4:2:2 only the width.
    unit_x = 2 if chroma_format in (1, 2) else 1
    unit_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    return (width, height) if width > 0 and height > 0 else None


def payload_nal_units(payload: bytes) -> list[bytes]:
    """The whole NAL units an RTP payload carries: itself (single NAL) or each of a STAP-A's; none for a
    fragment."""
    if not payload:
        return []
    nal_type = payload[0] & 0x1F
    if nal_type == FU_A:
        return []
    if nal_type != STAP_A:
        return [payload]
    units, i = [], 1
    while i + 2 <= len(payload):
        size = int.from_bytes(payload[i:i + 2], "big")
        units.append(payload[i + 2:i + 2 + size])
        i += 2 + size
    return units


class H264(Codec):
    name = "h264"
    identity_parameters = ("profile-level-id", "packetization-mode")  # RFC 6184 8.1: a profile is another decoder

    def starts_frame(self, payload: bytes) -> bool:
        # A packet that opens with SPS/PPS, an SEI or an access unit delimiter (alone or first in a STAP-A):
        # each comes before an access unit's slices (H.264 7.4.1.2.3). Other frames' starts are not certain
        # from one packet.
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type == STAP_A and len(payload) > 3:
            nal_type = payload[3] & 0x1F
        return nal_type in (SPS, PPS, SEI, AUD)

    def starts_keyframe(self, payload: bytes, previous_marker: bool) -> bool:
        # SPS/PPS (alone or first in a STAP-A), or the first fragment or single NAL of an IDR slice right
        # after a frame ended; or a STAP-A that opens an access unit with an SEI or a delimiter and holds
        # its parameter sets or IDR: x264's first keyframe carries its version in an SEI ahead of them
        # (OBS and FFmpeg pushes), and missing it cost every early viewer a GOP.
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type == STAP_A and len(payload) > 3:
            types = [unit[0] & 0x1F for unit in payload_nal_units(payload) if unit]
            if types and types[0] in (SEI, AUD):
                return any(t in (IDR, SPS, PPS) for t in types)
            return payload[3] & 0x1F in (IDR, SPS, PPS)
        if nal_type in (SPS, PPS):
            return True
        if nal_type == FU_A and len(payload) > 1:
            return bool(payload[1] & 0x80) and payload[1] & 0x1F == IDR and previous_marker
        return nal_type == IDR and previous_marker

    def keyframe_size(self, payload: bytes) -> tuple[int, int] | None:
        for nal in payload_nal_units(payload):
            if nal and nal[0] & 0x1F == SPS:
                return sps_size(nal)
        return None

    def is_keyframe(self, frame: bytes) -> bool:
        # Annex-B: an IDR slice or SPS makes a decoding entry point.
        i = 0
        while True:
            i = frame.find(b"\x00\x00\x01", i)
            if i < 0 or i + 3 >= len(frame):
                return False
            if frame[i + 3] & 0x1F in (IDR, SPS):
                return True
            i += 3

    def frame_size(self, keyframe: bytes) -> tuple[int, int] | None:
        i = 0
        while True:
            i = keyframe.find(b"\x00\x00\x01", i)
            if i < 0 or i + 3 >= len(keyframe):
                return None
            if keyframe[i + 3] & 0x1F == SPS:
                end = keyframe.find(b"\x00\x00\x01", i + 3)
                return sps_size(keyframe[i + 3:end if end >= 0 else len(keyframe)].rstrip(b"\x00"))
            i += 3
