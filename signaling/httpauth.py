"""Tokens on the plain-HTTP endpoints (WHIP/WHEP, recordings, /metrics): reading ``Authorization: Bearer``
(or ``?token=`` where a <video> element cannot send headers), checking a room's grant exactly as a WebSocket
join does (signature, room, a server-issued grant still live, role), and the HTTP status for each refusal.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from protocol import ErrorCode, Grant, ProtocolError, Role, validate_room_name, verify_token
from signaling.brokers import BrokerUnavailable
from signaling.membership import Membership

STATUS = {
    ErrorCode.UNAUTHORIZED: 401, ErrorCode.TOKEN_EXPIRED: 401, ErrorCode.REVOKED: 401,
    ErrorCode.FORBIDDEN: 403, ErrorCode.WRONG_ROOM: 403,
    ErrorCode.BAD_SDP: 400, ErrorCode.BAD_CANDIDATE: 400, ErrorCode.BAD_MESSAGE: 400,
    ErrorCode.NO_PUBLISHER: 404, ErrorCode.UNKNOWN_MEDIA: 404, ErrorCode.UNKNOWN_ROOM: 404,
    ErrorCode.TOO_MANY_MEDIA: 429, ErrorCode.UNAVAILABLE: 503, ErrorCode.MEDIA_UNAVAILABLE: 503,
    ErrorCode.REMOVED: 403, ErrorCode.OVERLOADED: 503,
}


def bearer_token(request: web.Request, *, query: bool = False) -> str | None:
    value = request.headers.get("Authorization", "")
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return request.query.get("token") or None if query else None


def refusal(exc: ProtocolError, headers: dict[str, str] | None = None) -> web.Response:
    """The HTTP answer to a refused request: its status, a one-line body with the code and why."""
    status = STATUS.get(exc.code, 400)
    extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if exc.retry_after_ms is not None:  # RFC 9110 10.2.3: whole seconds
        extra["Retry-After"] = str(max(1, round(exc.retry_after_ms / 1000)))
    return web.Response(status=status, text=f"{exc.code}: {exc.message}\n", headers={**(headers or {}), **extra})


class HttpAuth:
    def __init__(self, secret: str, membership: Membership) -> None:
        self.secret = secret
        self.membership = membership

    async def grant(self, request: web.Request, room: str, *, roles: tuple[Role, ...] | None = None,
                    anonymous_ok: bool = False, query: bool = False) -> Grant | None:
        """The request's grant for ``room`` (None: anonymous, where allowed). Raises ProtocolError."""
        validate_room_name(room)
        token = bearer_token(request, query=query)
        if token is None:
            if anonymous_ok:
                return None
            wanted = " (a " + " or ".join(r.value for r in roles) + " token)" if roles else ""
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"an Authorization: Bearer <token> for this room is required"
                                f"{wanted}")
        grant = verify_token(self.secret, token)
        if grant.room != room:
            raise ProtocolError(ErrorCode.WRONG_ROOM, f"the token is for room {grant.room!r}, not {room!r}")
        try:
            await self.membership.check_grant(room, grant, None)
            await self.membership.moderation.check_join(room, grant.user, None)
        except BrokerUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry") from None
        if roles and grant.role not in roles:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this needs a {' or '.join(r.value for r in roles)} token")
        return grant


async def read_json_body(request: web.Request, max_bytes: int) -> Any:
    """The request's JSON body, at most ``max_bytes`` (read no further); ValueError with the reason for the
    caller: too large, not JSON, nested too deep (the parser's recursion limit, not a server error)."""
    too_large = f"the body must be at most {max_bytes} bytes"
    if (request.content_length or 0) > max_bytes:
        raise ValueError(too_large)
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(too_large)
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("the JSON is nested too deep") from None
    except ValueError:
        raise ValueError("the body is not JSON") from None
