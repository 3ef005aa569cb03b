"""History and resume: exactly the missed events, in order, once; or an explicit reason and the state."""

from __future__ import annotations

import asyncio

import aiohttp

from clients.client import LiveClient
from protocol import CloseCode, Role
from signaling.config import RoomConfig, ServerConfig
from tests.conftest import SECRET


async def _join_raw(ws: aiohttp.ClientWebSocketResponse, room: str, resume: dict | None = None) -> dict:
    join: dict = {"type": "join", "room": room}
    if resume is not None:
        join["resume"] = resume
    await ws.send_json(join)
    return await ws.receive_json()


async def test_resume_gets_exactly_the_missed_events(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST)) as host:
        await host.comment("before")
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.ws_url) as ws:
                joined = await _join_raw(ws, "show")
                position = {"epoch": joined["epoch"], "seq": joined["seq"]}
            # Disconnected: these are missed.
            acks = [await host.comment(f"missed {n}") for n in range(5)]
            await host.push_product({"id": "p", "title": "t", "price": "1", "currency": "USD",
                                     "url": "https://x.test/p", "image": "https://x.test/i.png"})
            async with http.ws_connect(server.ws_url) as ws:
                joined = await _join_raw(ws, "show", position)
                assert joined["recovered"] is True and joined["missed"] == 6
                replay = [await ws.receive_json() for _ in range(6)]
                assert [e["seq"] for e in replay] == list(range(acks[0]["seq"], acks[0]["seq"] + 6))
                assert [e.get("text") for e in replay[:5]] == [f"missed {n}" for n in range(5)]
                assert replay[5]["type"] == "product"
                # Then live events, without repeats.
                await host.comment("live")
                while (event := await ws.receive_json())["type"] != "comment":
                    pass
                assert event["text"] == "live" and event["seq"] == replay[-1]["seq"] + 1


async def test_resume_at_the_top_recovers_nothing(server):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url) as ws:
            joined = await _join_raw(ws, "show")
        async with http.ws_connect(server.ws_url) as ws:
            again = await _join_raw(ws, "show", {"epoch": joined["epoch"], "seq": joined["seq"]})
            assert again["recovered"] is True and again["missed"] == 0


async def test_too_old_is_explicit_and_gives_state(start_server):
    srv = await start_server(ServerConfig(secret=SECRET, rooms=("show",), room=RoomConfig(history_size=3)))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "h", Role.HOST)) as host:
        await host.announce("pinned!", pinned=True)
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(srv.ws_url) as ws:
                joined = await _join_raw(ws, "show")
            for n in range(4):  # history keeps 3: the first missed one is gone
                await host.comment(f"c{n}")
            async with http.ws_connect(srv.ws_url) as ws:
                again = await _join_raw(ws, "show", {"epoch": joined["epoch"], "seq": joined["seq"]})
                assert again["recovered"] is False and again["reason"] == "too_old"
                assert again["state"]["pinned"]["text"] == "pinned!"
                assert again["seq"] == joined["seq"] + 4


async def test_epoch_change_is_explicit(server):
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        joined = await _join_raw(ws, "show", {"epoch": "not-this-one", "seq": 3})
        assert joined["recovered"] is False and joined["reason"] == "epoch_changed"


async def test_history_expires_by_age(start_server):
    srv = await start_server(ServerConfig(secret=SECRET, rooms=("show",), room=RoomConfig(history_ttl=0.2)))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "h", Role.HOST)) as host:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(srv.ws_url) as ws:
                joined = await _join_raw(ws, "show")
            await host.comment("soon gone")
            await asyncio.sleep(0.4)
            async with http.ws_connect(srv.ws_url) as ws:
                again = await _join_raw(ws, "show", {"epoch": joined["epoch"], "seq": joined["seq"]})
                assert again["reason"] == "too_old"


async def test_client_reconnects_and_resumes_after_server_side_close(server):
    """The client library reconnects with backoff and resumes: nothing missed, nothing twice."""
    async with LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST)) as host:
        viewer = LiveClient(server.ws_url, "show", reconnect=True)
        async with viewer:
            await host.comment("one")
            assert (await viewer.next_event("comment"))["text"] == "one"
            # The server drops the viewer (as it does for a slow consumer).
            hub_sessions = [s for r in server.relay.hub.rooms.values() for s in r.sessions.values()
                            if s.user == viewer.joined["user"]]
            await hub_sessions[0].close(CloseCode.SLOW_CONSUMER, "test: pretend slow")
            for n in range(3):
                await host.comment(f"while away {n}")
            texts = [(await viewer.next_event("comment", timeout=10))["text"] for _ in range(3)]
            assert texts == ["while away 0", "while away 1", "while away 2"]
            await host.comment("after")
            assert (await viewer.next_event("comment"))["text"] == "after"
            assert viewer.reconnects == 1



async def test_viewers_wait_through_a_restart_until_the_room_is_back(start_server):
    """In-process broker: a restart loses the room. Viewers that come back before the host keep retrying
    (`unknown_room` on a rejoin is not final), and join the room when the host has reopened it."""
    first = await start_server()
    port = first.config.port
    host = LiveClient(first.ws_url, "live", first.token("live", "host", Role.HOST))
    await host.connect()
    viewer = LiveClient(first.ws_url, "live", reconnect=True, max_backoff=0.3)
    await viewer.connect()
    old_epoch = viewer.joined["epoch"]
    await host.close()
    await first.shutdown()
    second = await start_server(port=port)
    await asyncio.sleep(1.0)  # the viewer's rejoins meanwhile are refused: nobody has opened "live" yet
    assert viewer.reconnects == 0
    async with LiveClient(second.ws_url, "live", second.token("live", "host", Role.HOST)) as host_again:
        async with asyncio.timeout(10):
            while viewer.reconnects == 0:  # noqa: ASYNC110 - the client's own retry loop; nothing to await
                await asyncio.sleep(0.05)
        assert viewer.joined["epoch"] != old_epoch and viewer.joined["reason"] == "epoch_changed"
        await host_again.comment("we are back")
        assert (await viewer.next_event("comment", timeout=5))["text"] == "we are back"
    await viewer.close()


async def test_a_late_joiner_can_ask_for_the_recent_history(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        for n in range(5):
            await host.comment(f"earlier {n}")
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await ws.send_json({"type": "join", "room": "show", "history": 3})
            joined = await ws.receive_json()
            assert joined["missed"] == 3 and joined["recovered"] is False
            past = [await ws.receive_json() for _ in range(3)]
            assert [p["text"] for p in past] == ["earlier 2", "earlier 3", "earlier 4"]
            assert all(p["seq"] <= joined["seq"] for p in past)
            await host.comment("live")
            assert (await ws.receive_json())["text"] == "live"  # then live, no repeats
