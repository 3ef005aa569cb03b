"""Signed room tokens (JWT, HS256 via PyJWT): who a connection is, in which room, with which role.

A token's claims: ``room``, ``sub`` (user id), ``role`` (host|cohost|viewer), optional ``name``,
``iat`` and ``exp``. Tokens the *server* issues (a stage seat's co-host grant, a private call's grant)
also carry ``gid``: the grant's id, live in the room's registry until the grant is taken back; a token
whose grant was taken back no longer joins. The server trusts nothing else a client says about itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from protocol.codes import ErrorCode, ProtocolError, Role

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Grant:
    room: str
    user: str
    role: Role
    name: str | None = None
    grant_id: str | None = None  # set on server-issued grants, which can be taken back


def issue_token(secret: str, room: str, user: str, role: Role | str, ttl: float = 3600.0,
                name: str | None = None, grant_id: str | None = None) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"room": room, "sub": user, "role": str(Role(role)), "iat": now,
                                 "exp": now + int(ttl)}
    if name:
        claims["name"] = name
    if grant_id:
        claims["gid"] = grant_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Grant:
    """Return the token's grant, or raise ProtocolError(unauthorized | token_expired)."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
    role_claim = claims.get("role")
    if not isinstance(role_claim, str) or role_claim not in Role._value2member_map_:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "token has no valid role")
    role = Role(role_claim)
    room, user, name, gid = claims.get("room"), claims.get("sub"), claims.get("name"), claims.get("gid")
    if not isinstance(room, str) or not isinstance(user, str):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "token lacks room or user")
    return Grant(room=room, user=user, role=role, name=name if isinstance(name, str) else None,
                 grant_id=gid if isinstance(gid, str) else None)
