"""The async client library for the message channel, used by the CLI, the load tests and the tests.

``LiveClient`` connects, joins, keeps a clock-offset estimate to the server (ping/pong, minimum-RTT
sample), stamps what it sends with the server-clock time, measures the end-to-end latency of what it
receives, and — with ``reconnect=True`` — reconnects with exponential backoff and resumes by epoch and
sequence number so no durable event is missed or repeated.

    async with LiveClient(url, "demo", token=tok) as client:
        await client.comment("hello")
        async for event in client.events():
            print(event["type"], event.get("latency_ms"))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from protocol import (
    DURABLE_KINDS,
    ClockEstimate,
    CloseCode,
    Encoding,
    ErrorCode,
    decode,
    encode,
    now_ms,
)

log = logging.getLogger(__name__)

# Close codes after which reconnecting cannot help.
_FINAL_CLOSE_CODES = {CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.UNKNOWN_ROOM, CloseCode.NORMAL}


# Join errors after which retrying cannot help. (`unknown_room` on a *re*join is not one of them: the room
# may come back — a server restarted, a host reconnecting — and the client keeps trying; see docs/protocol.md.)
_FINAL_JOIN_ERRORS = {ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.REVOKED, ErrorCode.FORBIDDEN,
                      ErrorCode.WRONG_ROOM}

# Messages that answer a request (matched by `id`) rather than being events.
_REPLY_TYPES = frozenset({"ack", "error", "pong", "answer", "closed_media", "ok"})


class ServerError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')}: {message.get('message')}")
        code = message.get("code")
        self.code: ErrorCode | str | None = code
        if isinstance(code, str) and code in ErrorCode._value2member_map_:
            self.code = ErrorCode(code)
        self.frame = message


class ConnectionClosed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"connection closed (code {code})")
        self.code = code


class LiveClient:
    def __init__(self, url: str | Sequence[str], room: str, token: str | None = None, *, name: str | None = None,
                 encoding: Encoding = Encoding.JSON, reconnect: bool = False, max_backoff: float = 5.0,
                 queue_size: int = 10_000, http: aiohttp.ClientSession | None = None,
                 source: str | None = None, device: str | None = None) -> None:
        # Several node URLs (nodes sharing rooms through Redis): a reconnect that fails on one moves on to
        # the next, and resumes there by sequence number.
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("LiveClient needs at least one URL")
        self.url = self.urls[0]
        self.room = room
        self.source = source  # analytics: where this viewer came from, and an anonymous viewer's device id
        self.device = device
        self.token = token
        self.name = name
        self.encoding = encoding
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.clock = ClockEstimate()
        self.joined: dict[str, Any] | None = None
        self.epoch: str | None = None
        self.seq = 0
        self.reconnects = 0
        self.close_code: int | None = None
        self._http = http
        self._own_http = http is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(queue_size)
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self._closed

    @property
    def user(self) -> str:
        """Who the server says we are in the room (the token's user, or an ``anon-`` id); "" before joining."""
        return self.joined["user"] if self.joined else ""

    @property
    def state(self) -> dict[str, Any]:
        """The room's state as of the last ``joined`` (publishers, stage, PK, pinned note, product)."""
        return self.joined["state"] if self.joined else {}

    # -- lifecycle --------------------------------------------------------------------------------------

    async def __aenter__(self) -> LiveClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        """Connect and join; returns the ``joined`` message. Raises ServerError if the join is refused."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            joined = await self._open()
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read_loop(), name=f"client-{self.room}")
        return joined

    async def wait_gone(self) -> None:
        """Return once the connection is over for good: closed here, ended by the server with a code after
        which rejoining cannot help (a revoked token), or every rejoin refused."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._own_http and self._http is not None:
            await self._http.close()
        self._fail_pending(ConnectionClosed(self.close_code))

    async def _open(self) -> dict[str, Any]:
        assert self._http is not None
        ws = await self._http.ws_connect(self.url, autoping=True, max_msg_size=0)
        self._ws = ws
        join: dict[str, Any] = {"type": "join", "room": self.room, "id": "join"}
        if self.token:
            join["token"] = self.token
        if self.name:
            join["name"] = self.name
        if self.source:
            join["source"] = self.source
        if self.device:
            join["device"] = self.device
        if self.epoch is not None:
            join["resume"] = {"epoch": self.epoch, "seq": self.seq}
        try:
            await self._send_raw(join)
            # Read until the answer to the join: an error, or `joined` followed by the recovered events.
            while True:
                message = await self._receive_one(ws)
                if message is None:
                    raise ConnectionClosed(ws.close_code)
                if message["type"] == "error":
                    raise ServerError(message)
                if message["type"] == "joined":
                    break
        except BaseException:
            await ws.close()
            raise
        if self.joined is not None:
            self.reconnects += 1
        self.joined = message
        if not message.get("recovered"):
            self.seq = message["seq"]  # a fresh view: history before this point is the state's business
        self.epoch = message["epoch"]
        self._connected.set()
        await self._event(message)
        await self._measure_clock(ws)
        return message

    async def _measure_clock(self, ws: aiohttp.ClientWebSocketResponse, samples: int = 3) -> None:
        # Pongs come back through the read loop after connect; here they are read inline.
        for _ in range(samples):
            sent = now_ms()
            await self._send_raw({"type": "ping", "id": "clock", "ts": sent})
            while True:
                message = await self._receive_one(ws)
                if message is None:
                    return
                if message["type"] == "pong" and message.get("id") == "clock":
                    self.clock.add_sample(sent, message["server_ts"], now_ms())
                    break
                await self._dispatch(message)

    # -- sending ----------------------------------------------------------------------------------------

    async def _send_raw(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionClosed(self.close_code)
        data = encode(message, self.encoding)
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    async def send(self, message: dict[str, Any]) -> None:
        """Send a message as is, stamped with the server-clock time ``ts``."""
        message.setdefault("ts", self.clock.server_now())
        await self._send_raw(message)

    async def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send with an ``id`` and wait for the ``ack`` (or raise ServerError on an ``error``)."""
        ref = message.setdefault("id", next(self._ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await self.send(message)
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(ref, None)

    async def comment(self, text: str) -> dict[str, Any]:
        return await self.request({"type": "comment", "text": text})

    async def like(self, count: int = 1) -> None:
        await self.send({"type": "like", "count": count})

    async def push_product(self, product: dict[str, Any]) -> dict[str, Any]:
        return await self.request({"type": "product", "product": product})

    async def announce(self, text: str, pinned: bool = False) -> dict[str, Any]:
        return await self.request({"type": "announce", "text": text, "pinned": pinned})

    async def ping(self) -> float:
        """Round-trip time in ms; also refines the clock estimate."""
        sent = now_ms()
        reply = await self.request({"type": "ping", "ts": sent})
        received = now_ms()
        self.clock.add_sample(sent, reply["server_ts"], received)
        return received - sent

    # -- receiving --------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every message that is not a reply to a request, in order; ends when the client closes."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def next_event(self, *types: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event of one of ``types`` (any type if none), skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._events.get()
                if event is None:
                    raise ConnectionClosed(self.close_code)
                if not types or event["type"] in types:
                    return event

    async def _receive_one(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            message, _ = decode(msg.data)
            return message
        self.close_code = ws.close_code
        return None

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in _REPLY_TYPES and message.get("id") in self._pending:
            future = self._pending[message["id"]]
            if not future.done():
                if kind == "error":
                    future.set_exception(ServerError(message))
                else:
                    future.set_result(message)
            return
        if kind in DURABLE_KINDS:
            self.seq = max(self.seq, message["seq"])
            self.epoch = message["epoch"]
            sent = message.get("ts")
            if sent is not None:
                message["latency_ms"] = self.clock.server_now() - sent
        await self._event(message)

    async def _event(self, message: dict[str, Any]) -> None:
        if self._events.full():
            self._events.get_nowait()  # a client that does not read loses the oldest, not the newest
        self._events.put_nowait(message)

    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            while True:
                message = await self._receive_one(ws)
                if message is None:
                    break
                await self._dispatch(message)
            self._connected.clear()
            self._fail_pending(ConnectionClosed(self.close_code))
            if self._closed or not self.reconnect or self.close_code in _FINAL_CLOSE_CODES:
                break
            if not await self._reconnect():
                break
        self._end_events()

    async def _reconnect(self) -> bool:
        """Reconnect and rejoin with backoff until it works (True) or cannot (False). A node that cannot be
        reached (or refuses with a retryable error) makes the next try go to the next URL."""
        backoff = 0.1
        attempt = 0
        while not self._closed:
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(self.max_backoff, backoff * 2)
            if attempt:
                self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
            attempt += 1
            try:
                await self._open()
                return True
            except ServerError as exc:
                if exc.code in _FINAL_JOIN_ERRORS:
                    log.warning("rejoin refused for good", extra={"room": self.room, "error": str(exc)})
                    return False
                log.info("rejoin refused; retrying", extra={"room": self.room, "error": str(exc), "url": self.url})
            except (aiohttp.ClientError, ConnectionClosed, OSError, TimeoutError) as exc:
                log.info("reconnect failed", extra={"room": self.room, "error": repr(exc), "url": self.url})
        return False

    def _end_events(self) -> None:
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(None)  # ends events()

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
