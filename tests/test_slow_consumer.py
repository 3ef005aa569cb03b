"""A viewer that stops reading never stalls the room: it loses droppable events, then its connection."""

from __future__ import annotations

import asyncio
import json
import struct

import aiohttp

from clients.client import LiveClient
from protocol import CloseCode, Role
from signaling.config import LimitsConfig
from tests.rawws import RawWebSocket
from tests.test_bad_input import _metric

# Large cards (long image URLs): products are never dropped, so these push the slow reader past the hard limit.
PRODUCT = {"id": "p", "title": "t", "price": "1", "currency": "USD", "url": "https://x.test/p",
           "image": "https://x.test/p.png?" + "q" * 1900}


async def test_slow_reader_does_not_stall_fast_ones(start_server):
    # The host is the load generator here: its own comment limit is off (host_comment_rate=0).
    limits = LimitsConfig(send_buffer_soft=16 * 1024, send_buffer_hard=48 * 1024, socket_send_buffer=32 * 1024,
                          host_comment_rate=0)
    srv = await start_server(rooms=("show",), limits=limits)
    slow = await RawWebSocket.connect("127.0.0.1", srv.config.port)
    slow.send_json({"type": "join", "room": "show"})
    opcode, payload = await slow.read_frame()
    assert json.loads(payload)["type"] == "joined"
    # From here on, `slow` reads nothing.
    host = LiveClient(srv.ws_url, "show", srv.token("show", "h", Role.HOST))
    fast = LiveClient(srv.ws_url, "show", queue_size=100_000)
    async with host, fast:
        text = "x" * 190
        n_comments, n_products = 3000, 20
        # Paced by acks: server and clients share this test's event loop, so an unpaced burst would make
        # the *fast* reader look slow too.
        for n in range(n_comments):
            await host.comment(f"{n} {text}")
            if n % (n_comments // n_products) == 0:
                await host.push_product({**PRODUCT, "id": f"p{n}"})
        got_comments = got_products = 0
        async with asyncio.timeout(30):
            while got_comments < n_comments or got_products < n_products:
                event = await fast.next_event("comment", "product", timeout=30)
                if event["type"] == "comment":
                    got_comments += 1
                else:
                    got_products += 1
        assert (got_comments, got_products) == (n_comments, n_products)  # the fast viewer missed nothing
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(srv.base + "/metrics")).text()
        dropped = _metric(metrics, "live_relay_drops_total", reason="slow")
        kicked = _metric(metrics, "live_relay_disconnects_total", reason="slow_consumer")
        assert dropped > 0 and kicked == 1
    # The slow reader, reading at last, finds what it was sent and then the documented close code.
    close_code = None
    async with asyncio.timeout(20):
        while True:
            try:
                opcode, payload = await slow.read_frame()
            except asyncio.IncompleteReadError:
                break
            if opcode == 0x8:
                close_code = struct.unpack("!H", payload[:2])[0]
                break
    slow.close()
    assert close_code == CloseCode.SLOW_CONSUMER
