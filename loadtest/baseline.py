"""A baseline to measure against: the minimal aiohttp broadcast loop most chat servers start as.

It speaks just enough of our protocol for `loadtest chat` (join, ping, comment, product, with seq and
acks) and fans out the way tutorials do: encode once as JSON, then ``await ws.send_str(...)`` for each
viewer in turn. No tokens, limits or history. Run it with `live-relay loadtest baseline-server`, then
`live-relay loadtest chat --encoding json` against it and against `live-relay serve` on the same load.
"""

from __future__ import annotations

import json
import time

import click
from aiohttp import WSMsgType, web

ROOMS = web.AppKey("rooms", dict)


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    rooms: dict[str, dict] = request.app[ROOMS]
    room = None
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            kind = message.get("type")
            if kind == "ping":
                await ws.send_json({"type": "pong", "id": message.get("id"), "server_ts": time.time() * 1000})
            elif kind == "join":
                room = rooms.setdefault(message["room"], {"seq": 0, "members": set()})
                room["members"].add(ws)
                await ws.send_json({"type": "joined", "room": message["room"], "epoch": "baseline",
                                    "seq": room["seq"], "recovered": False, "missed": 0, "state": {}})
            elif kind in ("comment", "product") and room is not None:
                room["seq"] += 1
                event = {k: v for k, v in message.items() if k != "id"}
                event.update(seq=room["seq"], epoch="baseline", server_ts=time.time() * 1000)
                data = json.dumps(event)
                for member in list(room["members"]):
                    await member.send_str(data)
                if "id" in message:
                    await ws.send_json({"type": "ack", "id": message["id"], "seq": room["seq"],
                                        "epoch": "baseline"})
    finally:
        if room is not None:
            room["members"].discard(ws)
    return ws


def create_baseline_app() -> web.Application:
    app = web.Application()
    app[ROOMS] = {}
    app.router.add_get("/ws", _websocket)
    return app


@click.command("baseline-server")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8099, type=int)
def baseline_command(host: str, port: int) -> None:
    """Run the minimal aiohttp broadcast loop (a benchmark baseline, not a product)."""
    import uvloop

    web.run_app(create_baseline_app(), host=host, port=port, loop=uvloop.new_event_loop(), print=None)
