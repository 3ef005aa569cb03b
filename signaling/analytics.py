"""Conversion analytics on the server: what the server sees, turned into events, plus the HTTP side.

``ShowAnalytics`` is told of joins, leaves, comments, likes, product pushes, the cards a viewer's page
showed (``product_seen``) and client quality figures; it writes ``analytics.events.Event``s through an
``AnalyticsWriter`` (never awaiting on the hot path). Its base, ``AnalyticsSink``, is the same interface
doing nothing (``--analytics off``). A show is a room's event stream epoch: the same on every node, new when the room's
stream is created anew.

HTTP:
- ``GET /go/{room}/{product}?v=VIEWER``: a Buy link. Records the click and redirects to the URL of that
  product as pushed in that room (never anywhere else: an unknown product is a 404), with ``lr_click=REF``
  added so the shop can name the click in its order.
- ``POST /api/orders``: the shop's order webhook, HMAC-SHA256 of the raw body with the deployment's order
  secret in ``X-Live-Relay-Signature: sha256=HEX``; idempotent by ``order_id``.
- ``GET /api/rooms/{room}/report[?show=ID]``: the report as JSON, for a host token of that room.
- ``GET /api/rooms/{room}/shows``: the room's shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from analytics.events import Event, pseudonym
from analytics.report import CHARTS, build_report, chart_png
from analytics.writer import AnalyticsWriter
from protocol import Grant, ProtocolError, Role, now_ms, validate_room_name
from signaling.metrics import ServerMetrics
from signaling.ratelimit import KeyedBuckets
from signaling.session import Session

log = logging.getLogger(__name__)

MAX_PRODUCTS_PER_ROOM = 500  # pushed product URLs kept for the click redirect, newest first
MAX_ROOMS = 10_000
RECENT_CLICKS = 100_000  # clicks kept in memory too: an order may name one before it is written
# Buy clicks recorded per remote address (the redirect itself always works): a script cannot fill the
# store with clicks. Generous, since a venue's Wi-Fi or carrier NAT puts many shoppers behind one address.
CLICK_RATE, CLICK_BURST, MAX_CLICK_BUCKETS = 5.0, 50, 10_000
_ORDER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_AMOUNT = re.compile(r"^\d{1,12}(\.\d{1,4})?$")


class HostCheck(Protocol):
    """How the HTTP side checks a token (signaling.httpauth.HttpAuth; passed in to keep imports one-way)."""

    async def grant(self, request: web.Request, room: str, *, roles: tuple[Role, ...] | None = None,
                    anonymous_ok: bool = False, query: bool = False) -> Grant | None: ...


class AnalyticsSink:
    """What the server tells analytics. This base does nothing: it is what runs with analytics off;
    ``ShowAnalytics`` records."""

    def joined(self, session: Session, room: str, show: str, source: str | None, device: str | None) -> str:
        """Returns the viewer's pseudonym in the room ("" when nothing is recorded)."""
        return ""

    def left(self, session: Session) -> None: ...

    def published(self, session: Session, room: str, event: dict[str, Any]) -> None: ...

    def liked(self, session: Session, room: str, count: int) -> None: ...

    def seen(self, session: Session, product: str) -> None: ...

    def quality(self, session: Session, stats: dict[str, Any]) -> None: ...

    def observe_publication(self, room: str, event: dict[str, Any]) -> None: ...

    def observe_broadcast(self, room: str, data: dict[str, Any]) -> bool:
        return False

    def assistant_question(self, room: str, product: str | None, outcome: str, engine: str | None) -> None: ...

    def hls_viewer(self, room: str, key: str, source: str, joined_ms: int, dwell_s: float | None) -> None:
        """An LL-HLS viewing session began (``dwell_s`` None) or ended (signaling/hlsviewers.py)."""


