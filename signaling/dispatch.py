"""The one dispatch table: every client message type the protocol names (``protocol.CLIENT_MESSAGES``)
maps to exactly one handler here, built from the parts that own the rules (connection, channel, scenes,
media). A type with no handler, or a handler for a type the protocol does not name, fails at start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol import CLIENT_MESSAGES, ErrorCode, ProtocolError
from signaling.metrics import ServerMetrics
from signaling.session import Session

Handler = Callable[[Session, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    needs_join: bool = True  # join and ping are the only messages a connection may send before joining


class Dispatcher:
    def __init__(self, routes: Mapping[str, Route], metrics: ServerMetrics) -> None:
        missing, unknown = set(CLIENT_MESSAGES) - set(routes), set(routes) - set(CLIENT_MESSAGES)
        if missing or unknown:
            raise RuntimeError(f"dispatch table out of step with the protocol: no handler for {sorted(missing)}, "
                               f"handlers for unknown types {sorted(unknown)}")
        self.routes = dict(routes)
        self.metrics = metrics

    async def dispatch(self, session: Session, message: dict[str, Any]) -> None:
        """Run the handler of one validated message. Raises ProtocolError."""
        kind = message["type"]
        route = self.routes[kind]
        if route.needs_join and not session.joined:
            raise ProtocolError(ErrorCode.NOT_JOINED, "join a room first", message.get("id"))
        await route.handler(session, message)
        self.metrics.messages_in.labels(kind).inc()


def unavailable(code: ErrorCode, reason: str) -> Handler:
    """A handler for a part this server runs without (media on a ``--no-media`` server)."""

    async def refuse(session: Session, message: dict[str, Any]) -> None:
        raise ProtocolError(code, reason, message.get("id"))

    return refuse
