"""A light WebSocket viewer for load tests: an asyncio Protocol that parses frames itself.

aiohttp's client costs a future, a queue hop and a message object per frame; at 50,000 frames a second
that makes the load generator the bottleneck and its backlog shows up as "latency". This sink parses
server frames straight out of ``data_received`` (server frames are never masked), decodes each message
with the protocol module, and hands it to a callback: a few microseconds per frame. It is for load
generation only; real clients use aiohttp (``clients/client.py``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import urllib.parse
from collections.abc import Callable
from typing import Any, cast

from protocol import Encoding, decode, encode

_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def masked_frame(payload: bytes, opcode: int) -> bytes:
    """A client-to-server frame (RFC 6455 requires client frames to be masked)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    # XOR the whole payload with the repeated mask in one big-integer operation.
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return header + mask + body


class SinkProtocol(asyncio.Protocol):
    def __init__(self, url: str, encoding: Encoding, on_message: Callable[[dict[str, Any]], None]) -> None:
        parsed = urllib.parse.urlparse(url)
        self._host = parsed.netloc
        self._path = parsed.path or "/"
        self.encoding = encoding
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass
        self.transport = stream
        key = base64.b64encode(os.urandom(16)).decode()
        stream.write((f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                        .encode())

    def send(self, message: dict[str, Any]) -> None:
        data = encode(message, self.encoding)
        if isinstance(data, str):
            self._write(masked_frame(data.encode(), _OP_TEXT))
        else:
            self._write(masked_frame(data, _OP_BINARY))

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos = 0
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status:
                self.handshake.set_exception(ConnectionError(status.decode(errors="replace")))
                self.close()
                return
            self._upgraded = True
            self.handshake.set_result(None)
            pos = end + 4
        size = len(buf)
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                header = 10
            end = pos + header + length
            if end > size:
                break
            opcode = first & 0x0F
            payload = bytes(buf[pos + header:end])
            pos = end
            if opcode == _OP_BINARY:
                self.on_message(decode(payload)[0])
            elif opcode == _OP_TEXT:
                self.on_message(decode(payload.decode())[0])
            elif opcode == _OP_PING:
                self._write(masked_frame(payload, _OP_PONG))
            elif opcode == _OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                self._write(masked_frame(payload[:2], _OP_CLOSE))
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
