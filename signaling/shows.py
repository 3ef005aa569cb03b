"""Scheduled shows over HTTP, their reminders, and the follow-up list after them.

Routes (tokens as everywhere: ``Authorization: Bearer``, checked as a join checks them):

- ``POST /api/rooms/{room}/schedule`` (host): schedule a show: ``{"title", "starts_at" (ISO 8601 or ms since
  the epoch), "cover"?, "products"?: [{"id", "title", "price"?, "url"?, "image"?}]}`` -> 201 and the show.
- ``GET /api/rooms/{room}/schedule``: the room's shows, soonest first (public: what a show page shows).
- ``GET /api/shows/{id}``: one show, with how many reserved (and, with a viewer's token, whether they did).
- ``GET /api/shows/{id}/calendar.ics``: the show as a calendar event (RFC 5545, by ``icalendar``).
- ``POST`` / ``DELETE /api/shows/{id}/reservation`` (a signed-in viewer of the show's room): remind me / don't.
- ``POST`` / ``DELETE /api/shows/{id}/follow`` (a signed-in viewer): follow the show's host / stop.
- ``POST /api/shows/{id}/end`` (host): a live show ends (a scheduled one is cancelled); its follow-up list
  leaves through the webhook.
- ``GET /api/shows/{id}/brief`` (host): before the show: reservations, followers, its products.
- ``GET /api/shows/{id}/followups`` (host; ``?format=csv``): after it: the follow-up list and the funnel.

A show goes live when its host goes live in its room (``on_router_event``). Reminders: ``reminder_lead_s``
before the start, once, to everyone who reserved (``show.reminder``); at the start (``show.live``); followers
hear of a new show when it is scheduled (``show.scheduled``). All through ``signaling.webhooks``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from analytics.events import Event
from analytics.followup import followups, followups_csv, funnel, message
from analytics.showbook import Show, ShowBook
from analytics.writer import AnalyticsWriter
from protocol import ErrorCode, ProtocolError, Role, validate_product
from signaling.httpauth import HttpAuth, read_json_body
from signaling.ratelimit import KeyedBuckets
from signaling.webhooks import WebhookSender, body_of

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_TITLE = 120
CHUNK = 1000  # user ids per webhook delivery
_SHOW_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_URL = re.compile(r"^https?://[^\s\"'<>]{1,1000}$")
YEAR_MS = 366 * 86_400_000
MAX_QUESTION = 200
# Questions on a show's page: per address (a shopper asks a few), and per show (what the engines cost).
ASK_RATE, ASK_BURST = 0.2, 5
SHOW_ASK_RATE, SHOW_ASK_BURST = 2.0, 20
MAX_ASK_BUCKETS = 10_000
# Asks a show's page before it starts: (room, show id, its products, the question) -> an answer or None.
PreshowAnswer = Callable[[str, str, list[dict[str, Any]], str], Awaitable[Any]]


class ShowError(ValueError):
    """A request that cannot be taken as it is, with the reason for the caller."""


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_start(value: Any, now: int) -> int:
    """``starts_at`` as ms since the epoch: an ISO 8601 time with its zone, or a number of ms."""
    if isinstance(value, bool):
        raise ShowError("starts_at must be an ISO 8601 time with a zone (2026-12-24T20:00:00+08:00) or ms")
    if isinstance(value, int | float):
        starts = int(value)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ShowError("starts_at must be an ISO 8601 time with a zone (2026-12-24T20:00:00+08:00)") from None
        if moment.tzinfo is None:
            raise ShowError("starts_at needs its time zone (…+08:00 or …Z): a show starts at one moment everywhere")
        starts = int(moment.timestamp() * 1000)
    else:
        raise ShowError("starts_at is required: an ISO 8601 time with a zone, or ms since the epoch")
    if not now - 86_400_000 <= starts <= now + YEAR_MS:
        raise ShowError("starts_at must be within the next year")
    return starts


def parse_products(value: Any) -> list[dict[str, Any]]:
    """The show's products: product cards as the room's pushes take them (protocol.PRODUCT_FIELDS), so the
    host pushes them as they are during the show."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 50:
        raise ShowError("products must be a list of at most 50 products")
    products = []
    for item in value:
        try:
            products.append(validate_product(item))
        except ProtocolError as exc:
            raise ShowError(exc.message) from None
    return products


