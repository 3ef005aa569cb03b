"""The guard at the door: TCP connections that have not yet sent one complete HTTP request head.

A slowloris client opens many connections and sends each request a byte at a time, holding sockets and
memory without ever reaching the application (aiohttp has no header timeout, and the per-address limit
of ``connection.py`` counts only WebSockets). The guard wraps each accepted connection's protocol: until
the first request head is complete (``\\r\\n\\r\\n`` seen) the connection is *pending*; at most
``per_address`` connections per remote address may be pending, and each for at most ``timeout`` seconds.
Past either bound the connection is aborted and counted. After the first head, the connection is aiohttp's
alone (keep-alive, WebSocket frames); a WebSocket that does not join is closed by the join timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

_HEAD_END = b"\r\n\r\n"


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
        self._tail = b""
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
            window = self._tail + data
            if _HEAD_END in window:
                self._done_waiting()
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

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
