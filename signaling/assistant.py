"""The assistant in the room, on the server: turned on or off by the host, told of every comment and card.

Configuration lives in the room store (``assistant``: on and mode, also in ``joined.state``;
``assistant_catalog``: the catalog text), so every node of a room shares it; a change is broadcast so
nodes reload. Cards are learnt from every publication; a comment is handled by the node that accepted it
(so it is answered once), off the commenter's request path (``hub.spawn``). Answers are durable
``comment`` events with ``role: "assistant"`` and ``reply_to`` (the question's seq); suggestions (suggest
mode) and the digest of unanswered and repeated questions go to the room's hosts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from assistant.catalog import Catalog, CatalogError, parse_catalog
from assistant.engine import Answer, LlmEngine, ModelGate
from assistant.room import AnswerBudget, Post, RoomAssistant, Suggest
from assistant.text import warm_up
from protocol import ErrorCode, ProtocolError, Role, now_ms
from signaling.brokers import EventStream, RoomStore
from signaling.hub import Hub
from signaling.scenes.effects import direct_envelope
from signaling.session import Session

log = logging.getLogger(__name__)

ASSISTANT_USER = "assistant"
ASSISTANT_ROLE = "assistant"  # not a token role: no client can join as it, so none can pass for it
MODES = ("auto", "suggest")
MAX_ROOMS = 10_000  # rooms whose cards are remembered before their assistant is on
MAX_PRESHOW = 64  # shows whose pre-show assistant is kept ready


NODE_ANSWERS = 60  # answers per window across every room of the node
NODE_ANSWER_WINDOW_S = 10.0
MODEL_CONCURRENCY = 8
MAX_BODY_BYTES = 160 * 1024  # PUT /api/rooms/ROOM/assistant: a 64 KiB catalog, escaped in JSON
PARSE_DEADLINE_S = 2.0


async def parse_off_loop(text: str, fmt: str) -> Catalog:
    """``parse_catalog`` in a worker thread, within a deadline: the event loop never waits on a catalog.
    Raises CatalogError."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(parse_catalog, text, fmt), PARSE_DEADLINE_S)
    except TimeoutError:
        raise CatalogError(f"the catalog took longer than {PARSE_DEADLINE_S:g} s to read") from None


