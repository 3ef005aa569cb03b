"""Codes every party agrees on: error codes in ``error`` frames, WebSocket close codes, roles, and the
``ProtocolError`` that carries a code from wherever a message is refused to the frame that says why."""

from __future__ import annotations

import enum

Ref = int | str | None
"""A request's ``id``, echoed in the reply (ack, ok, answer, error, pong); None when the client gave none."""


class ErrorCode(enum.StrEnum):
    """Error codes carried by ``error`` frames (``code`` field)."""

    BAD_JSON = "bad_json"
    BAD_MSGPACK = "bad_msgpack"
    BAD_MESSAGE = "bad_message"  # not a map, missing or wrong-typed field, value out of range
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"  # missing, malformed or forged token
    TOKEN_EXPIRED = "token_expired"
    REVOKED = "revoked"  # a server-issued grant (stage seat, private call) that was taken back
    FORBIDDEN = "forbidden"  # the role may not do this
    UNKNOWN_ROOM = "unknown_room"
    WRONG_ROOM = "wrong_room"  # the token is for another room
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    UNAVAILABLE = "unavailable"  # the broker cannot take the message now; retry
    BAD_SDP = "bad_sdp"  # an offer the media relay cannot use
    BAD_CANDIDATE = "bad_candidate"
    NO_PUBLISHER = "no_publisher"  # subscribe before anyone publishes
    UNKNOWN_MEDIA = "unknown_media"  # no such media session on this connection
    ALREADY_PUBLISHING = "already_publishing"
    MEDIA_UNAVAILABLE = "media_unavailable"  # this server runs without the media relay
    TOO_MANY_MEDIA = "too_many_media"  # over a bound on media sessions (per connection, address or room)
    STAGE_FULL = "stage_full"  # every seat is taken
    NOT_FOUND = "not_found"  # the user or room named is not there
    NO_INVITATION = "no_invitation"  # nothing to answer (never invited, or the invitation expired)
    BUSY = "busy"  # already on stage / in a PK / in a call, or a request is pending
    REMOVED = "removed"  # a moderator removed this user from the room (until a time)
    MUTED = "muted"  # a moderator muted this user's comments (until a time)
    BLOCKED = "blocked"  # the comment holds a word the room blocks, or the operator's review denied it
    SLOW_MODE = "slow_mode"  # the room is in slow mode: one comment per N seconds
    OVERLOADED = "overloaded"  # the node is saturated: no new media subscriptions now (retry_after_ms says when)
    INTERNAL = "internal"


BAD_INPUT_CODES = frozenset({
    ErrorCode.BAD_JSON, ErrorCode.BAD_MSGPACK, ErrorCode.BAD_MESSAGE, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LARGE,
    ErrorCode.NOT_JOINED, ErrorCode.ALREADY_JOINED, ErrorCode.UNKNOWN_MEDIA, ErrorCode.BAD_SDP, ErrorCode.BAD_CANDIDATE,
})
"""Errors that mean a client sent something malformed or out of place: a connection that keeps sending such
messages is closed (``TOO_MANY_ERRORS``). Refusals of well-formed messages (rate limits, roles, a busy
stage, the broker unavailable) are answered but never count against the connection."""


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455 range 4000-4999 is ours)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect (elsewhere) and resume
    MESSAGE_TOO_BIG = 1009  # frame over the reader's hard limit
    TOO_MANY_ERRORS = 4000
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    UNKNOWN_ROOM = 4004
    SLOW_CONSUMER = 4008  # fell too far behind: reconnect and resume by sequence number
    TOO_MANY_CONNECTIONS = 4009
    JOIN_TIMEOUT = 4010
    REMOVED = 4011  # a moderator removed this user from the room: do not reconnect
    PROTOCOL_ERROR = 1002  # RFC 6455: e.g. a client frame that was not masked


class Role(enum.StrEnum):
    HOST = "host"
    COHOST = "cohost"
    VIEWER = "viewer"


class ProtocolError(Exception):
    """A message the server (or a client) refuses; carries the code sent back in the error frame."""

    def __init__(self, code: ErrorCode, message: str, ref: Ref = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after_ms = retry_after_ms  # when the refusal is for now only: how long to wait
