"""The two encodings of a message: JSON in text frames, msgpack in binary frames (same schema).

The server answers each connection in the encoding of its ``join``.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import msgpack

from protocol.codes import ErrorCode, ProtocolError


class Encoding(enum.Enum):
    JSON = "json"
    MSGPACK = "msgpack"


def encode(message: dict[str, Any], encoding: Encoding) -> str | bytes:
    if encoding is Encoding.JSON:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode(data: str | bytes) -> tuple[dict[str, Any], Encoding]:
    """Decode one frame's payload; text is JSON, bytes are msgpack. Raises ProtocolError."""
    if isinstance(data, str):
        try:
            message = json.loads(data)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_JSON, f"invalid JSON: {exc}") from None
        except RecursionError:  # nested deeper than the interpreter's stack allows
            raise ProtocolError(ErrorCode.BAD_JSON, "invalid JSON: nested too deeply") from None
        encoding = Encoding.JSON
    else:
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
            raise ProtocolError(ErrorCode.BAD_MSGPACK, f"invalid msgpack: {exc}") from None
        encoding = Encoding.MSGPACK
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a map with a 'type'")
    return message, encoding
