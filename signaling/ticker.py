"""Periodic work of a node: like totals (coalesced taps, published a few times a second), presence
(member and viewer counts, joins and leaves), scene expiry and PK scores, refreshing this node's media
registrations, and forgetting empty rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from protocol import now_ms
from signaling.brokers import BrokerUnavailable, EventStream, RoomStore
from signaling.channel import Channel
from signaling.config import ServerConfig
from signaling.hub import Hub
from signaling.media import MediaSignaling
from signaling.metrics import ServerMetrics
from signaling.recording import Recordings
from signaling.scenes import Scenes

log = logging.getLogger(__name__)

SCENES_INTERVAL_S = 0.5
REGISTRY_INTERVAL_S = 5.0
GC_INTERVAL_S = 5.0
LINK_INTERVAL_S = 2.0  # how often each subscriber is told of its link (layer, estimate, loss)
PRESENCE_REFRESH_S = 5.0  # report presence at least this often: with several nodes, counts are sums of reports


class Ticker:
    def __init__(self, config: ServerConfig, hub: Hub, stream: EventStream, store: RoomStore, channel: Channel,
                 scenes: Scenes, media: MediaSignaling | None, metrics: ServerMetrics,
                 recordings: Recordings | None = None) -> None:
        self.config = config
        self.hub = hub
        self.stream = stream
        self.store = store
        self.channel = channel
        self.scenes = scenes
        self.media = media
        self.metrics = metrics
        self.recordings = recordings
        self._recording_active = False
        self._presence_reported: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        cfg = self.config.room
        interval = min(cfg.likes_interval, cfg.presence_interval)
        next_presence = next_gc = next_scenes = next_registry = next_link = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            try:
                await self.flush_likes()
                if now >= next_scenes:
                    next_scenes = now + SCENES_INTERVAL_S
                    await self.scenes.sweep()
                    await self.scenes.tick()
                if now >= next_registry and self.media is not None:
                    next_registry = now + REGISTRY_INTERVAL_S
                    await self.media.refresh_registrations()
                if now >= next_link and self.media is not None:
                    next_link = now + LINK_INTERVAL_S
                    self.media.send_link_reports()
                if now >= next_presence:
                    next_presence = now + cfg.presence_interval
                    await self.flush_presence()
                if now >= next_gc:
                    next_gc = now + GC_INTERVAL_S
                    await self.collect_garbage()
            except BrokerUnavailable as exc:
                # A broker outage must not end the ticker: the next tick tries again.
                log.warning("tick skipped: broker unavailable", extra={"error": repr(exc)})
            except Exception:
                # A bug in one piece of periodic work: say so loudly, keep the rest of the node ticking.
                log.exception("tick failed")

    async def flush_likes(self) -> None:
        for room in list(self.hub.rooms.values()):
            if not room.pending_likes:
                continue
            delta, room.pending_likes = room.pending_likes, 0
            try:
                total = await self.store.add_likes(room.name, delta)
            except BrokerUnavailable:
                room.pending_likes += delta  # kept for the next tick, not lost
                raise
            await self.stream.broadcast(room.name, {"type": "likes", "room": room.name, "total": total,
                                                    "delta": delta, "server_ts": now_ms()})

    async def flush_presence(self) -> None:
        now = time.monotonic()
        for room in list(self.hub.rooms.values()):
            stale = now - self._presence_reported.get(room.name, 0.0) > PRESENCE_REFRESH_S
            if not room.presence_dirty and not stale:
                continue
            self._presence_reported[room.name] = now
            if not room.presence_dirty:
                await self.store.set_presence(room.name, len(room), room.viewer_count)
                continue
            joined, left, overflowed = room.take_presence_changes()
            members, viewers = await self.store.set_presence(room.name, len(room), room.viewer_count)
            await self.stream.broadcast(room.name, {
                "type": "presence", "room": room.name, "members": members, "viewers": viewers,
                "joined": joined, "left": left, "truncated": overflowed, "server_ts": now_ms()})

    async def collect_garbage(self) -> None:
        for name, room in list(self.hub.rooms.items()):
            if not room.sessions and not room.pending_likes and name not in self.config.rooms:
                await self.hub.close_room(name)
                self._presence_reported.pop(name, None)
        await self.stream.gc()
        self.metrics.rooms.set(len(self.hub.rooms))
        # The directory is walked only while something records (and once after, for the final figure).
        if self.recordings is not None and (self.recordings.rooms or self._recording_active):
            self._recording_active = bool(self.recordings.rooms)
            await self.recordings.enforce_bound()
            self.metrics.recording_bytes.set(await asyncio.to_thread(self.recordings.disk_bytes))
        self.channel.forget_idle_buckets()