class AssistantService:
    def __init__(self, stream: EventStream, store: RoomStore, hub: Hub, llm_url: str | None = None,
                 llm_model: str | None = None, llm_deadline: float = 2.0, digest_interval: float = 10.0) -> None:
        self.stream = stream
        self.store = store
        self.hub = hub
        self.llm_url = llm_url
        self.llm_model = llm_model or "gpt-4o-mini"
        self.llm_deadline = llm_deadline
        self.digest_interval = digest_interval
        self.rooms: dict[str, RoomAssistant] = {}  # rooms of this node with the assistant on
        self._loaded: set[str] = set()  # rooms whose configuration was read (on or off)
        self._loading: dict[str, asyncio.Lock] = {}
        # room -> cards seen there before the assistant was turned on (newest rooms last, at most MAX_ROOMS)
        self._cards: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._digested: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.latencies_ms: list[float] = []  # question accepted -> answer published (for benchmarks)
        # Every room's answers on this node share one budget, and the model is asked at most this many
        # questions at once (past it, the offline engine answers): a crowd cannot buy model calls.
        self.node_budget = AnswerBudget(NODE_ANSWERS, NODE_ANSWER_WINDOW_S)
        self.model_gate = ModelGate(MODEL_CONCURRENCY)
        # Told of every question the assistant saw: (room, product or None, outcome, engine or None).
        self.on_question: Callable[[str, str | None, str, str | None], None] | None = None
        self._preshow: OrderedDict[str, tuple[str, RoomAssistant]] = OrderedDict()  # show -> (cards key, assistant)
        self._preshow_llm: LlmEngine | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._digest_loop(), name="assistant-digest")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for assistant in self.rooms.values():
            if assistant.llm is not None:
                await assistant.llm.close()
        if self._preshow_llm is not None:
            await self._preshow_llm.close()

    # -- configuration ----------------------------------------------------------------------------------------

    async def configure(self, room: str, on: bool, mode: str | None, catalog: str | None,
                        fmt: str | None) -> Catalog | None:
        """Turn the room's assistant on or off, set its mode and (optionally) its catalog, which is returned as
        read (what the host is told: how many products and answers it holds). Raises ValueError."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        parsed = None
        if catalog is not None:
            parsed = await parse_off_loop(catalog, fmt or "yaml")  # refuse a bad catalog now, with its reason
            await self.store.set_state(room, "assistant_catalog", {"text": catalog, "format": fmt or "yaml"})
        state = await self.store.get_state(room)
        current = state.get("assistant") or {}
        view = {"on": on, "mode": mode or current.get("mode") or "auto"}
        await self.store.set_state(room, "assistant", view)
        await self.stream.broadcast(room, {"type": "assistant", "room": room, "state": view, "server_ts": now_ms()})
        return parsed

    def observe_broadcast(self, room: str, data: dict[str, Any]) -> bool:
        if data.get("type") == "assistant":  # reload this room's configuration at its next comment
            self._loaded.discard(room)
            old = self.rooms.pop(room, None)
            if old is not None:
                self._cards[room] = old.cards
                if old.llm is not None:
                    self.hub.spawn(old.llm.close(), f"assistant-llm-close-{room}")
        return False

    async def _room(self, room: str) -> RoomAssistant | None:
        if room in self._loaded:
            return self.rooms.get(room)
        lock = self._loading.setdefault(room, asyncio.Lock())
        async with lock:  # the first comments of a room arrive together: load its assistant once
            if room not in self._loaded:
                await self._load(room)
                self._loaded.add(room)
            self._loading.pop(room, None)
        return self.rooms.get(room)

    async def _load(self, room: str) -> None:
        state = await self.store.get_state(room)
        view = state.get("assistant") or {}
        if not view.get("on"):
            self.rooms.pop(room, None)
            return
        stored = state.get("assistant_catalog") or {}
        try:
            catalog = await parse_off_loop(stored.get("text") or "", stored.get("format") or "yaml")
        except CatalogError as exc:
            log.warning("assistant catalog unreadable", extra={"room": room, "error": str(exc)})
            catalog = parse_catalog("", "yaml")
        llm = LlmEngine(self.llm_url, self.llm_model, os.environ.get("LIVE_RELAY_ASSISTANT_KEY") or
                        os.environ.get("OPENAI_API_KEY"), self.llm_deadline, self.model_gate) if self.llm_url else None
        # The Chinese dictionary loads once per process (about half a second), off the loop, and only where
        # an assistant is on: servers that never use one never pay for it.
        await asyncio.get_running_loop().run_in_executor(None, warm_up)
        assistant = RoomAssistant(mode=view.get("mode") or "auto", catalog=catalog, llm=llm,
                                  node_budget=self.node_budget)
        for card in self._cards.pop(room, {}).values():
            assistant.on_card({"product": card, "server_ts": card.get("server_ts")})
        if (product := state.get("product")) is not None:
            assistant.on_card(product)
        self.rooms[room] = assistant

    async def preshow_answer(self, room: str, show: str, products: list[dict[str, Any]], question: str,
                             ) -> Answer | None:
        """A question on a show's page before the show: answered from the show's product cards and the room's
        catalog (when the host gave one), by the same engines and fact check as in the room, whether or
        not the room's assistant is on (the cards are the seller's own facts). The assistant for a show is
        kept (at most ``MAX_PRESHOW``, newest last) until its cards or the catalog change."""
        state = await self.store.get_state(room)
        stored = state.get("assistant_catalog") or {}
        key = json.dumps([stored, products], sort_keys=True)
        kept = self._preshow.get(show)
        if kept is None or kept[0] != key:
            try:
                catalog = await parse_off_loop(stored.get("text") or "", stored.get("format") or "yaml")
            except CatalogError:
                catalog = parse_catalog("", "yaml")
            await asyncio.get_running_loop().run_in_executor(None, warm_up)
            if self._preshow_llm is None and self.llm_url:
                self._preshow_llm = LlmEngine(self.llm_url, self.llm_model, os.environ.get("LIVE_RELAY_ASSISTANT_KEY")
                                              or os.environ.get("OPENAI_API_KEY"), self.llm_deadline, self.model_gate)
            assistant = RoomAssistant(catalog=catalog, llm=self._preshow_llm)
            for product in products:
                assistant.on_card({"product": product})
            assistant.current = None  # no card is on screen before the show
            kept = self._preshow[show] = (key, assistant)
        self._preshow.move_to_end(show)
        while len(self._preshow) > MAX_PRESHOW:
            self._preshow.popitem(last=False)
        return await kept[1].answer(question, now_ms())

    async def room_assistant(self, room: str) -> RoomAssistant | None:
        """The room's assistant (None: it is off there)."""
        return await self._room(room)

    async def answer_text(self, room: str, text: str) -> str | None:
        assistant = await self._room(room)
        return await assistant.answer_text(text, now_ms()) if assistant is not None else None

    # -- what happens in the room -------------------------------------------------------------------------------

    def observe_publication(self, room: str, event: dict[str, Any]) -> None:
        """Every durable event of the node's rooms: cards are learnt wherever they were pushed."""
        if event.get("type") != "product":
            return
        assistant = self.rooms.get(room)
        if assistant is not None:
            assistant.on_card(event)
        elif isinstance(event.get("product"), dict):
            cards = self._cards.setdefault(room, {})
            self._cards.move_to_end(room)
            cards[event["product"]["id"]] = {**event["product"], "server_ts": event.get("server_ts")}
            while len(cards) > 200:
                cards.pop(next(iter(cards)))
            while len(self._cards) > MAX_ROOMS:
                self._cards.popitem(last=False)

    def comment_accepted(self, session: Session, room: str, event: dict[str, Any]) -> None:
        """A viewer's comment this node accepted: think about it off the commenter's path."""
        if session.role is Role.VIEWER:
            self.hub.spawn(self._handle(room, event), f"assistant-{room}")

    async def _handle(self, room: str, event: dict[str, Any]) -> None:
        assistant = await self._room(room)
        if assistant is None:
            return
        outcome = await assistant.on_comment(int(event.get("seq", 0)), str(event.get("text", "")), now_ms())
        action = outcome.action
        if outcome.kind is not None and self.on_question is not None:
            self.on_question(room, outcome.product, outcome.kind, action.engine if isinstance(action, Post) else None)
        if isinstance(action, Post):
            await self._post(room, action, event.get("server_ts"))
        elif isinstance(action, Suggest):
            await self._to_hosts(room, {"type": "assistant_suggestion", "id": action.id, "reply_to": action.reply_to,
                                        "question": action.question, "text": action.text})

    async def _post(self, room: str, post: Post, asked_ts: float | None) -> None:
        publication = await self.stream.publish(room, {
            "type": "comment", "text": post.text, "user": ASSISTANT_USER, "role": ASSISTANT_ROLE,
            "name": "Assistant", "reply_to": post.reply_to, "engine": post.engine, "server_ts": now_ms(),
            **({"product": post.product} if post.product else {})})
        if asked_ts is not None:
            self.latencies_ms.append(publication.data["server_ts"] - asked_ts)
            del self.latencies_ms[:-10_000]

    async def _to_hosts(self, room: str, message: dict[str, Any]) -> None:
        message.setdefault("room", room)
        message.setdefault("server_ts", now_ms())
        await self.stream.broadcast(room, direct_envelope(room, message, None, [Role.HOST], None))

    async def approve(self, room: str, suggestion_id: str) -> bool:
        assistant = await self._room(room)
        post = assistant.approve(suggestion_id) if assistant is not None else None
        if post is None:
            return False
        await self._post(room, post, None)
        return True

    async def _digest_loop(self) -> None:
        while True:
            await asyncio.sleep(self.digest_interval)
            for room, assistant in list(self.rooms.items()):
                digest = assistant.digest()
                key = repr(digest)
                if (digest["unanswered"] or digest["answered_again"]) and self._digested.get(room) != key:
                    self._digested[room] = key
                    try:
                        await self._to_hosts(room, {"type": "assistant_digest", **digest})
                    except Exception as exc:  # the broker is away: the next digest says it again
                        log.warning("assistant digest not sent", extra={"room": room, "error": repr(exc)})

    # -- the host's controls ---------------------------------------------------------------------------------

    async def handle_set(self, session: Session, message: dict[str, Any]) -> None:
        ref = message.get("id")
        if session.role is not Role.HOST or session.room is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the host can set the assistant", ref)
        try:
            await self.configure(session.room, message["on"], message.get("mode"), message.get("catalog"),
                                 message.get("format"))
        except (ValueError, CatalogError) as exc:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc), ref) from None
        if ref is not None:
            session.send({"type": "ok", "id": ref})

    async def handle_approve(self, session: Session, message: dict[str, Any]) -> None:
        ref = message.get("id")
        if session.role is not Role.HOST or session.room is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the host can approve the assistant's answers", ref)
        if not await self.approve(session.room, message["suggestion"]):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such suggestion (approved already, or too old)", ref)
        if ref is not None:
            session.send({"type": "ok", "id": ref})

    def handlers(self) -> dict[str, Any]:
        return {"assistant": self.handle_set, "assistant_approve": self.handle_approve}

    async def http_set(self, request: web.Request, grant_check: Any, refuse: Any) -> web.StreamResponse:
        room = request.match_info["room"]
        try:
            await grant_check(request, room, roles=(Role.HOST,))
        except ProtocolError as exc:
            return refuse(exc)
        try:
            if (request.content_length or 0) > MAX_BODY_BYTES:
                raise ValueError(f"a body of at most {MAX_BODY_BYTES // 1024} KiB")
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                raise ValueError(f"a body of at most {MAX_BODY_BYTES // 1024} KiB")
            try:
                body = json.loads(raw)
            except RecursionError:
                raise ValueError("JSON nested too deep") from None
            if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
                raise ValueError("a JSON object with on (true/false), and mode, catalog, format if wanted")
            fmt = body.get("format")
            if fmt is not None and fmt not in ("yaml", "json", "markdown"):
                raise ValueError("format must be yaml, json or markdown")
            parsed = await self.configure(room, body["on"], body.get("mode"), body.get("catalog"), fmt)
        except (ValueError, CatalogError) as exc:
            return web.Response(status=400, text=f"bad_message: {exc}\n")
        answer: dict[str, Any] = {"room": room, "on": body["on"]}
        if parsed is not None:
            answer.update(products=len(parsed.products), faq=len(parsed.faq))
        return web.json_response(answer)
