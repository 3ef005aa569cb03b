"""The wire protocol (layer 1, the bottom): message types and their validation, error and close codes,
roles, the two encodings, time stamps and signed tokens.

Used alike by the server (``signaling``), the client library (``clients``), the media plane's errors
(``relay``) and the load tests. It imports nothing of aiohttp, aiortc or the rest of the code base.
``docs/protocol.md`` is its prose twin.
"""

from protocol.clock import ClockEstimate, now_ms
from protocol.codes import BAD_INPUT_CODES, CloseCode, ErrorCode, ProtocolError, Ref, Role
from protocol.encoding import Encoding, decode, encode
from protocol.messages import (
    CLIENT_MESSAGES,
    DROPPABLE_KINDS,
    DURABLE_KINDS,
    MEDIA_KINDS,
    MODERATION_KINDS,
    PRODUCT_FIELDS,
    PROTOCOL_VERSION,
    ROOM_RE,
    SCENE_KINDS,
    ack_message,
    error_message,
    pong_message,
    safe_ref,
    validate_client_message,
    validate_product,
    validate_room_name,
)
from protocol.tokens import Grant, issue_admin_token, issue_token, token_claims, verify_admin_token, verify_token

__all__ = [
    "BAD_INPUT_CODES",
    "CLIENT_MESSAGES", "DROPPABLE_KINDS", "DURABLE_KINDS", "MEDIA_KINDS", "MODERATION_KINDS", "PRODUCT_FIELDS",
    "PROTOCOL_VERSION",
    "ROOM_RE", "SCENE_KINDS", "ClockEstimate", "CloseCode", "Encoding", "ErrorCode", "Grant", "ProtocolError",
    "Ref", "Role", "ack_message", "decode", "encode", "error_message", "issue_admin_token", "issue_token", "now_ms",
    "pong_message",
    "safe_ref",
    "token_claims", "validate_client_message", "validate_product", "validate_room_name", "verify_admin_token",
    "verify_token",
]
