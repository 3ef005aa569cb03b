"""One room's assistant: what it does with each comment.

A question (``assistant.text.is_question``) is answered once per ``window`` seconds however often it is
asked (the asks are counted). The answer budget (the room's, and the node's shared by every room) is taken
*before* anything is asked of an engine: a question over budget goes to the host's digest and costs no
model call. An answer comes from the model when one is configured and it answers in time with text that
carries no claim (``assistant.engine.claim_in``), otherwise from the offline engine. What neither can
answer is collected for the digest. In ``suggest`` mode answers go to the host as suggestions to approve.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from assistant.catalog import Catalog
from assistant.engine import Answer, Knowledge, LlmEngine, OfflineEngine
from assistant.text import is_question, question_key

MAX_TRACKED = 2000  # distinct questions remembered per room
MAX_SUGGESTIONS = 100


@dataclass
class Asked:
    text: str
    count: int
    first: float
    answered: bool


@dataclass
class Post:
    """Post ``text`` as the assistant's comment, threaded to the question's seq; ``product``: the product
    the answer is about (a pushed card's id, or a catalog product's), when it is about one."""

    reply_to: int
    text: str
    engine: str
    product: str | None = None


@dataclass
class Suggest:
    """Offer ``text`` to the host (suggest mode); ``id`` approves it."""

    id: str
    reply_to: int
    question: str
    text: str
    product: str | None = None


class AnswerBudget:
    """At most ``limit`` answers per ``window_s`` seconds (a sliding window); a reservation not used is
    given back."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._taken: deque[float] = deque()

    def take(self, now: float) -> bool:
        while self._taken and now - self._taken[0] > self.window_s:
            self._taken.popleft()
        if len(self._taken) >= self.limit:
            return False
        self._taken.append(now)
        return True

    def give_back(self, at: float) -> None:
        with contextlib.suppress(ValueError):
            self._taken.remove(at)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one comment: ``kind`` is None (not a question), "repeated", "unanswered",
    "rate_limited", "suggested" or "answered"; ``product`` the product the answer was about."""

    action: Post | Suggest | None = None
    kind: str | None = None
    product: str | None = None


@dataclass
class RoomAssistant:
    mode: str = "auto"  # or "suggest"
    window_s: float = 60.0
    max_answers: int = 5  # per `rate_window_s`
    rate_window_s: float = 10.0
    catalog: Catalog = field(default_factory=Catalog)
    llm: LlmEngine | None = None
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str | None = None  # the card on screen now
    asked: OrderedDict[str, Asked] = field(default_factory=OrderedDict)
    suggestions: OrderedDict[str, Suggest] = field(default_factory=OrderedDict)
    answers: int = 0
    rate_limited: int = 0
    node_budget: AnswerBudget | None = None  # shared by every room of the node
    budget: AnswerBudget | None = None  # the room's own (made from max_answers per rate_window_s)
    _knowledge: Knowledge | None = None
    _offline: OfflineEngine = field(default_factory=OfflineEngine)

    def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._knowledge = None

    def on_card(self, event: dict[str, Any]) -> None:
        """A product card was pushed: its facts are the truth from now on."""
        product = event.get("product")
        if isinstance(product, dict) and isinstance(product.get("id"), str):
            self.cards[product["id"]] = {**product, "server_ts": event.get("server_ts")}
            self.current = product["id"]
            self._knowledge = None
            # The facts changed: a question answered before gets the new answer if it comes again.
            for key in [k for k, a in self.asked.items() if a.answered]:
                del self.asked[key]

    @property
    def knowledge(self) -> Knowledge:
        if self._knowledge is None:
            self._knowledge = Knowledge(self.catalog, self.cards)
        return self._knowledge

    def _reserve(self, now: float) -> bool:
        """Take one answer from the room's budget and the node's (both, or neither)."""
        if self.budget is None:
            self.budget = AnswerBudget(self.max_answers, self.rate_window_s)
        if not self.budget.take(now):
            return False
        if self.node_budget is not None and not self.node_budget.take(now):
            self.budget.give_back(now)
            return False
        return True

    def _release(self, at: float) -> None:
        if self.budget is not None:
            self.budget.give_back(at)
        if self.node_budget is not None:
            self.node_budget.give_back(at)

    async def on_comment(self, seq: int, text: str, now_ms: float) -> Outcome:
        """What to do about one viewer comment. Safe to run for many comments at once: every decision
        before the engine is asked is taken without awaiting."""
        if not is_question(text):
            return Outcome()
        now = time.monotonic()
        key = question_key(text) or text.strip().lower()
        seen = self.asked.get(key)
        if seen is not None and now - seen.first < self.window_s:
            seen.count += 1
            return Outcome(kind="repeated")  # asked again within the window: counted, not answered again
        self.asked[key] = seen = Asked(text, 1, now, False)
        self.asked.move_to_end(key)
        while len(self.asked) > MAX_TRACKED:
            self.asked.popitem(last=False)
        if not self._reserve(now):
            self.rate_limited += 1
            return Outcome(kind="rate_limited")  # over budget: to the digest, no engine asked
        answer = await self._answer(text, now_ms)
        if answer is None:
            self._release(now)
            return Outcome(kind="unanswered")  # goes to the digest
        seen.answered = True
        if self.mode == "suggest":
            suggestion = Suggest(secrets.token_hex(4), seq, text, answer.text, answer.product)
            self.suggestions[suggestion.id] = suggestion
            while len(self.suggestions) > MAX_SUGGESTIONS:
                self.suggestions.popitem(last=False)
            return Outcome(suggestion, "suggested", answer.product)
        self.answers += 1
        return Outcome(Post(seq, answer.text, answer.engine, answer.product), "answered", answer.product)

    def vocabulary(self) -> list[str]:
        """Phrases a listener should expect: product names (cards and catalog) and the FAQ's questions."""
        return ([str(c.get("title", "")) for c in self.cards.values()] +
                [p.title for p in self.catalog.products.values()] + [f.question for f in self.catalog.faq])

    async def answer_text(self, text: str, now_ms: float) -> str | None:
        """An answer to ``text`` as said in a call: no window, no rate limit, nothing posted."""
        answer = await self._answer(text, now_ms)
        return answer.text if answer is not None else None

    async def answer(self, text: str, now_ms: float) -> Answer | None:
        """An answer to ``text`` with where it came from (the engine, the product): no window, no rate
        limit, nothing posted (a show page before the show asks this way)."""
        return await self._answer(text, now_ms)

    async def _answer(self, text: str, now_ms: float) -> Answer | None:
        knowledge = self.knowledge
        if self.llm is not None:
            answer = await self.llm.answer(text, knowledge, self.current)
            if answer is not None:
                return answer
        return self._offline.answer(text, knowledge, self.current, now_ms)

    def approve(self, suggestion_id: str) -> Post | None:
        suggestion = self.suggestions.pop(suggestion_id, None)
        if suggestion is None:
            return None
        self.answers += 1
        return Post(suggestion.reply_to, suggestion.text, "approved", suggestion.product)

    def digest(self, limit: int = 10) -> dict[str, Any]:
        """For the host: questions nobody answered (most asked first) and how often answered ones came again."""
        unanswered = sorted((a for a in self.asked.values() if not a.answered), key=lambda a: -a.count)
        repeated = sorted((a for a in self.asked.values() if a.answered and a.count > 1), key=lambda a: -a.count)
        return {"unanswered": [{"question": a.text, "count": a.count} for a in unanswered[:limit]],
                "answered_again": [{"question": a.text, "count": a.count} for a in repeated[:limit]]}
