"""Logging setup: one JSON object per line (python-json-logger), with the ``extra`` fields of each call."""

from __future__ import annotations

import logging
import sys

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
