"""The bytes a down-track writes: RTP headers with the subscriber's header extensions, RTX (RFC 4588), RED
(RFC 2198), and the history NACKs and probes are answered from. Pure functions and small stores; no I/O.
"""

from __future__ import annotations

import struct
from typing import Protocol

HEADER = struct.Struct("!BBHII")
_RTX_HEADER = struct.Struct("!BBHIIH")  # an RTX packet's header followed by the original sequence number
HISTORY = 512  # packets a down-track keeps for NACKs: ~1 s of 1.5 Mbit/s video
MAX_REDUNDANCY = 3  # earlier audio packets a RED packet can carry


class SenderLink(Protocol):
    """What a down-track needs of its subscriber's RTP sender: the settled send parameters."""

    ssrc: int
    rtx_ssrc: int
    payload_type: int
    rtx_payload_type: int | None
    mid: str | None
    mid_id: int | None
    abs_send_time_id: int | None
    red_payload_type: int | None
    transport_cc_id: int | None


def abs_send_time(wall: float) -> bytes:
    """abs-send-time: 6.18 fixed-point seconds in 24 bits; only its differences matter to a receiver."""
    return (int(wall * (1 << 18)) & 0xFFFFFF).to_bytes(3, "big")


class HeaderWriter:
    """One subscriber's RTP headers: its SSRC and payload type, and its header extension block (RFC 8285
    one-byte form: the mid; abs-send-time and the transport-wide sequence number when negotiated), built
    once at bind time. The two stamps are the only bytes that change per packet."""

    __slots__ = ("_ast_id", "_tw_id", "ast_at", "first_byte", "head", "length", "payload_type", "ssrc", "tail",
                 "transport_wide", "tw_at")

    def __init__(self, params: SenderLink) -> None:
        self.ssrc, self.payload_type = params.ssrc, params.payload_type
        elements = b""
        if params.mid_id and params.mid:
            mid = params.mid.encode()[:16]
            elements += bytes([(params.mid_id << 4) | (len(mid) - 1)]) + mid
        tw_id = params.transport_cc_id
        self.transport_wide = bool(tw_id)  # the subscriber acknowledges each packet (relay/bwe.py)
        total = len(elements) + (4 if params.abs_send_time_id else 0) + (3 if tw_id else 0)
        self.head = self.tail = self._ast_id = self._tw_id = b""
        if total:
            padding = -total % 4
            self.head = b"\xbe\xde" + struct.pack("!H", (total + padding) // 4) + elements
            self.tail = b"\x00" * padding
            if params.abs_send_time_id:
                self._ast_id = bytes(((params.abs_send_time_id << 4) | 2,))
            if tw_id:
                self._tw_id = bytes(((tw_id << 4) | 1,))
        self.first_byte = 0x90 if self.head else 0x80
        self.ast_at = 12 + len(self.head) + 1  # where abs-send-time's 3 bytes sit in a header
        self.tw_at = 12 + len(self.head) + len(self._ast_id) * 4 + 1  # and the transport-wide number's 2
        self.length = 12 + len(self.head) + len(self.tail) + (4 if self._ast_id else 0) + (3 if tw_id else 0)

    def header(self, seq: int, timestamp: int, marker: int, sent_at: bytes, transport_seq: int = 0) -> bytes:
        """A media packet's header for this subscriber; ``sent_at`` is the abs-send-time value and
        ``transport_seq`` the transport-wide number (each when negotiated). The hot path: one per copy
        forwarded."""
        header = HEADER.pack(self.first_byte, marker << 7 | self.payload_type, seq, timestamp, self.ssrc)
        return header + self._extensions(sent_at, transport_seq) if self.head else header

    def header_as(self, seq: int, timestamp: int, marker: int, sent_at: bytes, payload_type: int | None = None,
                  padding: bool = False, transport_seq: int = 0) -> bytes:
        """A header with another payload type (RED) or the padding bit (a padding-only packet)."""
        first = self.first_byte | 0x20 if padding else self.first_byte
        pt = self.payload_type if payload_type is None else payload_type
        header = HEADER.pack(first, marker << 7 | pt, seq, timestamp, self.ssrc)
        return header + self._extensions(sent_at, transport_seq) if self.head else header

    def _extensions(self, sent_at: bytes, transport_seq: int) -> bytes:
        block = self.head + self._ast_id + sent_at if self._ast_id else self.head
        if self._tw_id:
            block += self._tw_id + transport_seq.to_bytes(2, "big")
        return block + self.tail

    def restamped(self, header: bytes, sent_at: bytes, transport_seq: int = 0) -> bytes:
        """``header`` with a new abs-send-time and transport-wide number (a retransmission leaves now, not
        when the original did)."""
        if self._ast_id:
            header = header[:self.ast_at] + sent_at + header[self.ast_at + 3:]
        if self._tw_id:
            header = header[:self.tw_at] + transport_seq.to_bytes(2, "big") + header[self.tw_at + 2:]
        return header


def rtx_packet(header: bytes, payload: bytes, rtx_payload_type: int, rtx_seq: int, rtx_ssrc: int, seq: int) -> bytes:
    """RFC 4588: the original packet again on the RTX stream; its payload is the original sequence number
    and payload, its header extensions stay."""
    rtx_header = _RTX_HEADER.pack(header[0], (header[1] & 0x80) | rtx_payload_type, rtx_seq,
                                  int.from_bytes(header[4:8], "big"), rtx_ssrc, seq)
    return rtx_header[:12] + header[12:] + rtx_header[12:] + payload


def red_payload(payload_type: int, primary: bytes, timestamp: int, earlier: list[tuple[int, bytes]]) -> bytes:
    """An RFC 2198 payload: ``earlier`` (oldest first, as (timestamp, payload)) as redundant blocks, then
    ``primary``. A block whose timestamp offset or length does not fit the header's 14 or 10 bits is left out."""
    headers, blocks = [], []
    for block_timestamp, block in earlier:
        offset = (timestamp - block_timestamp) & 0xFFFFFFFF
        if 0 < offset < 1 << 14 and len(block) < 1 << 10:
            headers.append(bytes((0x80 | payload_type,)) + (offset << 10 | len(block)).to_bytes(3, "big"))
            blocks.append(block)
    return b"".join(headers) + bytes((payload_type,)) + b"".join(blocks) + primary


class RedPacker:
    """An audio down-track's RED: each Opus packet wrapped with up to ``redundancy`` earlier ones, so a
    packet lost on the way is rebuilt from the next one(s) with no round trip."""

    __slots__ = ("_earlier", "payload_type", "primary_type")

    def __init__(self, payload_type: int, primary_type: int) -> None:
        self.payload_type, self.primary_type = payload_type, primary_type
        self._earlier: list[tuple[int, bytes]] = []  # the last packets' (timestamp, payload)

    def pack(self, primary: bytes, timestamp: int, redundancy: int) -> bytes:
        payload = red_payload(self.primary_type, primary, timestamp, self._earlier[-redundancy:] if redundancy else [])
        self._earlier.append((timestamp, primary))
        if len(self._earlier) > MAX_REDUNDANCY:
            del self._earlier[0]
        return payload

    def reset(self) -> None:
        """A restart: redundancy never reaches back across it."""
        self._earlier.clear()


class SendHistory:
    """The last ``HISTORY`` packets sent, by sequence number: the header as sent and the payload (the
    source packet's own bytes, shared with every other subscriber: a history costs headers, not copies of
    the video). Three flat lists, not a tuple per packet: nothing for the GC to track."""

    __slots__ = ("_header", "_payload", "_seq")

    def __init__(self) -> None:
        self._seq: list[int] = [-1] * HISTORY
        self._header: list[bytes] = [b""] * HISTORY
        self._payload: list[bytes] = [b""] * HISTORY

    def put(self, seq: int, header: bytes, payload: bytes) -> None:
        slot = seq % HISTORY
        self._seq[slot], self._header[slot], self._payload[slot] = seq, header, payload

    def has(self, seq: int) -> bool:
        return self._seq[seq % HISTORY] == seq

    def get(self, seq: int) -> tuple[bytes, bytes] | None:
        slot = seq % HISTORY
        if self._seq[slot] != seq:
            return None
        return self._header[slot], self._payload[slot]
