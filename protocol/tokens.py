"""Signed room tokens (JWT, HS256 via PyJWT): who a connection is, in which room, with which role.

A token's claims: ``room``, ``sub`` (user id), ``role`` (host|cohost|viewer), optional ``name``, ``iat``,
``exp`` and ``jti`` (the token's id, by which it can be revoked). Tokens the *server* issues (a stage seat's
co-host grant, a private call's grant) also carry ``gid``: the grant's id, live in the room's registry until
the grant is taken back; a token whose grant was taken back no longer joins. The server trusts nothing else
a client says about itself.

An operator's admin token (``issue_admin_token``: the revocation endpoint) carries the audience
``live-relay-admin``, so it is never taken for a room token, and a room token never for it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from protocol.codes import ErrorCode, ProtocolError, Role

ALGORITHM = "HS256"
ADMIN_AUDIENCE = "live-relay-admin"


@dataclass(frozen=True, slots=True)
class Grant:
    room: str
    user: str
    role: Role
    name: str | None = None
    grant_id: str | None = None  # set on server-issued grants, which can be taken back
    token_id: str | None = None  # the token's jti (revocable by it)
    issued_at: float | None = None  # the token's iat (Unix seconds)


def issue_token(secret: str, room: str, user: str, role: Role | str, ttl: float = 3600.0,
                name: str | None = None, grant_id: str | None = None) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"room": room, "sub": user, "role": str(Role(role)), "iat": now,
                                 "exp": now + int(ttl), "jti": secrets.token_urlsafe(12)}
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
    jti, iat = claims.get("jti"), claims.get("iat")
    return Grant(room=room, user=user, role=role, name=name if isinstance(name, str) else None,
                 grant_id=gid if isinstance(gid, str) else None, token_id=jti if isinstance(jti, str) else None,
                 issued_at=float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None)


def token_claims(token: str) -> dict[str, object]:
    """A token's claims *without* checking its signature or expiry: for the operator's own tools (which
    token id to revoke), never for letting anyone in."""
    try:
        return dict(jwt.decode(token, options={"verify_signature": False, "verify_exp": False}))
    except jwt.InvalidTokenError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not a token: {exc}") from None


def issue_admin_token(secret: str, ttl: float = 60.0) -> str:
    """A short-lived operator token for the admin endpoints (revocation)."""
    now = int(time.time())
    return jwt.encode({"sub": "operator", "aud": ADMIN_AUDIENCE, "iat": now, "exp": now + int(ttl)}, secret,
                      algorithm=ALGORITHM)


def verify_admin_token(secret: str, token: str) -> None:
    """Raise ProtocolError(unauthorized | token_expired) unless ``token`` is a live admin token."""
    try:
        jwt.decode(token, secret, algorithms=[ALGORITHM], audience=ADMIN_AUDIENCE, options={"require": ["exp", "aud"]})
    except jwt.ExpiredSignatureError:
        raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "admin token expired") from None
    except jwt.InvalidTokenError as exc:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"not an admin token: {exc}") from None
