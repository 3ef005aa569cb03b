"""The aiohttp application: HTTP routes (/healthz, /metrics) and the /ws connection loop.

``create_app`` builds everything from one ``ServerConfig``; long-lived parts (broker, hub) are started
and stopped by a cleanup context, and shutdown closes every WebSocket with GOING_AWAY after its buffered
writes. State lives on the app under typed keys, never in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from protocol import (
    MEDIA_KINDS,
    PROTOCOL_VERSION,
    CloseCode,
    Encoding,
    ErrorCode,
    ProtocolError,
    decode,
    pong_message,
    validate_client_message,
    verify_token,
)
from relay.router import MediaConfig, MediaRouter
from signaling.brokers import StreamPosition, create_broker
from signaling.cascade import EdgeCascade
from signaling.config import ServerConfig
from signaling.hub import Hub
from signaling.media import MediaSignaling
from signaling.metrics import ServerMetrics
from signaling.session import Session

log = logging.getLogger(__name__)


class RelayServer:
    """Everything one node owns, wired together; lives on the app under ``SERVER``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.broker = create_broker(config)
        self.media: MediaSignaling | None = None
        if config.media_enabled:
            router = MediaRouter(MediaConfig(ice_servers=config.ice_servers, host_addresses=config.ice_addresses),
                                 on_event=self._on_media_event)
            node_url = config.node_url or (f"ws://127.0.0.1:{config.node_port}/ws" if config.node_port
                                           else f"ws://{reachable_host(config.host)}:{config.port}/ws")
            cascade = EdgeCascade(router, config.secret, secrets.token_hex(4)) if config.redis_url else None
            self.media = MediaSignaling(router, self._observe_media_setup, self.broker, node_url, cascade)
        self.hub = Hub(config, self.broker, self.metrics, self.media)
        self.started = time.time()
        self.connections_by_ip: Counter[str] = Counter()

    def count_error(self, code: ErrorCode) -> None:
        self.metrics.errors.labels(str(code)).inc()

    def _on_media_event(self, room: str, event: dict) -> None:
        self.hub.on_media_event(room, event)

    def _observe_media_setup(self, kind: str, seconds: float) -> None:
        self.metrics.media_setup.labels(kind).observe(seconds)

    def update_media_gauges(self) -> None:
        if self.media is None:
            return
        router = self.media.router
        publishers = sum(len(r.publishers) for r in router.rooms.values())
        self.metrics.media_peers.labels("publisher").set(publishers)
        self.metrics.media_peers.labels("subscriber").set(len(router.peers) - publishers)
        self.metrics.media_keyframe_requests.set(sum(
            t.pli_sent for r in router.rooms.values() for p in r.publishers.values() for t in p.tracks.values()))


SERVER = web.AppKey("server", RelayServer)


