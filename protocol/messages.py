"""Client -> server message types and their validation, and the builders of server -> client replies.

``CLIENT_MESSAGES`` names every message a client may send with its fields; it is the one list the server's
dispatch table is checked against (``tests/test_protocol.py``). ``docs/protocol.md`` is its prose twin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from protocol.clock import now_ms
from protocol.codes import ErrorCode, ProtocolError, Ref

PROTOCOL_VERSION = 1


# Each type lists its fields as name -> (checker, required). A checker returns the cleaned value or
# raises ValueError with a reason. Unknown fields are ignored so clients can be newer than the server.


def _str(max_len: int, min_len: int = 0, pattern: re.Pattern[str] | None = None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not min_len <= len(value) <= max_len:
            raise ValueError(f"length must be {min_len}..{max_len}")
        if pattern is not None and not pattern.fullmatch(value):
            raise ValueError(f"must match {pattern.pattern}")
        return value

    return check


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not lo <= value <= hi:
            raise ValueError(f"must be in {lo}..{hi}")
        return value

    return check


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a finite number")
    try:
        number = float(value)  # an integer too large for a float raises OverflowError
    except OverflowError:
        raise ValueError("must be a finite number") from None
    if not math.isfinite(number) or abs(number) > 1e15:
        raise ValueError("must be a finite number of at most 1e15")
    return number


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be a boolean")
    return value


MAX_SAFE_INT = 2**53 - 1  # what every JSON implementation holds exactly (and msgpack encodes)


def _ref(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string")
    if isinstance(value, str) and len(value) > 64:
        raise ValueError("at most 64 characters")
    if isinstance(value, int) and not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise ValueError(f"must be within ±{MAX_SAFE_INT}")
    return value


def safe_ref(message: dict[str, Any]) -> Ref:
    """A message's ``id`` if it is one the server can echo back; None otherwise (bad ids are not echoed)."""
    try:
        return _ref(message["id"]) if "id" in message else None
    except ValueError:
        return None


MAX_SDP_CHARS = 60_000
# Room names end up in URLs, file names (recordings) and broker keys: letters, digits and `_ . : -`, never
# starting with a dot (so never `.` or `..`, never a hidden file), no separators, no control characters.
ROOM_RE = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,63}")
ROOM_RULE = "1-64 of A-Z a-z 0-9 _ . : -, not starting with a dot"


def validate_room_name(name: object) -> str:
    """The one room-name check every path uses (WebSocket, HTTP, WHIP/WHEP, recordings, analytics).
    Raises ProtocolError(bad_message)."""
    if not isinstance(name, str) or not ROOM_RE.fullmatch(name):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not a room name ({ROOM_RULE})")
    return name
_URL_RE = re.compile(r"https?://[^\s<>\"']+")
# A product image may also be a file of the server's own (the demo shelf's): a path under /static/, which each
# client resolves against the address it reached the server at (the host's own address may not work for
# everyone). No segment starts with a dot, so nothing climbs out of it.
_IMAGE_RE = re.compile(r"https?://[^\s<>\"']+|/static/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*/)*[A-Za-z0-9_-][A-Za-z0-9._-]*")
_PRICE_RE = re.compile(r"\d{1,12}(\.\d{1,4})?")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")


def _words(value: Any) -> list[str]:
    """A room's blocked words: at most 200, each 1-40 characters, no control characters."""
    if not isinstance(value, list) or len(value) > 200:
        raise ValueError("must be a list of at most 200 words")
    words = []
    for word in value:
        word = _str(40, 1)(word).strip()
        if not word or any(ord(c) < 32 for c in word):
            raise ValueError("each word must be 1-40 printable characters")
        words.append(word)
    return words


def _url(value: Any) -> str:
    return _str(2048, 1, _URL_RE)(value)


def _image(value: Any) -> str:
    return _str(2048, 1, _IMAGE_RE)(value)


