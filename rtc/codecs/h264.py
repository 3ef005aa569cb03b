"""H.264 in RTP (RFC 6184): NAL unit types in single NAL, STAP-A and FU-A payloads, and Annex-B frames."""

from __future__ import annotations

from rtc.codecs.base import Codec

SPS, PPS, IDR, STAP_A, FU_A = 7, 8, 5, 24, 28


class H264(Codec):
    name = "h264"
    identity_parameters = ("profile-level-id", "packetization-mode")  # RFC 6184 8.1: a profile is another decoder

    def starts_frame(self, payload: bytes) -> bool:
        # A packet that opens with SPS/PPS (alone or first in a STAP-A): the usual start of a keyframe's
        # access unit. Other frames' starts are not certain from one packet.
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type == STAP_A and len(payload) > 3:
            nal_type = payload[3] & 0x1F
        return nal_type in (SPS, PPS)

    def starts_keyframe(self, payload: bytes, previous_marker: bool) -> bool:
        # SPS/PPS (alone or first in a STAP-A), or the first fragment or single NAL of an IDR slice right
        # after a frame ended.
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type == STAP_A and len(payload) > 3:
            return payload[3] & 0x1F in (IDR, SPS, PPS)
        if nal_type in (SPS, PPS):
            return True
        if nal_type == FU_A and len(payload) > 1:
            return bool(payload[1] & 0x80) and payload[1] & 0x1F == IDR and previous_marker
        return nal_type == IDR and previous_marker

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
