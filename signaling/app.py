"""The aiohttp application: HTTP routes (/healthz, /metrics, the page) and the /ws endpoint, and the
wiring of one node's parts (``RelayServer``).

``create_app`` builds everything from one ``ServerConfig``; long-lived parts (broker, hub, ticker) are
started and stopped by a cleanup context, and shutdown closes every WebSocket with GOING_AWAY after its
buffered writes. State lives on the app under typed keys, never in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from analytics.showbook import ShowBook
from analytics.store import open_store
from analytics.writer import AnalyticsWriter
from assistant.speech import SpeechApi
from protocol import PROTOCOL_VERSION, CloseCode, ErrorCode, ProtocolError, Role, issue_token
from relay.router import MediaConfig, MediaRouter
from signaling.analytics import AnalyticsSink, ShowAnalytics
from signaling.assistant import AssistantService
from signaling.brokers import BrokerUnavailable, create_broker
from signaling.cascade import EdgeCascade
from signaling.channel import Channel
from signaling.config import ServerConfig
from signaling.connection import Connections
from signaling.dispatch import Dispatcher, Route, unavailable
from signaling.guard import GuardedTCPSite, HandshakeGuard
from signaling.hls import HlsEgress
from signaling.hlsviewers import HlsViewers
from signaling.httpauth import HttpAuth, bearer_token, refusal
from signaling.hub import Hub
from signaling.logs import BadRequestLog
from signaling.media import MediaSignaling
from signaling.membership import Membership
from signaling.metrics import ServerMetrics
from signaling.moderation import Moderation
from signaling.overload import LagGauge, LoopWatch
from signaling.recording import RecordingControl, Recordings, add_recording_routes
from signaling.restream import RestreamError, Restreams
from signaling.review import CommentReview
from signaling.scenes import ScenePorts, Scenes, SceneSettings
from signaling.shows import Shows
from signaling.ticker import Ticker
from signaling.turn import Coturn, TurnService, coturn_config
from signaling.voicecall import VoiceCalls
from signaling.webhooks import WebhookSender
from signaling.whip import HttpMedia

log = logging.getLogger(__name__)

_MEDIA_KINDS = ("publish", "subscribe", "candidate", "unpublish", "unsubscribe", "video_quality")


class RelayServer:
    """Everything one node owns, wired together; lives on the app under ``SERVER``.

    The broker serves the hub as an ``EventStream`` and the rules as a ``RoomStore`` and ``Registry``;
    the hub is the scenes' view of local members; the dispatch table takes every part's handlers."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.broker = broker = create_broker(config)
        self.hub = hub = Hub(broker, self.metrics, config.shutdown_timeout)
        # How late this node's loop runs (its saturation): a saturated node takes no new subscribers.
        self.load = LagGauge(config.limits.overload_lag_ms / 1000)
        self.loop_watch = LoopWatch(self.load)
        self.media: MediaSignaling | None = None
        if config.media_enabled:
            node_url = config.node_url or (f"ws://127.0.0.1:{config.node_port}/ws" if config.node_port
                                           else f"ws://{reachable_host(config.host)}:{config.port}/ws")
            router = MediaRouter(MediaConfig(ice_servers=config.ice_servers, host_addresses=config.ice_addresses,
                                             deny_networks=config.ice_deny, port_range=config.udp_ports,
                                             connect_timeout=config.limits.media_connect_timeout,
                                             silent_timeout=config.limits.media_silent_timeout,
                                             send_side_estimation=config.send_side_estimation,
                                             follow_window=config.limits.media_follow_window),
                                 on_event=self._on_router_event)
            cascade = EdgeCascade(router, config.secret, secrets.token_hex(4)) if config.redis_url else None
            self.media = MediaSignaling(router, broker, broker, node_url, config.limits, self._observe_media_setup,
                                        self.metrics.ice_candidates_denied.inc, hub.spawn, cascade, self.load)
        self._gauge_labels: dict[int, set[str]] = {}  # label values each labelled media gauge was ever set for
        self.recordings: Recordings | None = None
        self.hls: HlsEgress | None = None  # set by create_app when the node relays media
        self.restreams = (Restreams(self.media.router, max_transcodes=config.restream_max_transcodes)
                          if self.media is not None else None)
        if self.media is not None:  # with --record every room is recorded; otherwise when a host asks
            self.recordings = Recordings(config.record_dir or config.recordings_dir, self.media.router,
                                         config.record_max_bytes, hub.spawn, record_all=bool(config.record_dir))
            hub.observe_publications(self.recordings.observe)
            hub.observe_broadcasts(self.recordings.observe)
        self.scenes = Scenes(
            ScenePorts(store=broker, registry=broker, stream=broker, sign_grant=self._sign_grant, local=hub,
                       media=self.media),
            SceneSettings(invite_ttl=config.room.invite_ttl, max_seats=config.room.stage_seats))
        hub.observe_broadcasts(self.scenes.observe)
        if self.media is not None:
            self.media.visible_rooms = self.scenes.visible_rooms
            self.media.on_publishers_changed = self.scenes.on_publisher_change
            self.media.is_show = self.scenes.is_show
        self.analytics: AnalyticsSink = AnalyticsSink()
        self.analytics_writer: AnalyticsWriter | None = None
        self.shows: Shows | None = None  # scheduled shows (set by create_app when analytics has a store)
        if config.analytics:
            store = open_store(config.analytics, Path("data"))
            self.analytics_writer = AnalyticsWriter(
                store, on_drop=self.metrics.analytics_dropped.inc,
                retention_ms=int(config.analytics_retention_days * 86_400_000))
            self.analytics = ShowAnalytics(self.analytics_writer, config.secret, config.order_secret, self.metrics)
            hub.observe_publications(self.analytics.observe_publication)
            hub.observe_broadcasts(self.analytics.observe_broadcast)
        self.assistant = AssistantService(broker, broker, hub, config.assistant_llm, config.assistant_model,
                                          config.assistant_deadline, config.assistant_digest_interval)
        hub.observe_publications(self.assistant.observe_publication)
        hub.observe_broadcasts(self.assistant.observe_broadcast)
        self.assistant.on_question = self.analytics.assistant_question
        self.review = CommentReview(config.comment_review_url, config.comment_review_deadline,
                                    config.comment_review_fail_open, self.metrics) \
            if config.comment_review_url else None
        self.moderation = Moderation(hub, broker, broker, broker, self.metrics, self.review)
        hub.observe_broadcasts(self.moderation.observe)
        self.channel = Channel(hub, broker, broker, config.limits, self.metrics, self.analytics, self.assistant,
                               self.moderation)
        self.membership = Membership(config, hub, broker, broker, broker, self.scenes, self.media, self.metrics,
                                     self.moderation, self.analytics)
        self.ticker = Ticker(config, hub, broker, broker, self.channel, self.scenes, self.media, self.metrics,
                             self.recordings)
        self.connections = Connections(config.limits, config.secret, hub, self.membership, self.metrics)
        no_media = unavailable(ErrorCode.MEDIA_UNAVAILABLE, "this server runs without media")
        speech = SpeechApi(config.speech_url, os.environ.get("LIVE_RELAY_SPEECH_KEY"), config.speech_stt_model,
                           config.speech_tts_model, config.speech_voice, config.speech_language) \
            if config.speech_url else None
        self.voice_calls = VoiceCalls(self.assistant, hub, config.secret, self.media.node_url, speech=speech) \
            if self.media is not None else None
        voice_routes = self.voice_calls.handlers() if self.voice_calls is not None else \
            {"assistant_call": no_media}
        media_routes = self.media.handlers() if self.media is not None else dict.fromkeys(_MEDIA_KINDS, no_media)
        recording_routes = RecordingControl(self.recordings, broker, broker).handlers() \
            if self.recordings is not None else dict.fromkeys(("record_start", "record_stop"), no_media)
        self.connections.dispatcher = Dispatcher({
            **self.connections.routes(),
            **{kind: Route(handler) for kind, handler in self.channel.handlers().items()},
            **{kind: Route(handler) for kind, handler in self.scenes.routes().items()},
            **{kind: Route(handler) for kind, handler in media_routes.items()},
            **{kind: Route(handler) for kind, handler in recording_routes.items()},
            **{kind: Route(handler) for kind, handler in self.assistant.handlers().items()},
            **{kind: Route(handler) for kind, handler in voice_routes.items()},
            **{kind: Route(handler) for kind, handler in self.moderation.handlers().items()},
        }, self.metrics)
        self.started = time.time()
        self.turn, self.coturn = turn_for(config)
        self.membership.ice_servers = self.turn.ice_servers if self.turn is not None else None

    def _sign_grant(self, room: str, user: str, role: Role, ttl: float, name: str | None, grant_id: str) -> str:
        return issue_token(self.config.secret, room, user, role, ttl, name, grant_id)

    def _on_router_event(self, room: str, event: dict) -> None:
        if self.media is not None:
            self.media.on_router_event(room, event)
        if self.recordings is not None:
            self.recordings.on_router_event(room, event)
        if self.shows is not None:
            self.shows.on_router_event(room, event)

    def _observe_media_setup(self, kind: str, seconds: float) -> None:
        self.metrics.media_setup.labels(kind).observe(seconds)

    async def start(self) -> None:
        if self.coturn is not None:
            await self.coturn.start()
        if self.media is not None and self.config.udp_port is not None and self.config.udp_ports is None:
            try:
                mux = await self.media.router.open_port(self.config.udp_port, dict(self.config.ice_announce),
                                                        discover=self.config.ice_discover)
            except OSError as exc:
                exc.udp_port = self.config.udp_port  # type: ignore[attr-defined]  # for the one line the CLI says
                raise
            log.info("media on one UDP port", extra={"port": mux.port, "addresses": mux.addresses,
                                                     "announced": list(mux.announced.values())})
        await self.broker.start()
        if self.review is not None:
            await self.review.start()
        if self.analytics_writer is not None:
            await self.analytics_writer.start()
        if self.shows is not None:
            self.shows.start()  # (after the writer: its tables exist once the store is migrated)
        self.assistant.start()
        for room in self.config.rooms:
            await self.hub.open_room(room)  # configured rooms exist from the start
        self.ticker.start()
        self.loop_watch.start()

    async def close(self, code: CloseCode = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop ticking, close every connection, then media, then the broker. Idempotent."""
        if self.hub.closed:
            return
        await self.ticker.stop()
        await self.loop_watch.stop()
        await self.hub.close(code, reason)
        await self.assistant.close()
        if self.voice_calls is not None and self.voice_calls.speech is not None:
            await self.voice_calls.speech.close()
        if self.review is not None:
            await self.review.close()
        if self.recordings is not None:
            await self.recordings.close()
        if self.hls is not None:
            self.hls.close()
        if self.restreams is not None:
            await self.restreams.close()
        if self.media is not None:
            await self.media.close()
        if self.shows is not None:
            await self.shows.close()
        if self.analytics_writer is not None:
            await self.analytics_writer.close()  # after the connections: their leave events are in
        await self.broker.close()
        if self.coturn is not None:
            await self.coturn.stop()

    def media_view(self) -> dict[str, object] | None:
        """Where media reaches this node (for /healthz): the one UDP port and its addresses, or a socket
        per connection; TURN when clients are given one."""
        if self.media is None:
            return None
        mux = self.media.router.mux
        view: dict[str, object] = {"udp_port": mux.port if mux else None,
                                   "udp_ports": list(self.config.udp_ports) if self.config.udp_ports else None,
                                   "addresses": list(mux.announced.values()) if mux else
                                   list(self.config.ice_addresses)}
        if mux is not None:
            view["sessions"] = mux.stats.sessions
        view["turn"] = [u for u in self.turn.urls] if self.turn is not None else None
        return view

    def update_media_gauges(self) -> None:
        if self.analytics_writer is not None:
            self.metrics.analytics_queue.set(len(self.analytics_writer.queue))
        self.metrics.loop_lag.set(self.load.lag)
        self.metrics.saturated.set(int(self.load.saturated))
        if self.shows is not None:
            self.metrics.show_asks_refused.set(self.shows.asks_refused)
            sender = self.shows.webhook
            if sender is not None:
                for outcome, count in (("delivered", sender.delivered), ("failed_attempt", sender.failed_attempts),
                                       ("given_up", sender.given_up)):
                    self.metrics.webhook.labels(outcome).set(count)
        if self.media is None:
            return
        self.metrics.media_refused_overloaded.set(self.media.refused_overloaded)
        if self.hls is not None:
            self.metrics.hls_streams.set(len(self.hls.running))
            self.metrics.hls_requests.set(self.hls.requests)
            self.metrics.hls_refused_full.set(self.hls.refused_full)
        if self.restreams is not None:
            states, dropped = self.restreams.counts()
            for state, count in states.items():
                self.metrics.restreams.labels(state).set(count)
            self.metrics.restream_frames_dropped.set(dropped)
        self.metrics.receive_failed.set(self.media.router.receive_failed())
        stats = self.media.router.stats()
        self.metrics.media_peers.labels("publisher").set(stats.publishers)
        self.metrics.media_peers.labels("subscriber").set(stats.subscribers)
        self.metrics.media_keyframe_requests.set(stats.keyframe_requests)
        self.metrics.media_packets.labels("forwarded").set(stats.packets_forwarded)
        self.metrics.media_packets.labels("dropped").set(stats.packets_dropped)
        self.metrics.media_packets.labels("retransmitted").set(stats.packets_retransmitted)
        self.metrics.media_packets.labels("repair_refused").set(stats.repairs_refused)
        self.metrics.media_bad_feedback.set(stats.bad_feedback)
        for bucket, count in stats.loss_buckets.items():
            self.metrics.media_subscriber_loss.labels(bucket).set(count)
        for gauge, values in ((self.metrics.media_subscriber_layer, stats.layers),
                              (self.metrics.media_layer_switches, stats.switches),
                              (self.metrics.media_subscriber_bandwidth, stats.estimates),
                              (self.metrics.media_audio_redundancy, stats.redundancy),
                              (self.metrics.media_subscriber_estimator, stats.estimators)):
            seen = self._gauge_labels.setdefault(id(gauge), set())
            seen.update(values)
            for label in seen:
                gauge.labels(label).set(values.get(label, 0))  # a bucket that emptied reads 0, not its last count


SERVER = web.AppKey("server", RelayServer)


def turn_for(config: ServerConfig) -> tuple[TurnService | None, Coturn | None]:
    """What clients are told of TURN, and the coturn to start beside the relay (``turn_port``), if any."""
    if config.turn_port:
        secret = config.turn_secret or secrets.token_urlsafe(24)
        host = config.turn_host or next((p for _, p in config.ice_announce), None) or \
            (config.ice_addresses[0] if config.ice_addresses else reachable_host(config.host))
        urls = [f"turn:{host}:{config.turn_port}?transport=udp", f"turn:{host}:{config.turn_port}?transport=tcp"]
        tls = config.turn_tls_port if config.tls_cert and config.tls_key else None
        if tls:
            urls.append(f"turns:{host}:{tls}?transport=tcp")
        listen = sorted({a for a in config.ice_addresses} | ({config.host} if config.host not in
                                                              ("0.0.0.0", "::", "") else set())) or ["0.0.0.0"]
        coturn = Coturn(coturn_config(listen=listen, port=config.turn_port, tls_port=tls, secret=secret,
                                      realm="live-relay", relay_to=list(config.ice_addresses) or ["0.0.0.0"],
                                      cert=config.tls_cert, key=config.tls_key))
        return TurnService(tuple(config.turn_urls) + tuple(urls), secret, config.turn_ttl), coturn
    if config.turn_urls and config.turn_secret:
        return TurnService(tuple(config.turn_urls), config.turn_secret, config.turn_ttl), None
    return None, None


def reachable_host(host: str) -> str:
    """The address other nodes use for a node bound to ``host`` (0.0.0.0 means this machine's loopback
    unless --node-url says better)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application()
    app[SERVER] = RelayServer(config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ws", app[SERVER].connections.handle)
    server = app[SERVER]
    auth = HttpAuth(config.secret, server.membership)
    if server.recordings is not None:
        add_recording_routes(app, server.recordings, auth)
    if server.media is not None:  # WHIP ingest (OBS) and WHEP playback: signaling/whip.py
        HttpMedia(server.media, server.membership, auth, config.allow_anonymous, server.turn).add_routes(app)
        viewers = HlsViewers(server.analytics.hls_viewer, config.hls_viewer_idle_s) \
            if isinstance(server.analytics, ShowAnalytics) else None  # HLS players counted as viewers
        server.hls = HlsEgress(server.media.router, auth, config.allow_anonymous, config.hls_max_streams,
                               config.hls_max_transcodes, viewers)
        server.hub.observe_publications(server.hls.observe)  # cards and announcements on the HLS timeline
        app.add_routes(server.hls.routes())
    assistant = server.assistant

    async def set_assistant(request: web.Request) -> web.StreamResponse:
        return await assistant.http_set(request, auth.grant, refusal)

    app.router.add_put("/api/rooms/{room}/assistant", set_assistant)
    app.add_routes(server.moderation.routes(config.secret))

    def host_only(answer: Callable[[web.Request, str], Awaitable[web.StreamResponse]]
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A room's HTTP view for its hosts only: the token checked (401/403 with the reason), then ``answer``."""
        async def handler(request: web.Request) -> web.StreamResponse:
            room = request.match_info["room"]
            try:
                await auth.grant(request, room, roles=(Role.HOST,))
            except ProtocolError as exc:
                return refusal(exc)
            return await answer(request, room)
        return handler

    @host_only
    async def media_quality(request: web.Request, room: str) -> web.StreamResponse:
        """Each subscriber of the room on this node, and its link as its own RTCP reports it."""
        router = server.media.router if server.media is not None else None
        return web.json_response({"room": room, "subscribers": router.quality(room) if router else []})

    app.router.add_get("/api/rooms/{room}/quality", media_quality)

    @host_only
    async def live_rooms(request: web.Request, room: str) -> web.StreamResponse:
        """Shows whose host is on air, on every node: whom this room's host can invite to a PK."""
        try:
            rooms = await server.media.live_rooms(room) if server.media is not None else []
        except BrokerUnavailable:
            return web.Response(status=503, text="unavailable: message broker unavailable; retry\n",
                                headers={"Retry-After": "2"})
        return web.json_response({"room": room, "live": rooms})

    app.router.add_get("/api/rooms/{room}/live-rooms", live_rooms)
    if server.media is not None:
        add_restream_routes(app, server, host_only)
    if isinstance(server.analytics, ShowAnalytics):  # Buy redirect, order webhook, reports
        app.add_routes(server.analytics.routes(auth, refusal))
    if server.analytics_writer is not None:  # scheduled shows, reservations, follow-ups
        writer = server.analytics_writer
        webhook = WebhookSender(config.webhook_url, config.webhook_secret or "", writer, ShowBook(writer.store),
                                config.webhook_max_backoff_s) if config.webhook_url else None
        server.shows = Shows(writer, auth, refusal, webhook, config.reminder_lead_s, config.public_url,
                             server.assistant.preshow_answer)
        app.add_routes(server.shows.routes())
    if config.web_root:
        app.router.add_get("/", index)
        app.router.add_get("/static/vendor/hls.js", hls_js)
        app.router.add_static("/static", config.web_root, append_version=False)
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_run_hub)
    app.on_shutdown.append(_close_connections)
    return app


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    server = app[SERVER]
    await server.start()
    yield
    await server.close()


async def _close_connections(app: web.Application) -> None:
    await app[SERVER].close(CloseCode.GOING_AWAY, "server shutting down")


# The page loads its own script and style only; user text is set with textContent, and this policy is the
# second line of defence should that ever slip.
_CSP = ("default-src 'self'; img-src 'self' https: http: data:; media-src 'self' blob:; "
        "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # No software versions for whoever probes; pages carry tokens in their address, so no referrer leaves.
    response.headers["Server"] = "live-relay"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.path == "/" or request.path.startswith("/static/"):
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"


def add_restream_routes(app: web.Application, server: RelayServer,
                        host_only: Callable[[Callable[[web.Request, str], Awaitable[web.StreamResponse]]],
                                            Callable[[web.Request], Awaitable[web.StreamResponse]]]) -> None:
    """A room's restreaming destinations (signaling/restream.py), for its hosts: list, add, remove."""
    restreams = server.restreams
    assert restreams is not None

    @host_only
    async def listed(request: web.Request, room: str) -> web.StreamResponse:
        return web.json_response({"room": room, "destinations": restreams.list(room)})

    @host_only
    async def added(request: web.Request, room: str) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise RestreamError("send a JSON object: {\"url\": \"rtmp://...\", \"key\": \"...\"}")
            return web.json_response(restreams.add(room, body.get("url"), body.get("key")), status=201)
        except (RestreamError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, RestreamError) else "the body is not JSON"
            return web.Response(status=400, text=f"bad_request: {reason}\n")

    @host_only
    async def removed(request: web.Request, room: str) -> web.StreamResponse:
        if await restreams.remove(room, request.match_info["destination"]):
            return web.Response(status=204)
        return web.Response(status=404, text="not_found: no such destination\n")

    app.router.add_get("/api/rooms/{room}/restreams", listed)
    app.router.add_post("/api/rooms/{room}/restreams", added)
    app.router.add_delete("/api/rooms/{room}/restreams/{destination}", removed)


async def hls_js(request: web.Request) -> web.StreamResponse:
    """hls.js for the page's HLS fallback, as npm installed it beside the page (``npm ci --prefix clients/web``)."""
    root = request.app[SERVER].config.web_root
    assert root is not None
    path = Path(root) / "node_modules" / "hls.js" / "dist" / "hls.min.js"
    if not path.is_file():
        return web.Response(status=404, text="hls.js is not installed here (npm ci --prefix clients/web)\n")
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


async def index(request: web.Request) -> web.FileResponse:
    root = request.app[SERVER].config.web_root
    assert root is not None
    return web.FileResponse(os.path.join(root, "index.html"))


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    broker_ok = server.broker.healthy
    writer = server.analytics_writer
    analytics_ok = writer.healthy if writer is not None else None
    return web.json_response({
        "status": "ok" if broker_ok and analytics_ok is not False and not server.load.saturated else "degraded",
        "saturated": server.load.saturated,
        "loop_lag_ms": round(server.load.lag * 1000, 1),
        "protocol": PROTOCOL_VERSION,
        "broker": type(server.broker).__name__,
        "broker_ok": broker_ok,
        "analytics": writer.store.name if writer is not None else None,
        "analytics_ok": analytics_ok,
        "rooms": len(server.hub.rooms),
        "connections": sum(len(r) for r in server.hub.rooms.values()),
        "uptime_s": round(time.time() - server.started, 1),
        "media": server.media_view(),
    })


async def metrics(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    token = server.config.metrics_token
    if token and not secrets.compare_digest(bearer_token(request) or "", token):
        return web.Response(status=401, text="metrics need Authorization: Bearer <--metrics-token>\n",
                            headers={"WWW-Authenticate": "Bearer"})
    server.metrics.broker_up.set(1 if server.broker.healthy else 0)
    if server.analytics_writer is not None:
        server.metrics.analytics_up.set(1 if server.analytics_writer.healthy else 0)
    server.update_media_gauges()
    return web.Response(body=server.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


def _pending_tasks() -> list[str]:
    """What the loop's unfinished tasks are waiting in, one line each (for a shutdown that does not end)."""
    lines = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        chain: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and getattr(coro, "cr_frame", None) is not None:  # down the awaits
            frame = coro.cr_frame
            chain.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None)
        lines.append(f"{task.get_name()}: {' > '.join(chain[-6:]) or '?'}")
    return sorted(lines)[:50]


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
    limits = config.limits
    guard = HandshakeGuard(limits.handshake_timeout, limits.max_pending_per_ip,
                           lambda reason: app[SERVER].metrics.disconnects.labels(reason).inc())
    site = GuardedTCPSite(runner, config.host, config.port, guard, reuse_address=True,
                          reuse_port=config.reuse_port or None, ssl_context=ssl_context, backlog=limits.listen_backlog)
    await site.start()
    bad_requests = BadRequestLog(app[SERVER].metrics.bad_requests.inc)
    logging.getLogger("aiohttp.server").addFilter(bad_requests)
    if config.node_port:
        await web.TCPSite(runner, "127.0.0.1", config.node_port, reuse_address=True).start()
    log.info("listening", extra={"host": config.host, "port": config.port, "node_port": config.node_port})
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        cleanup = asyncio.ensure_future(runner.cleanup())
        done, _ = await asyncio.wait({cleanup}, timeout=config.shutdown_deadline)
        if not done:
            log.error("shutdown unfinished: giving up", extra={"after_s": config.shutdown_deadline,
                                                               "waiting_on": _pending_tasks()})
            cleanup.cancel()
        logging.getLogger("aiohttp.server").removeFilter(bad_requests)