def reachable_host(host: str) -> str:
    """The address other nodes use for a node bound to ``host`` (0.0.0.0 means this machine's loopback
    unless --node-url says better)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application()
    app[SERVER] = RelayServer(config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ws", websocket)
    if config.web_root:
        app.router.add_get("/", index)
        app.router.add_static("/static", config.web_root, append_version=False)
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_run_hub)
    app.on_shutdown.append(_close_connections)
    return app


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    server = app[SERVER]
    await server.hub.start()
    yield
    await server.hub.close()


async def _close_connections(app: web.Application) -> None:
    await app[SERVER].hub.close(CloseCode.GOING_AWAY, "server shutting down")


# The page loads its own script and style only; user text is set with textContent, and this policy is the
# second line of defence should that ever slip.
_CSP = ("default-src 'self'; img-src 'self' https: http: data:; media-src 'self' blob:; "
        "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith("/static/"):
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"


async def index(request: web.Request) -> web.FileResponse:
    root = request.app[SERVER].config.web_root
    assert root is not None
    return web.FileResponse(os.path.join(root, "index.html"))


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    healthy = server.broker.healthy
    return web.json_response({
        "status": "ok" if healthy else "degraded",
        "protocol": PROTOCOL_VERSION,
        "broker": type(server.broker).__name__,
        "broker_ok": healthy,
        "rooms": len(server.hub.rooms),
        "connections": sum(len(r) for r in server.hub.rooms.values()),
        "uptime_s": round(time.time() - server.started, 1),
    })


async def metrics(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    server.metrics.broker_up.set(1 if server.broker.healthy else 0)
    server.update_media_gauges()
    return web.Response(body=server.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


async def websocket(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    limits = server.config.limits
    # compress=False: the same frame bytes go to every viewer; per-connection deflate would defeat that.
    ws = web.WebSocketResponse(compress=False, max_msg_size=limits.max_frame_bytes, heartbeat=30.0)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client left during the handshake
        return ws
    remote = request.remote or "?"
    if limits.socket_send_buffer:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
    session = Session(ws, transport, remote, limits, server.hub.kick)  # type: ignore[arg-type]
    server.connections_by_ip[remote] += 1
    try:
        if limits.max_conns_per_ip and server.connections_by_ip[remote] > limits.max_conns_per_ip:
            server.count_error(ErrorCode.TOO_MANY_CONNECTIONS)
            session.send_error(ErrorCode.TOO_MANY_CONNECTIONS, "too many connections from your address")
            await session.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
            return ws
        await _connection_loop(server, session)
    finally:
        server.connections_by_ip[remote] -= 1
        if server.connections_by_ip[remote] <= 0:
            del server.connections_by_ip[remote]
        server.hub.leave(session)
    return ws


async def _connection_loop(server: RelayServer, session: Session) -> None:
    ws = session.ws
    limits = server.config.limits
    joined_by = time.monotonic() + limits.join_timeout
    while not ws.closed:
        timeout = None if session.joined else max(0.0, joined_by - time.monotonic())
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            server.count_error(ErrorCode.NOT_JOINED)
            session.send_error(ErrorCode.NOT_JOINED, "join a room first")
            await session.close(CloseCode.JOIN_TIMEOUT, "no join in time")
            return
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await _on_frame(server, session, msg.data)
        elif msg.type is WSMsgType.ERROR:
            # aiohttp already closed the socket (1009 for frames over max_frame_bytes).
            too_big = getattr(msg.data, "code", None) == CloseCode.MESSAGE_TOO_BIG
            reason = "frame_too_big" if too_big else "read_error"
            server.metrics.disconnects.labels(reason).inc()
            if reason == "frame_too_big":
                server.count_error(ErrorCode.TOO_LARGE)
            return
        else:  # CLOSE / CLOSING / CLOSED
            return
        if limits.max_errors_per_conn and session.errors >= limits.max_errors_per_conn:
            await server.hub.disconnect(session, CloseCode.TOO_MANY_ERRORS, "too many bad messages")
            return


async def _on_frame(server: RelayServer, session: Session, data: str | bytes) -> None:
    limits = server.config.limits
    ref = None
    if not session.joined:
        # Until a join fixes it, answer in the encoding of the frame at hand.
        session.encoding = Encoding.JSON if isinstance(data, str) else Encoding.MSGPACK
    try:
        raw = decode(data)[0]
        if len(data) > limits.max_message_bytes and raw.get("type") not in MEDIA_KINDS:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"message larger than {limits.max_message_bytes} bytes",
                                raw.get("id") if isinstance(raw.get("id"), int | str) else None)
        message = validate_client_message(raw)
        ref = message.get("id")
        kind = message["type"]
        if kind == "join":
            await _join(server, session, message)
        elif kind == "ping":
            session.send(pong_message(ref, message.get("ts")))
        elif not session.joined:
            raise ProtocolError(ErrorCode.NOT_JOINED, "join a room first", ref)
        elif kind == "leave":
            server.hub.leave(session)
            await session.close(CloseCode.NORMAL, "left")
        else:
            await server.hub.handle(session, message)
    except ProtocolError as exc:
        session.errors += 1
        server.count_error(exc.code)
        session.send_error(exc.code, exc.message, exc.ref if exc.ref is not None else ref)
        close = _JOIN_FAILURE_CLOSE.get(exc.code)
        if close is not None and not session.joined:
            await session.close(close, exc.message)


_JOIN_FAILURE_CLOSE = {
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_EXPIRED: CloseCode.UNAUTHORIZED,
    ErrorCode.WRONG_ROOM: CloseCode.FORBIDDEN,
    ErrorCode.UNKNOWN_ROOM: CloseCode.UNKNOWN_ROOM,
}


async def _join(server: RelayServer, session: Session, message: dict) -> None:
    token = message.get("token")
    grant = verify_token(server.config.secret, token) if token else None
    resume = message.get("resume")
    position = StreamPosition(resume["seq"], resume["epoch"]) if resume else None
    await server.hub.join(session, message["room"], grant, message.get("name"), position, message.get("id"))


async def serve(config: ServerConfig, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None,
                app: web.Application | None = None) -> None:
    """Run until ``stop`` is set (or forever), then shut down in aiohttp's order."""
    app = app or create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=config.shutdown_timeout, handle_signals=False)
    await runner.setup()
    ssl_context = None
    if config.tls_cert and config.tls_key:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    # With --workers, every worker shares the public port (SO_REUSEPORT: the kernel spreads connections)
    # and also listens on a private loopback port of its own, which other nodes use to reach *this* worker.
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True, reuse_port=config.reuse_port or None,
                       ssl_context=ssl_context)
    await site.start()
    if config.node_port:
        await web.TCPSite(runner, "127.0.0.1", config.node_port, reuse_address=True).start()
    log.info("listening", extra={"host": config.host, "port": config.port, "node_port": config.node_port})
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
