"""The toy version, for side-by-side figures only: aiortc's MediaRelay behind our signaling messages.

Each publisher track is decoded once and every subscriber's sender encodes it again (what aiortc's
examples do). It speaks just enough of docs/protocol.md for `live-relay loadtest media`: join, ping,
publish, subscribe. Not part of the product.

    python -m benchmarks.mediarelay_server --port 8097
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from rtc import adapter

STATE = web.AppKey("state", dict)


async def _answer(pc: RTCPeerConnection) -> str:
    answer = await pc.createAnswer()
    adapter.restrict_host_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(answer)
    return pc.localDescription.sdp


async def websocket(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    pcs: list[RTCPeerConnection] = []
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            kind, ref = m.get("type"), m.get("id")
            if kind == "ping":
                await ws.send_json({"type": "pong", "id": ref, "server_ts": time.time() * 1000})
            elif kind == "join":
                await ws.send_json({"type": "joined", "id": ref, "room": m["room"], "epoch": "toy", "seq": 0,
                                    "recovered": False, "missed": 0, "state": {}})
            elif kind == "publish":
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)

                @pc.on("track")
                def on_track(track):  # type: ignore[no-untyped-def]
                    state["tracks"][track.kind] = track

                await pc.setRemoteDescription(RTCSessionDescription(m["sdp"], "offer"))
                await ws.send_json({"type": "answer", "id": ref, "media": "pub", "sdp": await _answer(pc)})
            elif kind == "subscribe":
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                await pc.setRemoteDescription(RTCSessionDescription(m["sdp"], "offer"))
                for transceiver in pc.getTransceivers():
                    source = state["tracks"].get(transceiver.kind)
                    if source is not None:
                        # buffered=False keeps only the latest frame (the default queue is unbounded).
                        pc.addTrack(state["relay"].subscribe(source, buffered=False))
                await ws.send_json({"type": "answer", "id": ref, "media": f"sub{len(pcs)}",
                                    "sdp": await _answer(pc)})
            elif kind in ("unpublish", "unsubscribe"):
                await ws.send_json({"type": "closed_media", "id": ref, "media": m.get("media")})
    finally:
        for pc in pcs:
            await pc.close()
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()
    app = web.Application()
    app[STATE] = {"relay": MediaRelay(), "tracks": {}}
    app.router.add_get("/ws", websocket)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
