"""The /ws connection loop: one WebSocket from accept to close.

It bounds connections per address, gives a connection ``join_timeout`` to join, decodes each frame,
applies the size limit (SDP-carrying messages may be larger), validates it against the protocol and
hands it to the dispatch table. A refused message gets an ``error`` frame with its code and is counted;
a connection that keeps sending bad messages is closed; a failed join closes with the matching code.
``join``, ``ping`` and ``leave`` are handled here (they concern the connection itself).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import socket
import time
from collections import Counter
from typing import Any

from aiohttp import WSMsgType, web

from protocol import (
    BAD_INPUT_CODES,
    MEDIA_KINDS,
    CloseCode,
    Encoding,
    ErrorCode,
    ProtocolError,
    decode,
    pong_message,
    safe_ref,
    validate_client_message,
    verify_token,
)
from signaling.brokers import StreamPosition
from signaling.config import LimitsConfig
from signaling.dispatch import Dispatcher, Route
from signaling.hub import Hub
from signaling.membership import Membership
from signaling.metrics import ServerMetrics
from signaling.session import Session

log = logging.getLogger(__name__)

_JOIN_FAILURE_CLOSE = {
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_EXPIRED: CloseCode.UNAUTHORIZED,
    ErrorCode.REVOKED: CloseCode.UNAUTHORIZED,
    ErrorCode.WRONG_ROOM: CloseCode.FORBIDDEN,
    ErrorCode.FORBIDDEN: CloseCode.FORBIDDEN,  # a private call room that is not yours (or has ended)
    ErrorCode.UNKNOWN_ROOM: CloseCode.UNKNOWN_ROOM,
    ErrorCode.REMOVED: CloseCode.REMOVED,
}


class Connections:
    """Accepts WebSockets and runs each one's loop."""

    def __init__(self, limits: LimitsConfig, secret: str, hub: Hub, membership: Membership,
                 metrics: ServerMetrics) -> None:
        self.limits = limits
        self.secret = secret
        self.hub = hub
        self.membership = membership
        self.metrics = metrics
        self.by_ip: Counter[str] = Counter()
        # Session ids: a random prefix per process (unique among nodes) and a counter (no syscall per join).
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.dispatcher: Dispatcher | None = None  # set once every part's handlers exist (app wiring)

    def routes(self) -> dict[str, Route]:
        return {"join": Route(self.join, needs_join=False), "ping": Route(self.ping, needs_join=False),
                "leave": Route(self.leave)}

    def count_error(self, code: ErrorCode) -> None:
        self.metrics.errors.labels(str(code)).inc()

    # -- the loop ---------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        limits = self.limits
        # compress=False: the same frame bytes go to every viewer; per-connection deflate would defeat that.
        ws = web.WebSocketResponse(compress=False, max_msg_size=limits.max_frame_bytes, heartbeat=30.0)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # the client left during the handshake
            return ws
        remote = request.remote or "?"
        if limits.socket_send_buffer:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
        session = Session(f"{self._id_prefix}{next(self._ids):x}", ws, transport, remote, limits, self.hub.kick)
        self.by_ip[remote] += 1
        try:
            if limits.max_conns_per_ip and self.by_ip[remote] > limits.max_conns_per_ip:
                self.count_error(ErrorCode.TOO_MANY_CONNECTIONS)
                session.send_error(ErrorCode.TOO_MANY_CONNECTIONS, "too many connections from your address")
                await session.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
                return ws
            await self._loop(session)
        finally:
            self.by_ip[remote] -= 1
            if self.by_ip[remote] <= 0:
                del self.by_ip[remote]
            self.membership.leave(session)
        return ws

    async def _loop(self, session: Session) -> None:
        ws, limits = session.ws, self.limits
        joined_by = time.monotonic() + limits.join_timeout
        while not ws.closed:
            timeout = None if session.joined else max(0.0, joined_by - time.monotonic())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                self.count_error(ErrorCode.NOT_JOINED)
                session.send_error(ErrorCode.NOT_JOINED, "join a room first")
                await session.close(CloseCode.JOIN_TIMEOUT, "no join in time")
                return
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await self._on_frame(session, msg.data)
            elif msg.type is WSMsgType.ERROR:
                # aiohttp already closed the socket (1009 for frames over max_frame_bytes).
                too_big = getattr(msg.data, "code", None) == CloseCode.MESSAGE_TOO_BIG
                self.metrics.disconnects.labels("frame_too_big" if too_big else "read_error").inc()
                if too_big:
                    self.count_error(ErrorCode.TOO_LARGE)
                return
            else:  # CLOSE / CLOSING / CLOSED
                return
            if limits.max_errors_per_conn and session.bad_input.exhausted:
                await self.hub.disconnect(session, CloseCode.TOO_MANY_ERRORS, "too many malformed messages")
                return

    async def _on_frame(self, session: Session, data: str | bytes) -> None:
        assert self.dispatcher is not None
        ref = None
        if not session.joined:
            # Until a join fixes it, answer in the encoding of the frame at hand.
            session.encoding = Encoding.JSON if isinstance(data, str) else Encoding.MSGPACK
        try:
            raw = decode(data)[0]
            if len(data) > self.limits.max_message_bytes and raw.get("type") not in MEDIA_KINDS:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"message larger than {self.limits.max_message_bytes} bytes",
                                    safe_ref(raw))
            message = validate_client_message(raw)
            ref = message.get("id")
            await self.dispatcher.dispatch(session, message)
        except ProtocolError as exc:
            session.errors += 1
            if exc.code in BAD_INPUT_CODES:
                session.bad_input.take()
            self.count_error(exc.code)
            session.send_error(exc.code, exc.message, exc.ref if exc.ref is not None else ref, exc.retry_after_ms)
            close = _JOIN_FAILURE_CLOSE.get(exc.code)
            if close is not None and not session.joined:
                await session.close(close, exc.message)
        except Exception:
            # A bug of ours: the client is told, the connection and everyone else carry on.
            log.exception("message handler failed", extra={"session": session.id, "room": session.room})
            self.count_error(ErrorCode.INTERNAL)
            session.send_error(ErrorCode.INTERNAL, "internal error; the message was not applied", ref)

    # -- the connection's own messages ------------------------------------------------------------------------

    async def join(self, session: Session, message: dict[str, Any]) -> None:
        token = message.get("token")
        grant = verify_token(self.secret, token) if token else None
        resume = message.get("resume")
        position = StreamPosition(resume["seq"], resume["epoch"]) if resume else None
        await self.membership.join(session, message["room"], grant, message.get("name"), position, message.get("id"),
                                   history=message.get("history", 0), source=message.get("source"),
                                   device=message.get("device"))

    async def ping(self, session: Session, message: dict[str, Any]) -> None:
        session.send(pong_message(message.get("id"), message.get("ts")))

    async def leave(self, session: Session, message: dict[str, Any]) -> None:
        self.membership.leave(session)
        await session.close(CloseCode.NORMAL, "left")
