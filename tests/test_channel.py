"""The message channel end to end: a real server on loopback and real WebSocket clients."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from clients.client import ConnectionClosed, LiveClient, ServerError
from protocol import CloseCode, Encoding, ErrorCode, Role
from tests.conftest import assert_one_order

PRODUCT = {"id": "sku-1", "title": "Jade bracelet", "price": "19.90", "currency": "EUR",
           "url": "https://shop.example/p/1", "image": "https://shop.example/p/1.jpg", "stock": 5}


async def test_comment_reaches_every_viewer_with_sequence_and_timestamps(server):
    host = LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST))
    viewer_json = LiveClient(server.ws_url, "show", server.token("show", "v1"))
    viewer_msgpack = LiveClient(server.ws_url, "show", server.token("show", "v2"), encoding=Encoding.MSGPACK)
    async with host, viewer_json, viewer_msgpack:
        ack = await viewer_json.comment("hello <b>world</b>")
        assert ack["type"] == "ack" and ack["seq"] >= 1
        for client in (host, viewer_json, viewer_msgpack):
            event = await client.next_event("comment")
            assert event["text"] == "hello <b>world</b>"  # text stays text, byte for byte
            assert event["user"] == "v1" and event["role"] == "viewer"
            assert event["seq"] == ack["seq"] and event["epoch"] == ack["epoch"]
            assert event["server_ts"] >= event["ts"] - 50
            # Measured (not zero, not absurd); each client's clock estimate is good to half a round trip, so
            # on one machine a tiny negative value is possible.
            assert -50 < event["latency_ms"] < 5000


async def test_msgpack_client_gets_binary_frames(server):
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        import msgpack

        await ws.send_bytes(msgpack.packb({"type": "join", "room": "show"}))
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.BINARY
        assert msgpack.unpackb(msg.data)["type"] == "joined"


async def test_anonymous_viewer_reads_and_likes_but_cannot_comment(server):
    async with LiveClient(server.ws_url, "show") as anon:
        assert anon.joined["role"] == "viewer" and anon.joined["user"].startswith("anon-")
        with pytest.raises(ServerError) as err:
            await anon.comment("hi")
        assert err.value.code is ErrorCode.FORBIDDEN


async def test_anonymous_can_be_turned_off(start_server):
    srv = await start_server(rooms=("show",), allow_anonymous=False)
    client = LiveClient(srv.ws_url, "show")
    with pytest.raises(ServerError) as err:
        await client.connect()
    assert err.value.code is ErrorCode.UNAUTHORIZED
    await client.close()


@pytest.mark.parametrize(("token_kind", "code", "close"), [
    ("forged", ErrorCode.UNAUTHORIZED, CloseCode.UNAUTHORIZED),
    ("expired", ErrorCode.TOKEN_EXPIRED, CloseCode.UNAUTHORIZED),
    ("garbage", ErrorCode.UNAUTHORIZED, CloseCode.UNAUTHORIZED),
    ("other_room", ErrorCode.WRONG_ROOM, CloseCode.FORBIDDEN),
])
async def test_bad_tokens_are_refused_and_closed(server, token_kind, code, close):
    from protocol import issue_token

    token = {
        "forged": issue_token("not-the-secret-but-also-thirty-two-bytes-long", "show", "mallory", Role.HOST),
        "expired": server.token("show", "late", Role.HOST, ttl=-10),
        "garbage": "abc.def.ghi",
        "other_room": server.token("elsewhere", "v", Role.HOST),
    }[token_kind]
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_json({"type": "join", "room": "show", "token": token})
        reply = await ws.receive_json()
        assert reply["type"] == "error" and reply["code"] == code
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == close


async def test_unknown_room_for_viewers_while_a_host_opens_one(server):
    viewer = LiveClient(server.ws_url, "nowhere", server.token("nowhere", "v"))
    with pytest.raises(ServerError) as err:
        await viewer.connect()
    assert err.value.code is ErrorCode.UNKNOWN_ROOM
    await viewer.close()
    async with LiveClient(server.ws_url, "nowhere", server.token("nowhere", "h", Role.HOST)):
        async with LiveClient(server.ws_url, "nowhere", server.token("nowhere", "v")) as v:
            assert v.joined["room"] == "nowhere"


async def test_product_push_roles_and_validation(server):
    host = LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST))
    cohost = LiveClient(server.ws_url, "show", server.token("show", "c", Role.COHOST))
    viewer = LiveClient(server.ws_url, "show", server.token("show", "v"))
    async with host, cohost, viewer:
        with pytest.raises(ServerError) as err:
            await viewer.push_product(PRODUCT)
        assert err.value.code is ErrorCode.FORBIDDEN
        for bad in ({**PRODUCT, "price": 19.9}, {**PRODUCT, "url": "javascript:alert(1)"},
                    {k: v for k, v in PRODUCT.items() if k != "title"}, {**PRODUCT, "currency": "euro"}):
            with pytest.raises(ServerError) as err:
                await host.push_product(bad)
            assert err.value.code is ErrorCode.BAD_MESSAGE
        await host.push_product(PRODUCT)
        await cohost.push_product({**PRODUCT, "id": "sku-2", "countdown_s": 60})
        first = await viewer.next_event("product")
        second = await viewer.next_event("product")
        assert first["product"] == PRODUCT and first["role"] == "host"
        assert second["product"]["id"] == "sku-2" and second["seq"] == first["seq"] + 1
        # A late joiner gets the last card in its state.
        async with LiveClient(server.ws_url, "show") as late:
            assert late.joined["state"]["product"]["product"]["id"] == "sku-2"


async def test_announcement_host_only_and_pinned_state(server):
    host = LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST))
    cohost = LiveClient(server.ws_url, "show", server.token("show", "c", Role.COHOST))
    async with host, cohost:
        with pytest.raises(ServerError) as err:
            await cohost.announce("me too")
        assert err.value.code is ErrorCode.FORBIDDEN
        await host.announce("Flash sale at 9pm", pinned=True)
        event = await cohost.next_event("announce")
        assert event["pinned"] is True and event["text"] == "Flash sale at 9pm"
        async with LiveClient(server.ws_url, "show") as late:
            assert late.joined["state"]["pinned"]["text"] == "Flash sale at 9pm"
        await host.announce("", pinned=True)  # unpin
        await cohost.next_event("announce")
        async with LiveClient(server.ws_url, "show") as late:
            assert late.joined["state"]["pinned"] is None


async def test_likes_are_coalesced_into_totals(server):
    async with LiveClient(server.ws_url, "show") as tapper, LiveClient(server.ws_url, "show") as watcher:
        for _ in range(30):
            await tapper.like(2)
        totals = []
        async with asyncio.timeout(5):
            while not totals or totals[-1] < 60:
                totals.append((await watcher.next_event("likes"))["total"])
        # 30 like messages became a handful of broadcasts, never one per tap.
        assert totals[-1] == 60
        assert len(totals) < 10


async def test_like_count_over_limit_is_refused(server):
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_json({"type": "join", "room": "show"})
        assert (await ws.receive_json())["type"] == "joined"
        await ws.send_json({"type": "like", "count": 999, "id": 7})
        reply = await ws.receive_json()
        assert reply == {"type": "error", "code": "bad_message", "message": reply["message"], "id": 7}


async def test_presence_counts_viewers(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST, name="Host")) as host:
        async with LiveClient(server.ws_url, "show"), LiveClient(server.ws_url, "show"):
            async with asyncio.timeout(5):
                while True:
                    event = await host.next_event("presence")
                    if event["viewers"] == 2:
                        break
            assert event["members"] == 3
        async with asyncio.timeout(5):
            while (await host.next_event("presence"))["viewers"] != 0:
                pass


async def test_ping_pong_and_clock_estimate(server):
    async with LiveClient(server.ws_url, "show") as client:
        rtt = await client.ping()
        assert 0 <= rtt < 1000
        # Same machine, same clock: the estimated offset is within the round trip.
        assert abs(client.clock.offset_ms) <= client.clock.rtt_ms + 1


async def test_ordering_is_the_same_for_everyone(server):
    senders = [LiveClient(server.ws_url, "show", server.token("show", f"s{i}")) for i in range(4)]
    await assert_one_order(senders, [LiveClient(server.ws_url, "show") for _ in range(3)], rounds=4)


async def test_comment_rate_limit(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "flooder")) as flooder:
        codes = []
        for n in range(12):
            try:
                await flooder.comment(f"spam {n}")
                codes.append("ok")
            except ServerError as exc:
                codes.append(exc.code)
        assert codes[:5] == ["ok"] * 5  # the burst
        assert ErrorCode.RATE_LIMITED in codes
        # The limit is per user: someone else is not affected.
        async with LiveClient(server.ws_url, "show", server.token("show", "calm")) as calm:
            await calm.comment("fine")


async def test_comment_length_limit(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "v")) as v:
        with pytest.raises(ServerError) as err:
            await v.comment("x" * 201)
        assert err.value.code is ErrorCode.TOO_LARGE
        await v.comment("x" * 200)


async def test_not_joined_and_join_timeout(start_server):
    from signaling.config import LimitsConfig

    srv = await start_server(rooms=("show",), limits=LimitsConfig(join_timeout=0.3))
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
        await ws.send_json({"type": "comment", "text": "early"})
        assert (await ws.receive_json())["code"] == "not_joined"
        assert (await ws.receive_json())["code"] == "not_joined"  # the join deadline passed
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == CloseCode.JOIN_TIMEOUT


async def test_too_many_connections_from_one_address(start_server):
    from signaling.config import LimitsConfig

    srv = await start_server(rooms=("show",), limits=LimitsConfig(max_conns_per_ip=2))
    async with LiveClient(srv.ws_url, "show"), LiveClient(srv.ws_url, "show"):
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
            reply = await ws.receive_json()
            assert reply["code"] == "too_many_connections"
            closing = await ws.receive()
            assert closing.data == CloseCode.TOO_MANY_CONNECTIONS
    async with LiveClient(srv.ws_url, "show"):  # slots are given back
        pass


async def test_client_close_fails_pending_requests(server):
    client = LiveClient(server.ws_url, "show", server.token("show", "v"))
    await client.connect()
    await client.close()
    with pytest.raises(ConnectionClosed):
        await client.comment("after close")
