"""The operator's comment review hook (``--comment-review-url``), as AWS IVS chat's message review handler:
each comment is POSTed, before it fans out, as ``{"room", "user", "role", "text"}``; the answer
``{"action": "allow"}``, ``{"action": "deny", "reason"?}`` or ``{"action": "replace", "text"}`` decides.

A review that does not answer within its deadline, fails, or answers something else follows the stated
policy: fail-open (the comment goes out as written) or fail-closed (it is refused with ``unavailable``).
At most ``max_concurrent`` reviews run at once; past that, the policy applies at once (a slow hook never
holds a room's comments in a growing queue). Every outcome is counted (``live_relay_comment_reviews_total``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from signaling.metrics import ServerMetrics

log = logging.getLogger(__name__)

MAX_REPLACEMENT_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    text: str | None  # what to publish; None: refused
    reason: str = ""
    unavailable: bool = False  # refused because the review could not be had (fail-closed)


def decide(answer: Any, text: str, fail_open: bool) -> tuple[Verdict, str]:
    """The verdict for one review answer (already decoded JSON, or None for none), and its outcome label."""
    action = answer.get("action") if isinstance(answer, dict) else None
    if action == "allow":
        return Verdict(text), "allow"
    if action == "deny":
        reason = answer.get("reason")
        return Verdict(None, reason[:200] if isinstance(reason, str) and reason else
                       "your comment was not accepted by this room's review"), "deny"
    replacement = answer.get("text") if isinstance(answer, dict) else None
    if action == "replace" and isinstance(replacement, str) and 0 < len(replacement) <= MAX_REPLACEMENT_CHARS:
        return Verdict(replacement), "replace"
    return unreachable(text, fail_open), "bad_answer"


def unreachable(text: str, fail_open: bool) -> Verdict:
    if fail_open:
        return Verdict(text)
    return Verdict(None, "comment review is unavailable; retry", unavailable=True)


class CommentReview:
    def __init__(self, url: str, deadline: float, fail_open: bool, metrics: ServerMetrics,
                 max_concurrent: int = 100) -> None:
        self.url = url
        self.deadline = deadline
        self.fail_open = fail_open
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_concurrent)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.deadline))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def review(self, room: str, user: str, role: str, text: str) -> Verdict:
        if self._http is None or self._slots.locked():
            self.metrics.comment_reviews.labels("overloaded").inc()
            return unreachable(text, self.fail_open)
        async with self._slots:
            try:
                async with asyncio.timeout(self.deadline):
                    async with self._http.post(self.url, json={"room": room, "user": user, "role": role,
                                                               "text": text}) as response:
                        answer = await response.json(content_type=None) if response.status == 200 else None
            except TimeoutError:
                self.metrics.comment_reviews.labels("timeout").inc()
                return unreachable(text, self.fail_open)
            except (aiohttp.ClientError, ValueError, OSError) as exc:
                log.warning("comment review failed", extra={"room": room, "error": repr(exc)})
                self.metrics.comment_reviews.labels("error").inc()
                return unreachable(text, self.fail_open)
        verdict, outcome = decide(answer, text, self.fail_open)
        self.metrics.comment_reviews.labels(outcome).inc()
        return verdict
