"""Bad input gets a clear error to that client, is counted, and leaves everyone else untouched."""

from __future__ import annotations

import aiohttp
import msgpack
import pytest

from clients.client import LiveClient
from protocol import CloseCode, Role


def _metric(text: str, name: str, **labels: str) -> float:
    """Read one sample from the Prometheus text exposition."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


BAD_FRAMES = [
    ("text", "{not json", "bad_json"),
    ("bytes", b"\xc1\xc1\xc1", "bad_msgpack"),
    ("bytes", msgpack.packb([1, 2, 3]), "bad_message"),
    ("text", "[1, 2]", "bad_message"),
    ("text", '{"type": "teleport"}', "unknown_type"),
    ("text", '{"text": "no type"}', "bad_message"),
    ("text", '{"type": "comment"}', "bad_message"),
    ("text", '{"type": "comment", "text": 42}', "bad_message"),
    ("text", '{"type": "like", "count": "many"}', "bad_message"),
    ("text", '{"type": "like", "count": true}', "bad_message"),
    ("text", '{"type": "comment", "text": "hi", "ts": "yesterday"}', "bad_message"),
    ("text", '{"type": "product", "product": {"id": "x"}}', "bad_message"),
    ("text", '{"type": "join", "room": "bad room name!"}', "bad_message"),
    ("text", '{"type": "join", "room": "show"}', "already_joined"),
    ("text", '{"type": "comment", "text": "' + "x" * 9000 + '"}', "too_large"),
]


async def test_every_bad_frame_gets_its_error_and_the_connection_survives(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST)) as host:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await ws.send_json({"type": "join", "room": "show", "token": server.token("show", "v")})
            assert (await ws.receive_json())["type"] == "joined"
            for kind, frame, code in BAD_FRAMES:
                if kind == "text":
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
                while True:
                    msg = await ws.receive()
                    reply = msgpack.unpackb(msg.data) if msg.type is aiohttp.WSMsgType.BINARY else msg.json()
                    if reply["type"] == "error":
                        break
                assert reply["code"] == code, (frame[:60], reply)
                assert reply["message"]
            # Still joined and working.
            await ws.send_json({"type": "comment", "text": "still here", "id": 1})
            while (reply := await ws.receive_json())["type"] != "ack":
                pass
            assert reply["id"] == 1
        # Other clients were not affected.
        assert (await host.next_event("comment"))["text"] == "still here"
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(server.base + "/metrics")).text()
        assert _metric(metrics, "live_relay_errors_total", code="bad_json") == 1
        assert _metric(metrics, "live_relay_errors_total", code="bad_message") >= 9
        assert _metric(metrics, "live_relay_errors_total", code="too_large") == 1


async def test_oversized_frame_closes_with_1009_and_is_counted(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "v")) as bystander:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await ws.send_json({"type": "join", "room": "show"})
            await ws.receive_json()
            await ws.send_str('{"type":"comment","text":"' + "y" * 100_000 + '"}')
            msg = await ws.receive()
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == CloseCode.MESSAGE_TOO_BIG
        await bystander.comment("unaffected")
        assert (await bystander.next_event("comment"))["text"] == "unaffected"
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(server.base + "/metrics")).text()
        assert _metric(metrics, "live_relay_disconnects_total", reason="frame_too_big") == 1


async def test_too_many_errors_close_the_connection(start_server):
    from signaling.config import LimitsConfig

    srv = await start_server(rooms=("show",), limits=LimitsConfig(max_errors_per_conn=5))
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
        for _ in range(5):
            await ws.send_str("garbage")
        codes = []
        while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            codes.append(msg.json()["code"])
        assert codes == ["bad_json"] * 5
        assert ws.close_code == CloseCode.TOO_MANY_ERRORS


@pytest.mark.parametrize("frame", [b"", b"\x00", msgpack.packb({"type": None}), msgpack.packb({1: 2})])
async def test_odd_binary_frames(server, frame):
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_bytes(frame)
        msg = await ws.receive()
        reply = msgpack.unpackb(msg.data) if msg.type is aiohttp.WSMsgType.BINARY else msg.json()
        assert reply["type"] == "error" and reply["code"] in ("bad_msgpack", "bad_message")