def _candidate(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a map {candidate, sdpMid, sdpMLineIndex}")
    out: dict[str, Any] = {"candidate": _str(1024, 0)(value.get("candidate", ""))}
    if value.get("sdpMid") is not None:
        out["sdpMid"] = _str(64, 0)(value["sdpMid"])
    if value.get("sdpMLineIndex") is not None:
        out["sdpMLineIndex"] = _int(0, 64)(value["sdpMLineIndex"])
    return out


def _resume(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a map {epoch, seq}")
    return {"epoch": _str(64, 1)(value.get("epoch")), "seq": _int(0, 2**53)(value.get("seq"))}


PRODUCT_FIELDS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "id": (_str(64, 1), True),
    "title": (_str(120, 1), True),
    # A decimal string, never a float: "19.90" must stay "19.90" in every language.
    "price": (_str(17, 1, _PRICE_RE), True),
    "currency": (_str(3, 3, _CURRENCY_RE), True),
    "url": (_url, True),
    "image": (_image, True),
    "stock": (_int(0, 10**9), False),
    "countdown_s": (_int(0, 86400), False),
}


def _product(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a map")
    return _check_fields(value, PRODUCT_FIELDS, prefix="product.")


def validate_product(value: Any) -> dict[str, Any]:
    """A product card as every path takes it (a push in the room, a scheduled show's list): the cleaned
    card, or ProtocolError(bad_message) naming the field."""
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a product must be a map of PRODUCT_FIELDS")
    return _check_fields(value, PRODUCT_FIELDS, prefix="product.")


_COMMON: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "id": (_ref, False),  # echoed in the ack / error / pong for this message
    "ts": (_number, False),  # sender's send time, ms since the Unix epoch on the server's clock
}

CLIENT_MESSAGES: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    "join": {
        "room": (_str(64, 1, ROOM_RE), True),
        "token": (_str(4096, 1), False),
        "resume": (_resume, False),
        "name": (_str(40, 1), False),
        # Without `resume`: also send the room's last N durable events (a late joiner's recent comments).
        "history": (_int(0, 100), False),
        # Analytics: where the viewer came from (a page's src/utm_source or referrer host), and an anonymous
        # viewer's random per-browser id (so a returning anonymous viewer counts once).
        "source": (_str(64, 1), False),
        "device": (_str(64, 8), False),
    },
    "leave": {},
    "ping": {},
    "comment": {"text": (_str(10_000, 1), True)},  # the room's own limit is applied by the server
    "like": {"count": (_int(1, 1000), False)},
    "product": {"product": (_product, True)},
    "announce": {"text": (_str(10_000, 0), True), "pinned": (_bool, False)},
    # Media (WebRTC): the client always offers; the server answers. SDP is the one large field.
    "publish": {"sdp": (_str(MAX_SDP_CHARS, 1), True)},
    # `user`: that user's publication in the room, waited for (up to 10 s) if it does not exist yet, so a
    # 1v1 call subscribes at once and gets the other side's very first keyframe.
    # `media`: one of this connection's subscriptions: `sdp` is that peer connection's new offer, whose new
    # receive-only sections carry `publisher` (renegotiation: one connection per viewer, no new handshake).
    # `keep`: the subscription stays when its publishers leave (for the next ones to be added).
    "subscribe": {"sdp": (_str(MAX_SDP_CHARS, 1), True), "publisher": (_str(64, 1), False),
                  "user": (_str(128, 1), False), "media": (_str(64, 1), False), "keep": (_bool, False)},
    "candidate": {"media": (_str(64, 1), True), "candidate": (_candidate, True)},
    "unpublish": {"media": (_str(64, 1), True)},
    # With `publisher`: only that publisher leaves the subscription (its sections go inactive at the next offer).
    "unsubscribe": {"media": (_str(64, 1), True), "publisher": (_str(64, 1), False)},
    # Scenes: stage (co-hosts), PK between two rooms, switching to a private 1v1 call.
    "stage_request": {},
    "stage_cancel": {},
    "stage_invite": {"user": (_str(128, 1), True)},
    "stage_accept": {"user": (_str(128, 1), True)},
    "stage_reject": {"user": (_str(128, 1), True)},
    "stage_invite_answer": {"accept": (_bool, True)},
    "stage_mute": {"user": (_str(128, 1), True), "kind": (_str(5, 5, re.compile("audio|video")), True),
                   "muted": (_bool, True)},
    "stage_remove": {"user": (_str(128, 1), True)},
    "stage_allow": {"user": (_str(128, 1), True), "allowed": (_bool, True)},
    "stage_leave": {},
    "pk_invite": {"room": (_str(64, 1, ROOM_RE), True), "duration_s": (_int(10, 3600), False)},
    "pk_answer": {"room": (_str(64, 1, ROOM_RE), True), "accept": (_bool, True)},
    "pk_end": {},
    "call_invite": {"user": (_str(128, 1), True), "keep_video": (_bool, False)},
    "call_answer": {"accept": (_bool, True)},
    "call_end": {},
    # Recording the room (host only): every publisher as received, and the room's events.
    "record_start": {},
    "record_stop": {},
    # Client-measured figures the server records in its metrics (it cannot see decoded frames itself).
    "client_stats": {"call_setup_ms": (_number, False), "first_frame_ms": (_number, False),
                     "freezes": (_int(0, 10**6), False), "message_latency_ms": (_number, False)},
    # The assistant in the room (host only): on/off, mode, and optionally a small catalog (the HTTP
    # PUT /api/rooms/ROOM/assistant takes large ones); approving a suggested answer (suggest mode).
    "assistant": {"on": (_bool, True), "mode": (_str(16, 1), False), "catalog": (_str(8000, 0), False),
                  "format": (_str(8, 4, re.compile("yaml|json|markdown")), False)},
    "assistant_approve": {"suggestion": (_str(32, 1), True)},
    # Call the assistant (a signed-in viewer): a private 1v1 call room whose other side is the assistant.
    "assistant_call": {},
    # Which video a subscription wants: the highest simulcast layer ("high", "medium", "low"), or "off" to
    # pause its video (a hidden tab); audio is not concerned. `publisher`: only that publisher's video in a
    # subscription carrying several (default: every video it carries).
    "video_quality": {"media": (_str(64, 1), True),
                      "quality": (_str(6, 2, re.compile("high|medium|low|off")), True),
                      "publisher": (_str(64, 1), False)},
    # The viewer's page showed this product card (an impression, for the conversion funnel).
    "product_seen": {"product": (_str(64, 1), True)},
    # Moderation (the host and co-hosts; a co-host moderates viewers only), room-wide on every node.
    # Remove a user: their connections close (4011) and they cannot rejoin the room for `duration_s`.
    "remove_user": {"user": (_str(128, 1), True), "duration_s": (_int(1, 30 * 86400), False),
                    "reason": (_str(200, 0), False)},
    # Mute a user's comments for `duration_s` (or until unmuted: `muted: false`).
    "mute_user": {"user": (_str(128, 1), True), "muted": (_bool, False), "duration_s": (_int(1, 30 * 86400), False)},
    # Delete a comment for everyone: live viewers, late joiners' history and the recording's replay.
    "delete_comment": {"seq": (_int(1, MAX_SAFE_INT), True)},
    # The room's blocked words (replaces the list; [] clears it), applied to comments before they fan out.
    "block_words": {"words": (_words, True)},
    # Slow mode: a viewer may comment once every `seconds` (0 turns it off).
    "slow_mode": {"seconds": (_int(0, 3600), True)},
}