def parse_schedule(body: Any, now: int) -> tuple[str, int, str | None, list[dict[str, Any]]]:
    """(title, starts_ms, cover, products) of a schedule request, or ShowError with what is wrong."""
    if not isinstance(body, dict):
        raise ShowError("the body must be a JSON object: {\"title\": ..., \"starts_at\": ...}")
    title = body.get("title")
    if not isinstance(title, str) or not 1 <= len(title.strip()) <= MAX_TITLE:
        raise ShowError(f"title must be 1-{MAX_TITLE} characters")
    cover = body.get("cover")
    if cover is not None and (not isinstance(cover, str) or not _URL.match(cover)):
        raise ShowError("cover must be an http(s) URL of an image")
    return title.strip(), parse_start(body.get("starts_at"), now), cover, parse_products(body.get("products"))


def calendar(show: Show, page_url: str) -> bytes:
    """The show as an iCalendar file: one event, an hour long by default, with a 15-minute alarm."""
    import icalendar

    cal = icalendar.Calendar()
    cal.add("prodid", "-//live-relay//scheduled show//EN")
    cal.add("version", "2.0")
    event = icalendar.Event()
    start = datetime.datetime.fromtimestamp(show.starts_ms / 1000, datetime.UTC)
    event.add("uid", f"{show.id}@live-relay")
    event.add("dtstamp", datetime.datetime.fromtimestamp(show.created_ms / 1000, datetime.UTC))
    event.add("dtstart", start)
    event.add("dtend", start + datetime.timedelta(hours=1))
    event.add("summary", show.title)
    event.add("url", page_url)
    event.add("description", page_url)
    alarm = icalendar.Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("description", show.title)
    alarm.add("trigger", datetime.timedelta(minutes=-15))
    event.add_component(alarm)
    cal.add_component(event)
    return bytes(cal.to_ical())


def question_brief(events: list[Event], last: int = 20) -> dict[str, Any]:
    """What people asked on a show's page before it: how many, answered or not, about which products, and
    the last ``last`` questions (newest first) with what came of each."""
    asked = [e for e in events if e.kind == "question"]
    by_product: dict[str, int] = {}
    for e in asked:
        if e.product:
            by_product[e.product] = by_product.get(e.product, 0) + 1
    answered = sum(1 for e in asked if (e.data or {}).get("outcome") == "answered")
    return {"asked": len(asked), "answered": answered, "unanswered": len(asked) - answered,
            "by_product": dict(sorted(by_product.items(), key=lambda kv: (-kv[1], kv[0]))),
            "last": [{"text": (e.data or {}).get("text"), "outcome": (e.data or {}).get("outcome"),
                      "product": e.product, "ts_ms": e.ts_ms} for e in reversed(asked[-last:])]}


