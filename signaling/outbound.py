"""Events encoded once and written as the same bytes to every connection.

A room's event becomes complete, ready-to-write WebSocket frames: one text frame (JSON) and one binary
frame (msgpack), each built on first use and shared by every connection using that encoding. Writing
an event to a connection is then one ``transport.write`` of shared bytes: no per-viewer encoding, no
per-viewer compression (the server never negotiates permessage-deflate), no per-viewer task.

Events that reach a room within one event-loop iteration form an ``OutboundBatch``: their frames are
joined once per encoding, so a busy room costs one write (one syscall) per viewer per iteration instead
of one per event. An idle room's batch is a single event, sent at the end of the current iteration.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any

from protocol import DROPPABLE_KINDS, Encoding, encode

_OP_TEXT = 0x1
_OP_BINARY = 0x2


def websocket_frame(payload: bytes, opcode: int) -> bytes:
    """An unmasked, final RFC 6455 frame (server to client). aiohttp has no public call that returns
    frame bytes without writing them, and we need the bytes to share them between connections."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


class OutboundEvent:
    """One message to many connections, with its frames cached per encoding."""

    __slots__ = ("_json", "_msgpack", "droppable", "kind", "message", "seq")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self.kind: str = message["type"]
        self.seq: int | None = message.get("seq")
        self.droppable = self.kind in DROPPABLE_KINDS
        self._json: bytes | None = None
        self._msgpack: bytes | None = None

    def frame(self, encoding: Encoding) -> bytes:
        if encoding is Encoding.JSON:
            if self._json is None:
                text = encode(self.message, Encoding.JSON)
                assert isinstance(text, str)
                self._json = websocket_frame(text.encode(), _OP_TEXT)
            return self._json
        if self._msgpack is None:
            data = encode(self.message, Encoding.MSGPACK)
            assert isinstance(data, bytes)
            self._msgpack = websocket_frame(data, _OP_BINARY)
        return self._msgpack


class OutboundBatch:
    """Events for one room from one loop iteration, in publish order, with joined frames per encoding."""

    __slots__ = ("_frames", "events", "first_seq", "has_droppable", "kinds", "last_seq")

    def __init__(self, events: list[OutboundEvent]) -> None:
        self.events = events
        seqs = [e.seq for e in events if e.seq is not None]
        self.first_seq: int | None = seqs[0] if seqs else None
        self.last_seq: int | None = seqs[-1] if seqs else None
        self.kinds = Counter(e.kind for e in events)
        self.has_droppable = any(e.droppable for e in events)
        self._frames: dict[Encoding, bytes] = {}

    def frames(self, encoding: Encoding) -> bytes:
        data = self._frames.get(encoding)
        if data is None:
            if len(self.events) == 1:
                data = self.events[0].frame(encoding)
            else:
                data = b"".join(e.frame(encoding) for e in self.events)
            self._frames[encoding] = data
        return data
