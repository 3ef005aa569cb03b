"""The rules of the message channel: who may send comments, likes, product pushes and announcements, how
often and how large, and publishing what passes through the broker (sequenced, kept in history, acked
with its seq/epoch). Client-measured figures (``client_stats``) go into the server's metrics. What
passes is also told to the analytics sink (``signaling/analytics.py``), which never blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from protocol import ErrorCode, ProtocolError, Ref, Role, ack_message, now_ms
from signaling.analytics import AnalyticsSink
from signaling.assistant import AssistantService
from signaling.brokers import BrokerUnavailable, EventStream, RoomStore
from signaling.config import LimitsConfig
from signaling.hub import Hub
from signaling.metrics import ServerMetrics
from signaling.moderation import Moderation
from signaling.ratelimit import TokenBucket
from signaling.session import Session

log = logging.getLogger(__name__)

_PUBLISHERS = (Role.HOST, Role.COHOST)

ChannelHandler = Callable[[Session, dict[str, Any]], Awaitable[None]]


class Channel:
    def __init__(self, hub: Hub, stream: EventStream, store: RoomStore, limits: LimitsConfig,
                 metrics: ServerMetrics, analytics: AnalyticsSink | None = None,
                 assistant: AssistantService | None = None, moderation: Moderation | None = None) -> None:
        self.hub = hub
        self.stream = stream
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.analytics = analytics or AnalyticsSink()
        self.assistant = assistant
        self.moderation = moderation
        self._user_buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def handlers(self) -> dict[str, ChannelHandler]:
        return {"comment": self.comment, "like": self.like, "product": self.product, "announce": self.announce,
                "client_stats": self.client_stats, "product_seen": self.product_seen}

    # -- messages ---------------------------------------------------------------------------------------------

    async def comment(self, session: Session, message: dict[str, Any]) -> None:
        ref, room, limits = message.get("id"), _room_of(session), self.limits
        if session.anonymous:
            raise ProtocolError(ErrorCode.FORBIDDEN, "anonymous viewers cannot comment", ref)
        text = message["text"]
        if len(text) > limits.max_comment_chars:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"comment longer than {limits.max_comment_chars} characters", ref)
        viewer = session.role is Role.VIEWER
        rate, burst = (limits.comment_rate, limits.comment_burst) if viewer else \
            (limits.host_comment_rate, limits.host_comment_burst)
        if rate and not self._take(room, session.user, "comment", rate, burst):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many comments; slow down", ref)
        if viewer and limits.comment_address_rate and not self._take(
                room, "@" + session.remote, "comment", limits.comment_address_rate, limits.comment_address_burst):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many comments from your network; slow down", ref)
        if self.moderation is not None:
            text = await self.moderation.screen_comment(session, room, text, ref)
        await self._publish(session, room, {"type": "comment", "text": text}, message)

    async def like(self, session: Session, message: dict[str, Any]) -> None:
        ref, room = message.get("id"), _room_of(session)
        count = message.get("count", 1)
        if count > self.limits.max_like_count:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"count must be at most {self.limits.max_like_count}", ref)
        granted = self._take_taps(session, room, count)
        if not granted:
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many likes; slow down", ref)
        chat = self.hub.room(room)
        if chat is not None:
            chat.pending_likes += granted  # summed and published by the ticker
        self.analytics.liked(session, room, granted)

    async def product(self, session: Session, message: dict[str, Any]) -> None:
        ref, room, limits = message.get("id"), _room_of(session), self.limits
        if session.role not in _PUBLISHERS:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a host or co-host can push products", ref)
        if not self._take(room, session.user, "product", limits.product_rate, limits.product_burst):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many product pushes", ref)
        event = await self._publish(session, room, {"type": "product", "product": message["product"]}, message)
        await self._store(self.store.set_state(room, "product", event), ref)

    async def announce(self, session: Session, message: dict[str, Any]) -> None:
        ref, room, limits = message.get("id"), _room_of(session), self.limits
        if session.role is not Role.HOST:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the host can announce", ref)
        text = message["text"]
        if len(text) > limits.max_announce_chars:
            raise ProtocolError(ErrorCode.TOO_LARGE,
                                f"announcement longer than {limits.max_announce_chars} characters", ref)
        if not self._take(room, session.user, "product", limits.product_rate, limits.product_burst):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many announcements", ref)
        pinned = message.get("pinned", False)
        event = await self._publish(session, room, {"type": "announce", "text": text, "pinned": pinned}, message)
        if pinned:
            # Pinning an empty text clears the pinned message.
            await self._store(self.store.set_state(room, "pinned", event if text else None), ref)

    async def product_seen(self, session: Session, message: dict[str, Any]) -> None:
        """The viewer's page showed a product card (an impression, for the conversion funnel)."""
        self.analytics.seen(session, message["product"])

    async def client_stats(self, session: Session, message: dict[str, Any]) -> None:
        measured = ("call_setup_ms", "first_frame_ms", "freezes", "message_latency_ms")
        stats: dict[str, Any] = {k: message[k] for k in measured if k in message}
        if stats:
            self.analytics.quality(session, stats)
        if "call_setup_ms" in message:
            self.metrics.client_call_setup.observe(max(0.0, message["call_setup_ms"]) / 1000.0)
        if "first_frame_ms" in message:
            self.metrics.client_first_frame.observe(max(0.0, message["first_frame_ms"]) / 1000.0)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _bucket(self, room: str, who: str, what: str, rate: float, burst: int) -> TokenBucket:
        key = (room, who, what)
        bucket = self._user_buckets.get(key)
        if bucket is None:
            bucket = self._user_buckets[key] = TokenBucket(rate, burst)
        return bucket

    def _take(self, room: str, user: str, what: str, rate: float, burst: int) -> bool:
        return self._bucket(room, user, what, rate, burst).take()

    def _take_taps(self, session: Session, room: str, count: int) -> int:
        """Taps allowed by the connection's, the user's and the address's buckets (what one allows and a
        later one refuses is given back)."""
        limits = self.limits
        buckets = [session.like_bucket, self._bucket(room, "@" + session.remote, "like", limits.like_address_rate,
                                                     limits.like_address_burst)]
        if not session.anonymous:
            buckets.append(self._bucket(room, session.user, "like", limits.like_rate, limits.like_burst))
        granted = count
        taken: list[tuple[TokenBucket, int]] = []
        for bucket in buckets:
            got = bucket.take_up_to(granted)
            taken.append((bucket, got))
            granted = min(granted, got)
        for bucket, got in taken:
            if got > granted:
                bucket.give_back(got - granted)
        return granted

    def forget_idle_buckets(self) -> None:
        """Buckets that refilled are as good as new: drop them (the ticker calls this)."""
        for key, bucket in list(self._user_buckets.items()):
            if bucket.full:
                del self._user_buckets[key]

    async def _publish(self, session: Session, room: str, event: dict[str, Any],
                       message: dict[str, Any]) -> dict[str, Any]:
        received = now_ms()
        event["user"] = session.user
        event["role"] = str(session.role)
        if session.name:
            event["name"] = session.name
        sent = message.get("ts")
        if sent is not None:
            event["ts"] = sent
            self.metrics.uplink_latency.labels(event["type"]).observe(max(0.0, received - sent) / 1000.0)
        event["server_ts"] = received
        ref = message.get("id")
        publication = await self._store(self.stream.publish(room, event), ref)
        if ref is not None:
            session.send(ack_message(ref, publication.seq, publication.epoch))
        self.analytics.published(session, room, publication.data)
        if self.assistant is not None and event["type"] == "comment":
            self.assistant.comment_accepted(session, room, publication.data)
        return publication.data

    @staticmethod
    async def _store(call: Awaitable[Any], ref: Ref) -> Any:
        try:
            return await call
        except BrokerUnavailable as exc:
            log.warning("broker call failed", extra={"error": repr(exc)})
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None


def _room_of(session: Session) -> str:
    assert session.room is not None  # the dispatch table routes only joined connections here
    return session.room
