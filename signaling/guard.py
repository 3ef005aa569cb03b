"""The guard at the door: TCP connections that have not yet sent one complete HTTP request head.

A slowloris client opens many connections and sends each request a byte at a time, holding sockets and
memory without ever reaching the application (aiohttp has no header timeout, and the per-address limit
of ``connection.py`` counts only WebSockets). The guard wraps each accepted connection's protocol: until
the first request head is complete (``\\r\\n\\r\\n`` seen) the connection is *pending*; at most
``per_address`` connections per remote address may be pending, and each for at most ``timeout`` seconds.
Past either bound the connection is aborted and counted. A head larger than ``MAX_HEAD_BYTES`` (or with a
line longer than aiohttp takes) is answered 431 here, counted, and never reaches aiohttp (which would log a
traceback for each: a log flood for the price of a socket).

After the first head the connection is aiohttp's (keep-alive, WebSocket frames), but for one check: a
connection that asked for a WebSocket has every frame header read as it passes (``FrameScanner``), and a
frame a client sent without a mask is answered as RFC 6455 5.1 says, a close with 1002, and dropped.
A WebSocket that does not join is closed by the join timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

_HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 16 * 1024
MAX_LINE_BYTES = 8190  # aiohttp's own limit per line: past it, its parser raises (and logs) LineTooLong
_CLOSE_1002 = bytes([0x88, 0x02, 0x03, 0xEA])  # a close frame, code 1002 (protocol error), unmasked as a server's


def _too_large_response() -> bytes:
    body = b"request head too large (at most 16 KiB, 8190 bytes a line)\n"
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class FrameScanner:
    """Reads the headers of the WebSocket frames a client sends, skipping their payloads; ``feed`` is False
    once a frame arrives without a mask. It keeps no payload, only the few header bytes it has yet to see."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._skip = 0  # payload bytes of the current frame still to pass

    def feed(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            self._header += view[:1]
            view = view[1:]
            if len(self._header) < 2:
                continue
            if not self._header[1] & 0x80:
                return False  # RFC 6455 5.1: the server MUST close the connection
            short = self._header[1] & 0x7F
            extra = 2 if short == 126 else 8 if short == 127 else 0
            if len(self._header) < 2 + extra + 4:
                continue
            length = short if not extra else int.from_bytes(self._header[2:2 + extra], "big")
            self._header.clear()
            self._skip = length
        return True


class HandshakeGuard:
    def __init__(self, timeout: float, per_address: int, on_reject: Callable[[str], None]) -> None:
        self.timeout = timeout
        self.per_address = per_address  # 0: no cap
        self.pending: Counter[str] = Counter()
        self._on_reject = on_reject  # (reason) for metrics: "too_many_pending" | "handshake_timeout"

    def wrap(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _GuardedProtocol(inner, self)

    def _admit(self, address: str) -> bool:
        if self.per_address and self.pending[address] >= self.per_address:
            self._on_reject("too_many_pending")
            return False
        self.pending[address] += 1
        return True

    def _release(self, address: str) -> None:
        self.pending[address] -= 1
        if self.pending[address] <= 0:
            del self.pending[address]


class _GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; watches only the first request head."""

    def __init__(self, inner: asyncio.Protocol, guard: HandshakeGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._address = ""
        self._pending = False
        self._rejected = False
        self._head = bytearray()  # the first request head, while it is arriving
        self._frames: FrameScanner | None = None  # set once the first head asked for a WebSocket
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else "?"
        self._transport = transport
        if not self._guard._admit(self._address):
            self._rejected = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self._pending = True
        self._timer = asyncio.get_running_loop().call_later(self._guard.timeout, self._expire)
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        if self._pending and self._transport is not None:
            self._guard._on_reject("handshake_timeout")
            self._transport.abort()  # type: ignore[attr-defined]

    def _done_waiting(self) -> None:
        if self._pending:
            self._pending = False
            self._guard._release(self._address)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._pending:
            start = max(0, len(self._head) - 3)
            self._head += data
            end = self._head.find(_HEAD_END, start)
            head = self._head if end < 0 else self._head[:end]
            if len(head) > MAX_HEAD_BYTES or any(len(line) > MAX_LINE_BYTES for line in head.split(b"\r\n")):
                self._refuse("head_too_large", _too_large_response())
                return
            if end >= 0:
                self._done_waiting()
                if b"upgrade: websocket" in bytes(head).lower():
                    self._frames = FrameScanner()
                    self._frames.feed(bytes(self._head[end + 4:]))
                self._head = bytearray()
        elif self._frames is not None and not self._frames.feed(data):
            self._refuse("unmasked_frame", _CLOSE_1002)
            return
        self._inner.data_received(data)

    def _refuse(self, reason: str, answer: bytes) -> None:
        """Answer and drop the connection here; aiohttp hears only that it was lost."""
        self._rejected = True
        self._done_waiting()
        self._guard._on_reject(reason)
        transport = self._transport
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(answer)
            transport.close()
        self._inner.connection_lost(None)

    def eof_received(self) -> bool | None:
        return None if self._rejected else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done_waiting()
        if not self._rejected:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedTCPSite(web.TCPSite):
    """aiohttp's TCPSite with each accepted connection's protocol wrapped by a ``HandshakeGuard``.

    ``TCPSite.start`` has no hook for the protocol factory, so this repeats its few lines (aiohttp 3.x;
    its attribute names are checked by the tests that start every server through this class)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: HandshakeGuard, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self._guard
        self._server = await loop.create_server(
            lambda: guard.wrap(server()), self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