class _Viewer:
    __slots__ = ("id", "joined_ms", "role", "room", "seen", "show", "source")

    def __init__(self, viewer_id: str, room: str, show: str, source: str, joined_ms: int, role: str) -> None:
        self.id, self.room, self.show, self.source, self.joined_ms = viewer_id, room, show, source, joined_ms
        self.role = role
        self.seen: set[str] = set()


class ShowAnalytics(AnalyticsSink):
    def __init__(self, writer: AnalyticsWriter, secret: str, order_secret: str | None,
                 metrics: ServerMetrics) -> None:
        self.writer = writer
        self._secret = secret
        self._order_secret = order_secret
        self._metrics = metrics
        self._viewers: dict[str, _Viewer] = {}  # by session id, while joined
        self._shows: OrderedDict[str, str] = OrderedDict()  # room -> current show (its stream epoch), newest last
        # room -> product id -> (url, show): what the Buy redirect may send a browser to.
        self._products: OrderedDict[str, OrderedDict[str, tuple[str, str]]] = OrderedDict()
        self._clicks: OrderedDict[str, Event] = OrderedDict()
        self._counted: dict[str, Any] = {}
        self._click_buckets = KeyedBuckets(MAX_CLICK_BUCKETS)
        self._auth: HostCheck | None = None
        self._refuse: Callable[[ProtocolError], web.Response] | None = None

    def _record(self, event: Event) -> None:
        self.writer.record(event)
        counter = self._counted.get(event.kind)
        if counter is None:  # the labelled child, looked up once per kind (a labels() call is not free)
            counter = self._counted[event.kind] = self._metrics.analytics_events.labels(event.kind)
        counter.inc()

    # -- what the server sees -------------------------------------------------------------------------------

    def joined(self, session: Session, room: str, show: str, source: str | None, device: str | None) -> str:
        """A viewer (or host) joined: returns the viewer's pseudonym in this room (the page puts it in its
        Buy links)."""
        identity = session.user if not session.anonymous or not device else f"device:{device}"
        viewer = _Viewer(pseudonym(self._secret, room, identity), room, show, source or "direct", int(now_ms()),
                         str(session.role))
        self._viewers[session.id] = viewer
        self._shows[room] = show
        self._shows.move_to_end(room)
        while len(self._shows) > MAX_ROOMS:
            self._shows.popitem(last=False)
        # A signed-in viewer's user id (the shop's own) is kept with the join: the follow-up list after the
        # show names whom the shop can reach (analytics/followup.py); anonymous viewers stay pseudonyms.
        data = {"role": viewer.role} if session.anonymous else {"role": viewer.role, "user": session.user}
        self._record(Event(viewer.joined_ms, room, show, "join", viewer=viewer.id, source=viewer.source, data=data))
        return self._signed(room, viewer.id)

    def _signed(self, room: str, viewer_id: str) -> str:
        """The viewer's pseudonym as its Buy links carry it (``id.sig``): a click names a viewer only with
        a pseudonym this server handed out, so one address cannot invent "viewers who clicked"."""
        sig = hmac.new(self._secret.encode(), f"click\x00{room}\x00{viewer_id}".encode(), hashlib.sha256)
        return f"{viewer_id}.{sig.hexdigest()[:12]}"

    def _click_viewer(self, room: str, given: str) -> str | None:
        viewer_id, _, _ = given.partition(".")
        return viewer_id if viewer_id and hmac.compare_digest(self._signed(room, viewer_id), given) else None

    def left(self, session: Session) -> None:
        viewer = self._viewers.pop(session.id, None)
        if viewer is not None:
            now = int(now_ms())
            self._record(Event(now, viewer.room, viewer.show, "leave", viewer=viewer.id, source=viewer.source,
                               value=round((now - viewer.joined_ms) / 1000, 3), data={"role": viewer.role}))

    def published(self, session: Session, room: str, event: dict[str, Any]) -> None:
        """A durable event this node accepted (written once, by the node that took it)."""
        viewer = self._viewers.get(session.id)
        show = event.get("epoch") or self._shows.get(room, "")
        who = viewer.id if viewer is not None else None
        if event.get("type") == "comment":
            self._record(Event(int(now_ms()), room, show, "comment", viewer=who))
        elif event.get("type") == "product":
            product = event.get("product") or {}
            self._record(Event(int(now_ms()), room, show, "push", viewer=who, product=product.get("id"),
                               ref=str(event.get("seq")), data={"price": product.get("price"),
                                                                "currency": product.get("currency"),
                                                                "title": product.get("title"),
                                                                "url": product.get("url")}))

    def liked(self, session: Session, room: str, count: int) -> None:
        viewer = self._viewers.get(session.id)
        if viewer is not None:
            self._record(Event(int(now_ms()), room, viewer.show, "like", viewer=viewer.id, value=count))

    def seen(self, session: Session, product: str) -> None:
        viewer = self._viewers.get(session.id)
        if viewer is None or product not in self._products.get(viewer.room, {}):
            if viewer is not None:  # a card that was never pushed in this room: not an impression
                self._metrics.analytics_rejected.labels("unknown_product").inc()
            return
        if product not in viewer.seen and len(viewer.seen) < MAX_PRODUCTS_PER_ROOM:
            viewer.seen.add(product)
            self._record(Event(int(now_ms()), viewer.room, viewer.show, "impression", viewer=viewer.id,
                               product=product, source=viewer.source))

    def quality(self, session: Session, stats: dict[str, Any]) -> None:
        viewer = self._viewers.get(session.id)
        if viewer is not None:
            self._record(Event(int(now_ms()), viewer.room, viewer.show, "quality", viewer=viewer.id, data=stats))

    def observe_broadcast(self, room: str, data: dict[str, Any]) -> bool:
        """Scene moments (the stage's seats changed, a PK began or ended, a private call): every node sees
        the same broadcast, and the store keeps one row per (room, moment). Only watches: returns False."""
        kind = data.get("type")
        if kind not in ("stage", "pk", "call") or room not in self._shows:
            return False
        state = data.get("state")
        summary: dict[str, Any] = {"scene": kind, "active": bool(state)}
        if kind == "stage" and isinstance(state, dict):
            summary["seats"] = len(state.get("seats") or [])
            summary["active"] = summary["seats"] > 0
        ts = int(data.get("server_ts") or now_ms())
        self._record(Event(ts, room, self._shows[room], "stage", ref=f"{kind}:{ts}", data=summary))
        return False

    def hls_viewer(self, room: str, key: str, source: str, joined_ms: int, dwell_s: float | None) -> None:
        """An HLS player's session as a viewer's join and leave, marked ``via: hls`` (its pseudonym from the
        session key, as a WebSocket viewer's from its identity)."""
        viewer = pseudonym(self._secret, room, f"hls:{key}")
        show = self._shows.get(room, "")
        data = {"role": "viewer", "via": "hls"}
        if dwell_s is None:
            self._record(Event(joined_ms, room, show, "join", viewer=viewer, source=source, data=data))
        else:
            self._record(Event(int(now_ms()), room, show, "leave", viewer=viewer, source=source, value=dwell_s,
                               data=data))

    def assistant_question(self, room: str, product: str | None, outcome: str, engine: str | None) -> None:
        """The room's assistant saw a question (its text is not kept): what came of it, about which product."""
        if room in self._shows:
            self._record(Event(int(now_ms()), room, self._shows[room], "question", product=product,
                               data={"outcome": outcome, "engine": engine}))

    def observe_publication(self, room: str, event: dict[str, Any]) -> None:
        """Every durable event of this node's rooms, whichever node took it (this one's too, before it fans
        out): a pushed product's URL is remembered for the Buy redirect."""
        if event.get("type") != "product":
            return
        product = event.get("product") or {}
        if not isinstance(product.get("id"), str) or not isinstance(product.get("url"), str):
            return
        products = self._products.setdefault(room, OrderedDict())
        self._products.move_to_end(room)
        products[product["id"]] = (product["url"], str(event.get("epoch") or self._shows.get(room, "")))
        products.move_to_end(product["id"])
        while len(products) > MAX_PRODUCTS_PER_ROOM:
            products.popitem(last=False)
        while len(self._products) > MAX_ROOMS:
            self._products.popitem(last=False)

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def click(self, request: web.Request) -> web.StreamResponse:
        room, product = request.match_info["room"], request.match_info["product"]
        try:
            validate_room_name(room)
        except ProtocolError as exc:
            raise web.HTTPBadRequest(text=exc.message + "\n") from None
        products = self._products.get(room)
        known = products.get(product) if products is not None else None
        replay = request.query.get("src") == "replay"
        if known is None and replay and len(product) <= 64:
            # A replay's card, pushed in a show this node no longer remembers (or before a restart): the URL
            # it was pushed with, as the store kept it; still never a URL the host did not push.
            known = await self.writer.call(self._pushed, room, product)
        if known is None:
            self._metrics.analytics_rejected.labels("unknown_product").inc()
            raise web.HTTPNotFound(text="no such product in this room\n")
        url, show = known
        if not self._click_allowed(request.remote or ""):
            self._metrics.analytics_rejected.labels("click_rate").inc()
            raise web.HTTPFound(url)  # the shopper still gets there; the click is not counted
        given = request.query.get("v", "")[:64]
        viewer = self._click_viewer(room, given) if given else None
        if given and viewer is None:
            self._metrics.analytics_rejected.labels("bad_viewer").inc()  # counted, as an unnamed viewer's click
        ref = secrets.token_urlsafe(9)
        # A click in a replay counts for the show the card was pushed in, as a replay click.
        click = Event(int(now_ms()), room, show, "click", viewer=viewer, product=product, ref=ref,
                      source="replay" if replay else self._source_of(viewer), data={"replay": True} if replay else None)
        self._record(click)
        self._clicks[ref] = click
        while len(self._clicks) > RECENT_CLICKS:
            self._clicks.popitem(last=False)
        parts = urlsplit(url)
        query = (parts.query + "&" if parts.query else "") + urlencode({"lr_click": ref})
        raise web.HTTPFound(urlunsplit(parts._replace(query=query)))

    def _pushed(self, room: str, product: str) -> tuple[str, str] | None:
        """(url, show) of the last push of ``product`` in ``room`` the store keeps (blocking: the writer's
        thread)."""
        push = self.writer.store.last_push(room, product)
        url = (push.data or {}).get("url") if push is not None else None
        return (url, push.show) if push is not None and isinstance(url, str) and \
            url.startswith(("http://", "https://")) else None

    def _click_allowed(self, address: str) -> bool:
        return self._click_buckets.take(address, CLICK_RATE, CLICK_BURST)

    def _source_of(self, viewer: str | None) -> str | None:
        if viewer is None:
            return None
        return next((v.source for v in self._viewers.values() if v.id == viewer), None)

    async def order(self, request: web.Request) -> web.StreamResponse:
        if not self._order_secret:
            raise web.HTTPServiceUnavailable(text="order webhook not configured (--order-secret)\n")
        body = await request.read()
        if len(body) > 16 * 1024:
            raise web.HTTPRequestEntityTooLarge(max_size=16 * 1024, actual_size=len(body))
        expected = "sha256=" + hmac.new(self._order_secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Live-Relay-Signature", "")):
            self._metrics.analytics_rejected.labels("bad_signature").inc()
            raise web.HTTPUnauthorized(text="bad or missing X-Live-Relay-Signature\n")
        try:
            order = json.loads(body)
            if not isinstance(order, dict):
                raise ValueError("an order is a JSON object")
            order_id, room = str(order["order_id"]), str(order["room"])
            amount = str(order["amount"])
            if not _ORDER_ID.match(order_id) or not _AMOUNT.match(amount):
                raise ValueError("order_id or amount malformed")
        except (ValueError, KeyError, TypeError) as exc:
            self._metrics.analytics_rejected.labels("bad_order").inc()
            raise web.HTTPBadRequest(text=f"bad order: {exc}\n") from None
        click_ref = order.get("click") if isinstance(order.get("click"), str) else None
        click = self._clicks.get(click_ref) if click_ref else None
        if click_ref and click is None:  # older than what memory keeps, or taken by another node
            click = await self.writer.call(self._find_click, room, click_ref)
        if click is not None and click.room != room:
            click = None
        event = Event(int(now_ms()), room, click.show if click else self._shows.get(room, ""), "order",
                      viewer=click.viewer if click else None,
                      product=str(order.get("product") or (click.product if click else "")) or None,
                      source=click.source if click else None, value=float(amount), ref=order_id,
                      data={"currency": str(order.get("currency", ""))[:3], "click": click_ref,
                            "attributed": click is not None})
        inserted = await self.writer.call(self.writer.store.insert_order, event)
        if inserted:
            self._metrics.analytics_events.labels("order").inc()
        return web.json_response({"order_id": order_id, "duplicate": not inserted, "attributed": click is not None})

    def _find_click(self, room: str, ref: str) -> Event | None:
        return next((e for e in self.writer.store.events(room) if e.kind == "click" and e.ref == ref), None)

    async def report(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        if (denied := await self._denied(request, room)) is not None:
            return denied
        show = request.query.get("show") or await self._latest_show(room)
        if show is None:
            return web.json_response({"room": room, "show": None, "events": 0})
        events = await self.writer.call(self.writer.store.events, room, show)
        return web.json_response(build_report(events, int(now_ms())))

    async def chart(self, request: web.Request) -> web.StreamResponse:
        """A report chart as PNG; the token may come as ?token= (an <img> cannot send headers)."""
        room, name = request.match_info["room"], request.match_info["name"]
        if name not in CHARTS:
            raise web.HTTPNotFound(text="no such chart\n")
        if (denied := await self._denied(request, room, query=True)) is not None:
            return denied
        show = request.query.get("show") or await self._latest_show(room)
        events = await self.writer.call(self.writer.store.events, room, show) if show else []
        if not events:
            raise web.HTTPNotFound(text="no show recorded for this room yet\n")
        png = await asyncio.to_thread(chart_png, build_report(events, int(now_ms())), name, request.query.get("lang"))
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})

    async def shows(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        if (denied := await self._denied(request, room)) is not None:
            return denied
        rows = await self.writer.call(self.writer.store.shows, room)
        return web.json_response([{"show": s, "first_ms": a, "last_ms": b} for s, a, b in rows])

    async def _latest_show(self, room: str) -> str | None:
        rows = await self.writer.call(self.writer.store.shows, room)
        return rows[-1][0] if rows else None

    async def _denied(self, request: web.Request, room: str, query: bool = False) -> web.Response | None:
        """None for a host token of ``room`` (checked as a join checks it: signature, room, not revoked);
        otherwise the refusal to answer with."""
        assert self._auth is not None and self._refuse is not None
        try:
            await self._auth.grant(request, room, roles=(Role.HOST,), query=query)
        except ProtocolError as exc:
            return self._refuse(exc)
        return None

    def routes(self, auth: HostCheck, refuse: Callable[[ProtocolError], web.Response]) -> list[web.RouteDef]:
        self._auth, self._refuse = auth, refuse
        return [web.get("/go/{room}/{product}", self.click), web.post("/api/orders", self.order),
                web.get("/api/rooms/{room}/report", self.report), web.get("/api/rooms/{room}/shows", self.shows),
                web.get("/api/rooms/{room}/report/{name}.png", self.chart)]