class Shows:
    def __init__(self, writer: AnalyticsWriter, auth: HttpAuth, refuse: Callable[[ProtocolError], web.Response],
                 webhook: WebhookSender | None, reminder_lead_s: float, public_url: str | None,
                 preshow_answer: PreshowAnswer | None = None) -> None:
        self.book = ShowBook(writer.store)
        self._writer, self._auth, self._refuse = writer, auth, refuse
        self.webhook = webhook
        self.reminder_lead_ms = int(reminder_lead_s * 1000)
        self._public_url = public_url.rstrip("/") if public_url else None
        self._origin: str | None = None  # the last origin a request came in by (links when no public_url)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._preshow_answer = preshow_answer
        self._ask_buckets = KeyedBuckets(MAX_ASK_BUCKETS)  # by address, and "show:ID"
        self.asks_refused = 0

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()
            self._task = asyncio.create_task(self._remind(), name="show-reminders")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.gather(*(t for t in (self._task, *self._pending) if t is not None), return_exceptions=True)
        if self.webhook is not None:
            await self.webhook.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- what happens without a request ---------------------------------------------------------------------

    def on_router_event(self, room: str, event: dict[str, Any]) -> None:
        """A publisher came on air: if it is a host with a show scheduled about now in that room, the show
        is live."""
        if event.get("type") == "publisher_joined" and isinstance(event.get("user"), str):
            self._spawn(self._went_live(room, event["user"]), f"show-live-{room}")

    async def _went_live(self, room: str, user: str) -> None:
        try:
            show = await self._writer.call(self.book.go_live, room, user, now_ms())
            if show is not None:
                log.info("show live", extra={"show": show.id, "room": room})
                await self._tell_reserved(show, "show.live")
        except Exception:
            log.exception("a show could not be started")

    async def _remind(self) -> None:
        while True:
            try:
                for show in await self._writer.call(self.book.due_reminders, now_ms(), self.reminder_lead_ms):
                    await self._tell_reserved(show, "show.reminder")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("show reminders could not be read")
            await asyncio.sleep(2.0)

    async def _tell_reserved(self, show: Show, kind: str) -> None:
        if self.webhook is None:
            return
        viewers = [v for v, _ in await self._writer.call(self.book.reservations, show.id)]
        for part, start in enumerate(range(0, max(1, len(viewers)), CHUNK)):
            await self.webhook.enqueue(f"{kind}:{show.id}:{part}", kind, body_of(
                kind, show=show.public(), page=self._page(show), users=viewers[start:start + CHUNK], part=part))

    def _page(self, show: Show) -> str:
        base = self._public_url or self._origin or ""
        return f"{base}/?view=show&show={show.id}"

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _show(self, request: web.Request) -> Show:
        show_id = request.match_info["show"]
        show = await self._writer.call(self.book.get, show_id) if _SHOW_ID.match(show_id) else None
        if show is None:
            raise web.HTTPNotFound(text="no such show\n")
        self._origin = self._origin or f"{request.scheme}://{request.host}"
        return show

    async def _grant(self, request: web.Request, room: str, host: bool) -> Any:
        """The caller's grant: a host of ``room``, or any signed-in user of it; raises the refusal."""
        try:
            grant = await self._auth.grant(request, room, roles=(Role.HOST,) if host else None)
        except ProtocolError as exc:
            raise _Refused(self._refuse(exc)) from None
        if grant is None or (host and grant.role is not Role.HOST):
            raise _Refused(self._refuse(ProtocolError(ErrorCode.FORBIDDEN, "a host token of this room is needed")))
        return grant

    async def schedule(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = await self._grant(request, room, host=True)
        try:
            body = await read_json_body(request, MAX_BODY)
            title, starts, cover, products = parse_schedule(body, now_ms())
        except (ShowError, ValueError) as exc:
            return web.Response(status=400, text=f"bad_message: {exc}\n")
        self._origin = f"{request.scheme}://{request.host}"
        show = await self._writer.call(self.book.schedule, room, grant.user, title, starts, cover, products, now_ms())
        log.info("show scheduled", extra={"show": show.id, "room": room})
        if self.webhook is not None:
            followers = await self._writer.call(self.book.followers, grant.user)
            if followers:
                await self.webhook.enqueue(f"show.scheduled:{show.id}", "show.scheduled", body_of(
                    "show.scheduled", show=show.public(), page=self._page(show), users=followers[:CHUNK]))
        return web.json_response({**show.public(), "page": self._page(show)}, status=201)

    async def room_schedule(self, request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        shows = await self._writer.call(self.book.of_room, room)
        return web.json_response([s.public() for s in shows], headers={"Cache-Control": "max-age=5"})

    async def get(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        answer = {**show.public(), "reservations": await self._writer.call(self.book.reservation_count, show.id)}
        if request.headers.get("Authorization"):
            grant = await self._grant(request, show.room, host=False)
            answer["reserved"] = await self._writer.call(self.book.reserved, show.id, grant.user)
            answer["following"] = grant.user in await self._writer.call(self.book.followers, show.host)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    async def ics(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        return web.Response(body=calendar(show, self._page(show)), content_type="text/calendar", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="show-{show.id}.ics"'})

    async def reservation(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        grant = await self._grant(request, show.room, host=False)
        if request.method == "DELETE":
            removed = await self._writer.call(self.book.unreserve, show.id, grant.user)
            return web.json_response({"reserved": False, "changed": removed})
        if show.status in ("ended", "cancelled"):
            return web.Response(status=409, text=f"show_over: this show is {show.status}\n")
        added = await self._writer.call(self.book.reserve, show.id, grant.user, now_ms())
        return web.json_response({"reserved": True, "changed": added})

    async def follow(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        grant = await self._grant(request, show.room, host=False)
        if request.method == "DELETE":
            return web.json_response({"following": False,
                                      "changed": await self._writer.call(self.book.unfollow, show.host, grant.user)})
        if grant.user == show.host:
            return web.Response(status=400, text="bad_message: a host cannot follow themselves\n")
        added = await self._writer.call(self.book.follow, show.host, grant.user, now_ms())
        return web.json_response({"following": True, "changed": added})

    async def end(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        await self._grant(request, show.room, host=True)
        ended: Show | None = await self._writer.call(self.book.end, show.id, now_ms())
        show = ended or show
        if show.status == "ended" and self.webhook is not None:
            report = await self._followups(show, "en")
            await self.webhook.enqueue(f"show.followups:{show.id}", "show.followups",
                                       body_of("show.followups", show=show.public(), **report))
        return web.json_response(show.public())

    async def brief(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        await self._grant(request, show.room, host=True)
        reservations = await self._writer.call(self.book.reservation_count, show.id)
        followers = len(await self._writer.call(self.book.followers, show.host))
        asked = await self._writer.call(self._writer.store.events, show.room, f"pre:{show.id}")
        return web.json_response({**show.public(), "reservations": reservations, "followers": followers,
                                  "page": self._page(show), "questions": question_brief(asked)})

    async def ask(self, request: web.Request) -> web.StreamResponse:
        """A question on the show's page: answered from its cards (and the room's catalog), counted for the
        host's brief with its text (what people want to know before the show)."""
        show = await self._show(request)
        if self._preshow_answer is None:
            return web.Response(status=503, text="unavailable: the assistant is not running here\n")
        try:
            body = await read_json_body(request, 4096)
        except ValueError as exc:
            return web.Response(status=400, text=f"bad_message: {exc}\n")
        question = body.get("question") if isinstance(body, dict) else None
        if not isinstance(question, str) or not 1 <= len(question.strip()) <= MAX_QUESTION:
            return web.Response(status=400, text=f"bad_message: question must be 1-{MAX_QUESTION} characters\n")
        question = "".join(c for c in question.strip() if c.isprintable())
        if not (self._ask_buckets.take(request.remote or "", ASK_RATE, ASK_BURST)
                and self._ask_buckets.take(f"show:{show.id}", SHOW_ASK_RATE, SHOW_ASK_BURST)):
            self.asks_refused += 1
            return web.Response(status=429, text="rate_limited: a moment before the next question\n",
                                headers={"Retry-After": "5"})
        try:
            answer = await self._preshow_answer(show.room, show.id, show.products, question)
        except Exception:  # an engine failing answers nothing; the page says it did not know
            log.exception("a pre-show question could not be answered")
            answer = None
        outcome = "answered" if answer is not None else "unanswered"
        self._writer.record(Event(now_ms(), show.room, f"pre:{show.id}", "question",
                                  product=getattr(answer, "product", None),
                                  data={"outcome": outcome, "engine": getattr(answer, "engine", None),
                                        "text": question, "phase": "pre"}))
        return web.json_response({"answer": answer.text if answer is not None else None, "outcome": outcome,
                                  "product": getattr(answer, "product", None)})

    async def followup_list(self, request: web.Request) -> web.StreamResponse:
        show = await self._show(request)
        await self._grant(request, show.room, host=True)
        if show.live_ms is None:
            return web.Response(status=409, text="not_started: this show has not gone live\n")
        lang = "zh" if request.query.get("lang", "").startswith("zh") else "en"
        report = await self._followups(show, lang)
        if request.query.get("format") == "csv":
            return web.Response(text=followups_csv(report["followups"]), content_type="text/csv", charset="utf-8",
                                headers={"Content-Disposition": f'attachment; filename="followups-{show.id}.csv"'})
        return web.json_response({"show": show.public(), **report})

    async def _followups(self, show: Show, lang: str) -> dict[str, Any]:
        end = show.ended_ms or now_ms()
        events = await self._writer.call(self._writer.store.events_between, show.room, show.live_ms or show.starts_ms,
                                         end)
        reserved = [v for v, _ in await self._writer.call(self.book.reservations, show.id)]
        start = show.live_ms or show.starts_ms
        seen_before = frozenset(await self._writer.call(self._writer.store.joined_before, show.room, start))
        rows = followups(events, reserved, start, end, seen_before)
        titles = {p["id"]: p["title"] for p in show.products}
        for row in rows:
            first = row["products"][0]
            link = (f"{self._public_url or self._origin or ''}/?view=replay&room={show.room}"
                    f"&at={(show.live_ms or show.starts_ms) + int(first['shown_at_s'] * 1000)}")
            row["message"] = message(lang, show.title, [titles.get(p["id"], p["id"]) for p in row["products"]], link)
        return {"funnel": funnel(events, reserved, end, seen_before), "followups": rows}

    def routes(self) -> list[web.RouteDef]:
        def refusing(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                try:
                    response: web.StreamResponse = await handler(request)
                    return response
                except _Refused as refused:
                    return refused.response
            return wrapped

        return [web.post("/api/rooms/{room}/schedule", refusing(self.schedule)),
                web.get("/api/rooms/{room}/schedule", refusing(self.room_schedule)),
                web.get("/api/shows/{show}", refusing(self.get)),
                web.get("/api/shows/{show}/calendar.ics", refusing(self.ics)),
                web.post("/api/shows/{show}/reservation", refusing(self.reservation)),
                web.delete("/api/shows/{show}/reservation", refusing(self.reservation)),
                web.post("/api/shows/{show}/follow", refusing(self.follow)),
                web.delete("/api/shows/{show}/follow", refusing(self.follow)),
                web.post("/api/shows/{show}/end", refusing(self.end)),
                web.get("/api/shows/{show}/brief", refusing(self.brief)),
                web.post("/api/shows/{show}/ask", refusing(self.ask)),
                web.get("/api/shows/{show}/followups", refusing(self.followup_list))]


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__()
        self.response = response
