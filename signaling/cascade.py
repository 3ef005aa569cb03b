"""The origin/edge media cascade: serving a publisher of another node to viewers on this one.

The node where a host publishes is the room's origin for that publisher; it registers the publisher in
the broker with its own WebSocket URL (refreshed, so a dead node drops out). A viewer who subscribes on
another node (an edge) makes the edge pull the publisher's tracks once from the origin — as an ordinary
subscriber over a relay-to-relay WebRTC link, with the same forwarding path and no transcoding — and fan
them out locally: N viewers on an edge cost one origin-to-edge stream. The edge's keyframe requests go
upstream as PLIs. The mirror is dropped a few seconds after its last local viewer leaves, and when the
origin's stream ends (the publisher left, or the origin died), which the room is told about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from clients.client import LiveClient
from clients.media import MediaSession
from protocol import ErrorCode, Role, issue_token
from relay.router import MediaError, MediaRouter, RemotePublisher
from signaling.brokers import PublisherInfo

log = logging.getLogger(__name__)

IDLE_GRACE_S = 3.0  # keep an unwatched mirror this long, in case a viewer comes right back


@dataclass
class Mirror:
    room: str
    publisher: str
    origin: str
    client: LiveClient
    session: MediaSession | None = None
    remote: RemotePublisher | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: MediaError | None = None
    watcher: asyncio.Task[None] | None = None


class EdgeCascade:
    def __init__(self, router: MediaRouter, secret: str, node_id: str) -> None:
        self.router = router
        self.secret = secret
        self.node_id = node_id
        self.mirrors: dict[str, Mirror] = {}  # by publisher id

    async def ensure(self, room: str, publisher: str, info: PublisherInfo) -> None:
        """Make ``publisher`` (served by ``info['node']``) subscribable here; raises MediaError."""
        mirror = self.mirrors.get(publisher)
        if mirror is None:
            token = issue_token(self.secret, room, f"edge-{self.node_id}", Role.VIEWER, 86400)
            mirror = Mirror(room, publisher, info["node"], LiveClient(info["node"], room, token))
            self.mirrors[publisher] = mirror
            mirror.watcher = asyncio.create_task(self._run(mirror, info), name=f"edge-{publisher}")
        await mirror.ready.wait()
        if mirror.error is not None:
            raise mirror.error

    async def _run(self, mirror: Mirror, info: PublisherInfo) -> None:
        try:
            await self._connect(mirror, info)
        except Exception as exc:  # whatever failed upstream, this subscribe gets a clear error
            log.warning("edge could not pull from origin", extra={"publisher": mirror.publisher,
                                                                  "origin": mirror.origin, "error": repr(exc)})
            mirror.error = exc if isinstance(exc, MediaError) else MediaError(
                ErrorCode.NO_PUBLISHER, f"the publisher's node cannot be reached: {exc}")
            mirror.ready.set()
            await self._drop(mirror)
            return
        mirror.ready.set()
        # Watch: the origin's stream ending, or nobody watching here any more.
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            remote = mirror.remote
            assert remote is not None and mirror.session is not None
            if remote.closed or not mirror.client.connected or mirror.session.pc.connectionState in ("failed",
                                                                                                    "closed"):
                log.info("origin stream ended", extra={"publisher": mirror.publisher})
                break
            if remote.subscriber_count == 0:
                idle_since = idle_since or loop.time()
                if loop.time() - idle_since >= IDLE_GRACE_S:
                    log.info("edge mirror idle; dropping the upstream link", extra={"publisher": mirror.publisher})
                    break
            else:
                idle_since = None
        await self._drop(mirror)

    async def _connect(self, mirror: Mirror, info: PublisherInfo) -> None:
        await mirror.client.connect()

        def request_keyframe(kind: str) -> None:  # an edge viewer's PLI, sent on upstream as ours
            if mirror.session is not None:
                mirror.session.request_keyframe(kind)

        remote = self.router.add_remote_publisher(mirror.room, mirror.publisher, info["user"], request_keyframe)
        mirror.remote = remote

        def on_packet(kind: str, packet: Any, codec: Any) -> None:
            remote.feed(kind, codec.name, codec.clockRate, packet)

        kinds = tuple(k for k in ("video", "audio") if k in info["kinds"])
        mirror.session = await MediaSession.subscribe(mirror.client, publisher=mirror.publisher, kinds=kinds,
                                                      frame_sink=lambda kind, frame, codec: None,
                                                      packet_sink=on_packet)
        for kind, codec in mirror.session.codecs().items():
            remote.add_track(kind, codec)

    async def _drop(self, mirror: Mirror) -> None:
        self.mirrors.pop(mirror.publisher, None)
        if mirror.remote is not None:
            await mirror.remote.close()
        if mirror.session is not None:
            await mirror.session.close()
        await mirror.client.close()

    async def close(self) -> None:
        for mirror in list(self.mirrors.values()):
            if mirror.watcher is not None:
                mirror.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await mirror.watcher
            await self._drop(mirror)
