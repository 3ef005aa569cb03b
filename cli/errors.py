"""What a person at the keyboard is told when a command cannot do its job: one clear line, never a
traceback. The command-line apps run inside ``friendly_errors``; URLs go through ``websocket_url``."""

from __future__ import annotations

import contextlib
import errno
import urllib.parse
from collections.abc import Iterator

import aiohttp
import click

from clients.client import ConnectionClosed, ServerError
from protocol import ErrorCode


def websocket_url(url: str) -> str:
    """Accept what people type: a base URL (http://host:8080, ws://host:8080/) means its /ws endpoint."""
    parsed = urllib.parse.urlparse(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("ws", "wss") or not parsed.netloc:
        raise click.BadParameter(f"{url!r} is not a WebSocket URL (ws://HOST:PORT/ws)", param_hint="--url")
    path = parsed.path if parsed.path not in ("", "/") else "/ws"
    return urllib.parse.urlunparse((scheme, parsed.netloc, path, "", parsed.query, ""))


_TOKEN_ERRORS = {ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.REVOKED}


def _explain(exc: ServerError, url: str, room: str, needs_publisher: bool) -> str:
    code, message = exc.code, exc.frame.get("message", "")
    if code in _TOKEN_ERRORS:
        return f"the server refused the token ({code}: {message})"
    if code is ErrorCode.WRONG_ROOM:
        return f"the token is for another room than {room!r}"
    if code is ErrorCode.UNKNOWN_ROOM:
        return f"there is no room {room!r} on {url} yet (a host token opens one)"
    if code is ErrorCode.FORBIDDEN and needs_publisher:
        return f"this token may not publish ({message}): use a host or co-host token for {room!r}"
    return f"the server said {code}: {message}"


@contextlib.contextmanager
def friendly_errors(url: str, room: str, *, needs_publisher: bool = False) -> Iterator[None]:
    """Turn the failures a person can cause or fix into one line (click prints it, exit status 1)."""
    try:
        yield
    except ServerError as exc:
        raise click.ClickException(_explain(exc, url, room, needs_publisher)) from None
    except aiohttp.WSServerHandshakeError as exc:
        hint = " (is the path /ws?)" if exc.status == 404 else ""
        raise click.ClickException(f"{url} is not a live-relay WebSocket: HTTP {exc.status}{hint}") from None
    except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
        raise click.ClickException(f"cannot connect to {url}: {getattr(exc, 'os_error', exc)}") from None
    except (aiohttp.ClientError, ConnectionClosed, TimeoutError) as exc:
        raise click.ClickException(f"lost the connection to {url}: {exc or type(exc).__name__}") from None


def explain_listen_error(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (another server?): choose another with --port"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"not allowed to listen on {host}:{port} (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine (--host)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
