"""Logging setup: one JSON object per line (python-json-logger), with the ``extra`` fields of each call."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from pythonjsonlogger.json import JsonFormatter


def setup_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per HTTP request: keep it for /healthz and friends but quiet. aioice
    # and aiortc log every candidate pair and state change at INFO: most of a log, little of its news.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("aiohttp.access", "aioice", "aiortc"):
        logging.getLogger(name).setLevel(quiet)


class BadRequestLog(logging.Filter):
    """On ``aiohttp.server``: a malformed request head from a client (aiohttp logs each at ERROR with a
    traceback) becomes one WARNING line, at most one per ``interval`` seconds; every one is counted
    (``on_bad``). A client cannot flood the log with broken requests. Other records pass untouched."""

    def __init__(self, on_bad: Callable[[], None], interval: float = 1.0) -> None:
        super().__init__()
        self._on_bad = on_bad
        self._interval = interval
        self._last = 0.0
        self._quiet = 0

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self._on_bad()
        now = time.monotonic()
        if now - self._last < self._interval:
            self._quiet += 1
            return False
        self._last = now
        record.msg = "bad request head: %s (%d more not logged)"
        record.args = (" ".join(str(exc).split())[:160], self._quiet)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        self._quiet = 0
        return True
