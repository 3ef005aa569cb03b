"""The demo room's synthetic host: publishes a test pattern with a tone, pins a welcome note and pushes a
product card now and then, so that opening the viewer page shows a live show at once.

It is an ordinary client of the server (over its own WebSocket), started and stopped by `live-relay
serve --demo` around the server's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from typing import TYPE_CHECKING

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack
from protocol import Role, issue_token

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

def demo_products() -> list[dict[str, object]]:
    """The demo's cards; their images are files of this server's (``/static/demo``), which each viewer's page
    fetches from the address it reached the server at (the Buy links point at a placeholder shop)."""
    return [
        {"id": "demo-jade", "title": "Jade bracelet", "price": "19.90", "currency": "EUR",
         "url": "https://shop.example/p/jade", "image": "/static/demo/jade.svg", "stock": 20,
         "countdown_s": 120},
        {"id": "demo-tea", "title": "Oolong tea, 250 g", "price": "12.50", "currency": "EUR",
         "url": "https://shop.example/p/tea", "image": "/static/demo/tea.svg", "stock": 50},
        {"id": "demo-scarf", "title": "Silk scarf", "price": "39.00", "currency": "EUR",
         "url": "https://shop.example/p/scarf", "image": "/static/demo/scarf.svg", "stock": 5},
    ]


class DemoHost:
    def __init__(self, ws_url: str, room: str, secret: str, product_every: float = 20.0,
                 insecure_tls: bool = False) -> None:
        self.ws_url = ws_url
        self.products = demo_products()
        self.room = room
        self.secret = secret
        self.product_every = product_every
        self.insecure_tls = insecure_tls
        self._task: asyncio.Task[None] | None = None
        self.client: LiveClient | None = None
        self.media: MediaSession | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        token = issue_token(self.secret, self.room, "demo-host", Role.HOST, 7 * 86400, "Demo host")
        http = None
        if self.insecure_tls:  # talking to ourselves over TLS with a certificate made for browsers
            import aiohttp

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
            self._http = http
        self.client = LiveClient(self.ws_url, self.room, token, reconnect=True, http=http)
        await self.client.connect()
        self.media = await MediaSession.publish(self.client, [CounterVideoTrack(), ToneAudioTrack()])
        await self.client.announce("Welcome to the live-relay demo: say hi, tap ♥, grab a deal!", pinned=True)
        self._task = asyncio.create_task(self._push_products(), name="demo-products")
        log.info("demo host on air", extra={"room": self.room})

    async def _push_products(self) -> None:
        for product in itertools.cycle(self.products):
            assert self.client is not None
            try:
                await self.client.push_product(product)
            except Exception as exc:  # the demo goes on; the next card is tried on schedule
                log.warning("demo product push failed", extra={"error": repr(exc)})
            await asyncio.sleep(self.product_every)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.media is not None:
            await self.media.close()
        if self.client is not None:
            await self.client.close()
        if self._http is not None:
            await self._http.close()
