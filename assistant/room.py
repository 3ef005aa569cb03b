"""One room's assistant: what it does with each comment.

A question (``assistant.text.is_question``) is answered once per ``window`` seconds however often it is
asked (the asks are counted); answers are rate-limited; an answer comes from the model when one is
configured and it answers in time with facts that match the cards, otherwise from the offline engine.
What neither can answer is collected for the host's digest. In ``suggest`` mode answers go to the host as
suggestions to approve instead of being posted.
"""

from __future__ import annotations

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
    """Post ``text`` as the assistant's comment, threaded to the question's seq."""

    reply_to: int
    text: str
    engine: str


@dataclass
class Suggest:
    """Offer ``text`` to the host (suggest mode); ``id`` approves it."""

    id: str
    reply_to: int
    question: str
    text: str


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
    answered_at: deque[float] = field(default_factory=deque)
    answers: int = 0
    rate_limited: int = 0
    # What happened to the last comment: None (not a question), "repeated", "unanswered", "rate_limited",
    # "suggested" or "answered"; and the product its answer was about (for analytics).
    last_outcome: str | None = None
    last_product: str | None = None
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

    async def on_comment(self, seq: int, text: str, now_ms: float) -> Post | Suggest | None:
        """What to do about one viewer comment (None: nothing now)."""
        self.last_outcome, self.last_product = None, None
        if not is_question(text):
            return None
        now = time.monotonic()
        key = question_key(text) or text.strip().lower()
        seen = self.asked.get(key)
        if seen is not None and now - seen.first < self.window_s:
            seen.count += 1
            self.last_outcome = "repeated"
            return None  # asked again within the window: counted, not answered again
        self.asked[key] = seen = Asked(text, 1, now, False)
        self.asked.move_to_end(key)
        while len(self.asked) > MAX_TRACKED:
            self.asked.popitem(last=False)
        answer = await self._answer(text, now_ms)
        if answer is None:
            self.last_outcome = "unanswered"
            return None  # goes to the digest
        self.last_product = answer.product
        while self.answered_at and now - self.answered_at[0] > self.rate_window_s:
            self.answered_at.popleft()
        if len(self.answered_at) >= self.max_answers:
            self.rate_limited += 1
            self.last_outcome = "rate_limited"
            return None
        self.answered_at.append(now)
        seen.answered = True
        self.last_outcome = "suggested" if self.mode == "suggest" else "answered"
        if self.mode == "suggest":
            suggestion = Suggest(secrets.token_hex(4), seq, text, answer.text)
            self.suggestions[suggestion.id] = suggestion
            while len(self.suggestions) > MAX_SUGGESTIONS:
                self.suggestions.popitem(last=False)
            return suggestion
        self.answers += 1
        return Post(seq, answer.text, answer.engine)

    def vocabulary(self) -> list[str]:
        """Phrases a listener should expect: product names (cards and catalog) and the FAQ's questions."""
        return ([str(c.get("title", "")) for c in self.cards.values()] +
                [p.title for p in self.catalog.products.values()] + [f.question for f in self.catalog.faq])

    async def answer_text(self, text: str, now_ms: float) -> str | None:
        """An answer to ``text`` as said in a call: no window, no rate limit, nothing posted."""
        answer = await self._answer(text, now_ms)
        return answer.text if answer is not None else None

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
        return Post(suggestion.reply_to, suggestion.text, "approved")

    def digest(self, limit: int = 10) -> dict[str, Any]:
        """For the host: questions nobody answered (most asked first) and how often answered ones came again."""
        unanswered = sorted((a for a in self.asked.values() if not a.answered), key=lambda a: -a.count)
        repeated = sorted((a for a in self.asked.values() if a.answered and a.count > 1), key=lambda a: -a.count)
        return {"unanswered": [{"question": a.text, "count": a.count} for a in unanswered[:limit]],
                "answered_again": [{"question": a.text, "count": a.count} for a in repeated[:limit]]}
