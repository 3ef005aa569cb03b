"""Moderation for hosts and co-hosts, room-wide on every node, and token revocation.

A room's rules (``signaling.rules.RoomRules``: removed and muted users, blocked words, slow mode, deleted
comments) are kept whole in the room store under ``moderation``; a change is written there first and then
broadcast (``moderation_rules``, consumed by every node's ``Moderation``, never fanned out as is), so each
node replaces its copy at once, closes a removed user's local connections (4011) and tells its own
moderators and the user concerned (a ``moderation`` event). A node that opens a room reads the rules once.
Two moderators changing the same room's rules at the same instant on two nodes: the last write wins (as
for scenes); the next change re-announces the whole.

Deleting a comment publishes a durable ``comment_deleted`` event (live viewers and anyone resuming learn of
it in order), and late joiners' history leaves the comment out. Comments pass ``screen_comment`` before
they fan out: mute, slow mode, blocked words, then the operator's review hook (``signaling.review``).

Revocation: the operator revokes a token id, or every token of a user or a room issued before now, through
``POST /api/admin/revoke`` (an admin token; ``live-relay revoke`` makes one); the broker keeps the list
for every node, and connections holding a revoked token are closed (4001) wherever they are.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from protocol import (
    CloseCode,
    ErrorCode,
    Grant,
    ProtocolError,
    Ref,
    Role,
    now_ms,
    token_claims,
    validate_room_name,
    verify_admin_token,
)
from signaling.brokers import BrokerUnavailable, EventStream, Publication, Registry, RoomStore
from signaling.hub import Hub
from signaling.metrics import ServerMetrics
from signaling.ratelimit import TokenBucket
from signaling.review import CommentReview
from signaling.rules import RoomRules, is_revoked, may_moderate, revocation_scopes
from signaling.session import Session

log = logging.getLogger(__name__)

_MODERATORS = (Role.HOST, Role.COHOST)
DEFAULT_REMOVE_S = 3600  # a removal without a duration lasts an hour
DEFAULT_MUTE_S = 600
MAX_CACHED_ROOMS = 10_000
MAX_SLOW_BUCKETS = 100_000

ModerationHandler = Callable[[Session, dict[str, Any]], Awaitable[None]]


class Moderation:
    def __init__(self, hub: Hub, store: RoomStore, stream: EventStream, registry: Registry,
                 metrics: ServerMetrics, review: CommentReview | None = None) -> None:
        self.hub = hub
        self.store = store
        self.stream = stream
        self.registry = registry
        self.metrics = metrics
        self.review = review
        # This node's copy of each local room's rules, tied to the ChatRoom object it was read for: a room
        # closed and opened again here reads them afresh.
        self._rules: OrderedDict[str, tuple[object, RoomRules]] = OrderedDict()
        self._slow: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def handlers(self) -> dict[str, ModerationHandler]:
        return {"remove_user": self.remove_user, "mute_user": self.mute_user, "delete_comment": self.delete_comment,
                "block_words": self.block_words, "slow_mode": self.slow_mode}

    # -- the rules, as this node knows them ------------------------------------------------------------------

    async def rules(self, room: str) -> RoomRules:
        """The room's rules (read from the store when this node has no current copy). Raises
        BrokerUnavailable."""
        chat = self.hub.room(room)
        cached = self._rules.get(room)
        if cached is not None and chat is not None and cached[0] is chat:
            return cached[1]
        rules = RoomRules.from_dict((await self.store.get_state(room)).get("moderation"))
        if chat is not None:
            self._remember(room, chat, rules)
        return rules

    def _remember(self, room: str, chat: object, rules: RoomRules) -> None:
        self._rules[room] = (chat, rules)
        self._rules.move_to_end(room)
        while len(self._rules) > MAX_CACHED_ROOMS:
            self._rules.popitem(last=False)

    async def _change(self, room: str, change: Callable[[RoomRules], RoomRules], event: dict[str, Any],
                      ref: Ref) -> RoomRules:
        """Read, change, store and announce the room's rules; ``event`` says what changed."""
        try:
            rules = change(RoomRules.from_dict((await self.store.get_state(room)).get("moderation")))
            await self.store.set_state(room, "moderation", rules.to_dict())
            await self.stream.broadcast(room, {"type": "moderation_rules", "room": room, "rules": rules.to_dict(),
                                               "event": {"type": "moderation", **event, "server_ts": now_ms()}})
        except BrokerUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        self.metrics.moderation.labels(event["action"]).inc()
        return rules

    def observe(self, room: str, data: dict[str, Any]) -> bool:
        """Broadcasts of this node's rooms: new rules replace the copy, and the change is carried out here.
        Revocations close the connections they cover."""
        kind = data.get("type")
        if kind == "moderation_rules":
            self._apply(room, RoomRules.from_dict(data.get("rules")), data.get("event") or {})
            return True
        if kind == "tokens_revoked":
            self._close_revoked(room, data.get("entries") or {})
            return True
        return False

    def _apply(self, room: str, rules: RoomRules, event: dict[str, Any]) -> None:
        chat = self.hub.room(room)
        if chat is None:
            return
        self._remember(room, chat, rules)
        target = event.get("user")
        for session in list(chat.sessions.values()):
            # Everyone hears of slow mode; moderators hear of everything; a user hears what concerns them.
            told = event.get("action") == "slow_mode" or session.role in _MODERATORS or session.user == target
            if told:
                session.send(event)
            if event.get("action") == "removed" and session.user == target:
                self.hub.kick(session, CloseCode.REMOVED, "removed from the room by a moderator")

    def _close_revoked(self, room: str, entries: dict[str, float]) -> None:
        chat = self.hub.room(room)
        for session in list(chat.sessions.values()) if chat is not None else []:
            if session.grant is not None and is_revoked(session.grant, entries):
                self.hub.kick(session, CloseCode.UNAUTHORIZED, "this token was revoked")

    # -- checks other parts ask for -----------------------------------------------------------------------------

    async def check_join(self, room: str, user: str, ref: Ref) -> None:
        """Raises ProtocolError(removed) for a user a moderator removed from the room (or BrokerUnavailable)."""
        until = (await self.rules(room)).removed_until(user, now_ms())
        if until is not None:
            raise ProtocolError(ErrorCode.REMOVED, f"removed from this room by a moderator for "
                                f"{_minutes(until - now_ms())}", ref)

    async def check_token(self, room: str, grant: Grant, ref: Ref) -> None:
        """Raises ProtocolError(revoked) for a revoked token (or BrokerUnavailable)."""
        entries = await self.registry.get_revocations(room, revocation_scopes(grant))
        if entries and is_revoked(grant, entries):
            raise ProtocolError(ErrorCode.REVOKED, "this token was revoked", ref)

    async def screen_comment(self, session: Session, room: str, text: str, ref: Ref) -> str:
        """The text to publish, or ProtocolError(muted | slow_mode | blocked | unavailable)."""
        try:
            rules = await self.rules(room)
        except BrokerUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        now = now_ms()
        muted = rules.muted_until(session.user, now)
        if muted is not None:
            raise ProtocolError(ErrorCode.MUTED, f"a moderator muted you for {_minutes(muted - now)}", ref)
        if rules.slow_mode_s and session.role is Role.VIEWER and not self._slow_take(room, session.user,
                                                                                     rules.slow_mode_s):
            raise ProtocolError(ErrorCode.SLOW_MODE, f"slow mode: one comment every {rules.slow_mode_s} s", ref)
        word = rules.blocked_word(text)
        if word is not None:
            self.metrics.comments_blocked.labels("word").inc()
            raise ProtocolError(ErrorCode.BLOCKED, "your comment holds a word this room does not allow", ref)
        if self.review is not None:
            verdict = await self.review.review(room, session.user, str(session.role), text)
            if verdict.text is None:
                self.metrics.comments_blocked.labels("review").inc()
                code = ErrorCode.UNAVAILABLE if verdict.unavailable else ErrorCode.BLOCKED
                raise ProtocolError(code, verdict.reason, ref)
            text = verdict.text
        return text

    def _slow_take(self, room: str, user: str, seconds: int) -> bool:
        key = (room, user)
        bucket = self._slow.get(key)
        if bucket is None or bucket.rate != 1.0 / seconds:
            bucket = self._slow[key] = TokenBucket(1.0 / seconds, 1)
        self._slow.move_to_end(key)
        while len(self._slow) > MAX_SLOW_BUCKETS:
            self._slow.popitem(last=False)
        return bucket.take()

    async def visible_history(self, room: str, publications: list[Publication]) -> list[Publication]:
        """A late joiner's history without the deleted comments."""
        if not publications:
            return publications
        rules = await self.rules(room)
        if not rules.deleted:
            return publications
        return [p for p in publications if not (p.data.get("type") == "comment" and rules.is_deleted(p.seq))]

    # -- moderators' messages ---------------------------------------------------------------------------------

    async def _target(self, session: Session, message: dict[str, Any]) -> tuple[str, str]:
        """(room, target user) after the role checks. Raises ProtocolError."""
        ref, room = message.get("id"), _room_of(session)
        if session.role not in _MODERATORS:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the host and co-hosts can moderate", ref)
        user = message["user"]
        if user == session.user:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "you cannot moderate yourself", ref)
        try:
            info = await self.registry.get_user(room, user)
        except BrokerUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        if not may_moderate(str(session.role), info["role"] if info else _local_role(self.hub, room, user)):
            raise ProtocolError(ErrorCode.FORBIDDEN, "a co-host moderates viewers only; nobody moderates the host",
                                ref)
        return room, user

    async def remove_user(self, session: Session, message: dict[str, Any]) -> None:
        room, user = await self._target(session, message)
        seconds = message.get("duration_s", DEFAULT_REMOVE_S)
        until = now_ms() + seconds * 1000
        event = {"action": "removed", "user": user, "until_ms": until, "by": session.user,
                 "reason": message.get("reason", "")}
        await self._change(room, lambda r: r.with_removed(user, until, now_ms()), event, message.get("id"))
        _ok(session, message)

    async def mute_user(self, session: Session, message: dict[str, Any]) -> None:
        room, user = await self._target(session, message)
        muted = message.get("muted", True)
        until = now_ms() + message.get("duration_s", DEFAULT_MUTE_S) * 1000 if muted else None
        event = {"action": "muted" if muted else "unmuted", "user": user, "until_ms": until, "by": session.user}
        await self._change(room, lambda r: r.with_muted(user, until, now_ms()), event, message.get("id"))
        _ok(session, message)

    async def delete_comment(self, session: Session, message: dict[str, Any]) -> None:
        ref, room = message.get("id"), _room_of(session)
        if session.role not in _MODERATORS:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the host and co-hosts can delete comments", ref)
        seq = message["seq"]
        await self._change(room, lambda r: r.with_deleted(seq), {"action": "deleted", "seq": seq, "by": session.user},
                           ref)
        try:  # in the stream, in order: live viewers and those resuming remove it
            publication = await self.stream.publish(room, {"type": "comment_deleted", "target": seq,
                                                           "user": session.user, "role": str(session.role),
                                                           "server_ts": now_ms()})
        except BrokerUnavailable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message broker unavailable; retry", ref) from None
        if ref is not None:
            session.send({"type": "ack", "id": ref, "seq": publication.seq, "epoch": publication.epoch})

    async def block_words(self, session: Session, message: dict[str, Any]) -> None:
        words = message["words"]
        await self._set_rule(session, message, "block words", lambda r: r.with_words(words),
                             {"action": "words", "words": words})

    async def slow_mode(self, session: Session, message: dict[str, Any]) -> None:
        seconds = message["seconds"]
        await self._set_rule(session, message, "set slow mode", lambda r: r.with_slow_mode(seconds),
                             {"action": "slow_mode", "seconds": seconds})

    async def _set_rule(self, session: Session, message: dict[str, Any], what: str,
                        change: Callable[[RoomRules], RoomRules], event: dict[str, Any]) -> None:
        """A room-wide rule a moderator sets (not about one user)."""
        ref, room = message.get("id"), _room_of(session)
        if session.role not in _MODERATORS:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only the host and co-hosts can {what}", ref)
        await self._change(room, change, {**event, "by": session.user}, ref)
        _ok(session, message)

    # -- the operator's revocation endpoint -------------------------------------------------------------------

    def routes(self, secret: str) -> list[web.RouteDef]:
        async def revoke(request: web.Request) -> web.Response:
            return await self._revoke_http(request, secret)

        return [web.post("/api/admin/revoke", revoke)]

    async def _revoke_http(self, request: web.Request, secret: str) -> web.Response:
        """``{"room", "token"}`` (that token), ``{"room", "token_id"}``, ``{"room", "user"}`` (every token of
        the user issued until now) or ``{"room"}`` (every token of the room issued until now)."""
        auth = request.headers.get("Authorization", "")
        try:
            verify_admin_token(secret, auth[7:].strip() if auth.lower().startswith("bearer ") else "")
        except ProtocolError as exc:
            return web.Response(status=401, text=f"{exc.code}: {exc.message}\n", headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await request.json() if request.content_length and request.content_length < 16_384 else None
            if not isinstance(body, dict):
                raise ValueError("a JSON object of at most 16 KiB: {room, token | token_id | user}")
            room, scope, expires = _revocation_of(body)
        except (ValueError, ProtocolError) as exc:
            return web.Response(status=400, text=f"bad request: {getattr(exc, 'message', exc)}\n")
        cutoff = time.time()
        try:
            await self.registry.revoke(room, scope, cutoff, expires)
            await self.stream.broadcast(room, {"type": "tokens_revoked", "room": room, "entries": {scope: cutoff}})
        except BrokerUnavailable:
            return web.Response(status=503, text="message broker unavailable; retry\n")
        self.metrics.moderation.labels("revoked").inc()
        log.info("tokens revoked", extra={"room": room, "scope": scope})
        return web.json_response({"room": room, "revoked": scope, "cutoff": cutoff, "kept_until": expires})


def _revocation_of(body: dict[str, Any]) -> tuple[str, str, float | None]:
    """(room, scope, expires) from a revocation request. Raises ValueError or ProtocolError."""
    if "token" in body:
        claims = token_claims(str(body["token"]))
        room = validate_room_name(body.get("room", claims.get("room")))
        jti, exp = claims.get("jti"), claims.get("exp")
        if claims.get("room") != room:
            raise ValueError("the token is for another room")
        if isinstance(jti, str):
            return room, f"jti:{jti}", float(exp) if isinstance(exp, int | float) else None
        user = claims.get("sub")
        if not isinstance(user, str):
            raise ValueError("the token names no user")
        return room, f"user:{user}", None  # an old token without an id: all of its user's tokens
    room = validate_room_name(body.get("room"))
    if "token_id" in body:
        return room, f"jti:{_short(body['token_id'])}", None
    if "user" in body:
        return room, f"user:{_short(body['user'])}", None
    return room, "*", None


def _short(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise ValueError("token_id and user are strings of 1-128 characters")
    return value


def _local_role(hub: Hub, room: str, user: str) -> str | None:
    chat = hub.room(room)
    session = next((s for s in chat.sessions.values() if s.user == user), None) if chat is not None else None
    return str(session.role) if session is not None else None


def _minutes(ms: float) -> str:
    minutes = max(1, round(ms / 60_000))
    return f"{minutes} more minute{'s' if minutes != 1 else ''}"


def _ok(session: Session, message: dict[str, Any]) -> None:
    if message.get("id") is not None:
        session.send({"type": "ok", "id": message["id"]})


def _room_of(session: Session) -> str:
    assert session.room is not None  # the dispatch table routes only joined connections here
    return session.room