MODERATION_KINDS = frozenset({"remove_user", "mute_user", "delete_comment", "block_words", "slow_mode"})

SCENE_KINDS = frozenset(k for k in CLIENT_MESSAGES if k.startswith(("stage_", "pk_", "call_")))

MEDIA_KINDS = frozenset({"publish", "subscribe"})
"""Messages that carry SDP and may exceed the ordinary message size limit (up to the frame limit)."""


def _check_fields(
    message: dict[str, Any], spec: dict[str, tuple[Callable[[Any], Any], bool]], prefix: str = ""
) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in message or message[name] is None:
            if required:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"missing field '{prefix}{name}'")
            continue
        try:
            cleaned[name] = check(message[name])
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"field '{prefix}{name}' {exc}") from None
    return cleaned


def validate_client_message(message: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded client message; return a cleaned copy with only known fields. Raises ProtocolError."""
    kind = message.get("type")
    ref = safe_ref(message)
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "missing field 'type'", ref)
    spec = CLIENT_MESSAGES.get(kind)
    if spec is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}", ref)
    try:
        cleaned = _check_fields(message, _COMMON)
        cleaned.update(_check_fields(message, spec))
    except ProtocolError as exc:
        exc.ref = ref
        raise
    cleaned["type"] = kind
    return cleaned


# ---------------------------------------------------------------------------------------------------------
# Server -> client messages. Builders keep field names in one place.

DURABLE_KINDS = frozenset({"comment", "product", "announce", "comment_deleted"})
"""Events that get a sequence number, are kept in history and are replayed on resume."""

DROPPABLE_KINDS = frozenset({"comment", "likes", "presence"})
"""Events a slow connection may miss (counted); products and announcements are never dropped."""


def error_message(code: ErrorCode, message: str, ref: Ref = None, retry_after_ms: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if ref is not None:
        out["id"] = ref
    if retry_after_ms is not None:
        out["retry_after_ms"] = retry_after_ms
    return out


def pong_message(ref: Ref, client_ts: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "pong", "server_ts": now_ms()}
    if ref is not None:
        out["id"] = ref
    if client_ts is not None:
        out["ts"] = client_ts
    return out


def ack_message(ref: Ref, seq: int, epoch: str) -> dict[str, Any]:
    return {"type": "ack", "id": ref, "seq": seq, "epoch": epoch}
