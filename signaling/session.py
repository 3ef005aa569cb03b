"""One client connection: who it is, where it writes, and how far behind it may fall.

The outbound path is bounded without a per-connection queue or task: events are written straight to
the connection's transport, and the bytes that transport holds in user space are the backlog. Past the
soft limit, droppable events are skipped (and counted); past the hard limit the connection is closed
with ``SLOW_CONSUMER`` and the client resumes by sequence number. A slow viewer therefore costs the
room one ``get_write_buffer_size()`` call per event and never makes anyone wait.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from protocol import CloseCode, Encoding, ErrorCode, Grant, Ref, Role, encode, error_message
from signaling.config import LimitsConfig
from signaling.outbound import OutboundBatch, OutboundEvent, websocket_frame
from signaling.ratelimit import TokenBucket

log = logging.getLogger(__name__)


class Delivery(enum.Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"
    DROPPED_SLOW = "slow"
    KICKED = "kicked"
    CLOSED = "closed"
    BUFFERED = "buffered"


class Session:
    def __init__(self, session_id: str, ws: web.WebSocketResponse, transport: asyncio.Transport, remote: str,
                 limits: LimitsConfig, on_kick: Callable[[Session, CloseCode, str], None]) -> None:
        self.id = session_id  # unique room-wide: media ids (seen by every node) start with it
        self.ws = ws
        self.remote = remote
        self.encoding = Encoding.JSON
        self.room: str | None = None
        self.user: str = ""
        self.name: str | None = None
        self._role = Role.VIEWER
        # Told of every role change while the session is in a room (the room keeps its viewer count).
        self.on_role_change: Callable[[Session, Role, Role], None] | None = None
        self.anonymous = True
        self.grant: Grant | None = None  # the token it joined with (revocation closes the connection)
        self.last_seq = 0
        self.errors = 0
        self.closing = False
        self.media: set[str] = set()  # ids of this connection's media sessions (peer connections)
        self.like_bucket = TokenBucket(limits.like_rate, limits.like_burst)
        self.bad_input = TokenBucket(limits.bad_input_refill, limits.max_errors_per_conn)
        self._transport = transport
        self._soft = limits.send_buffer_soft
        self._hard = limits.send_buffer_hard
        self._on_kick = on_kick
        # While joining, live events are held here until the recovered history has been written.
        self._held: list[OutboundEvent] | None = None

    @property
    def role(self) -> Role:
        return self._role

    @role.setter
    def role(self, role: Role) -> None:
        old, self._role = self._role, role
        if old is not role and self.on_role_change is not None:
            self.on_role_change(self, old, role)

    @property
    def joined(self) -> bool:
        return self.room is not None

    # -- writing ----------------------------------------------------------------------------------------

    def deliver(self, event: OutboundEvent) -> Delivery:
        """Write a shared event to this connection, honouring order, duplicates and the send bounds."""
        if self.closing or self._transport.is_closing():
            return Delivery.CLOSED
        if self._held is not None:
            self._held.append(event)
            return Delivery.BUFFERED
        if event.seq is not None:
            if event.seq <= self.last_seq:
                return Delivery.DUPLICATE
            self.last_seq = event.seq
        backlog = self._transport.get_write_buffer_size()
        if backlog > self._hard:
            self.kick(CloseCode.SLOW_CONSUMER, "too far behind; resume by sequence number")
            return Delivery.KICKED
        if event.droppable and backlog > self._soft:
            return Delivery.DROPPED_SLOW
        self._transport.write(event.frame(self.encoding))
        return Delivery.WRITTEN

    def deliver_batch(self, batch: OutboundBatch) -> Delivery | None:
        """Write a room's batch. Returns WRITTEN when the whole batch went out as shared bytes, None when
        it was delivered event by event (see ``deliver``), or the reason nothing was written."""
        if self.closing or self._transport.is_closing():
            return Delivery.CLOSED
        if self._held is None and (batch.first_seq is None or batch.first_seq > self.last_seq):
            backlog = self._transport.get_write_buffer_size()
            if backlog <= self._soft:
                self._transport.write(batch.frames(self.encoding))
                if batch.last_seq is not None:
                    self.last_seq = batch.last_seq
                return Delivery.WRITTEN
        return None

    def send(self, message: dict[str, Any]) -> None:
        """Write a message for this connection only (replies, errors). Never dropped."""
        if self.closing or self._transport.is_closing():
            return
        data = encode(message, self.encoding)
        if isinstance(data, str):
            self._transport.write(websocket_frame(data.encode(), 0x1))
        else:
            self._transport.write(websocket_frame(data, 0x2))

    def send_error(self, code: ErrorCode, message: str, ref: Ref = None, retry_after_ms: int | None = None) -> None:
        self.send(error_message(code, message, ref, retry_after_ms))

    def hold(self) -> None:
        """Hold live events (see ``release``) while recovery is written."""
        self._held = []

    def release(self) -> list[OutboundEvent]:
        held, self._held = self._held or [], None
        return held

    def kick(self, code: CloseCode, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self._on_kick(self, code, reason)

    async def close(self, code: CloseCode, reason: str, timeout: float = 2.0) -> None:
        """Send a close frame after whatever is buffered; abort if the peer does not drain in time."""
        self.closing = True
        try:
            await asyncio.wait_for(self.ws.close(code=int(code), message=reason.encode()[:120]), timeout)
        except (TimeoutError, ConnectionError):
            pass  # the peer is not reading: nothing more can be told to it
        finally:
            if not self._transport.is_closing():
                self._transport.abort()
