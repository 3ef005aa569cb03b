"""The index of live shows a host picks a PK opponent from (GET /api/rooms/ROOM/live-rooms): shows whose host
is on air, on every node, but the asking room; never a private call room; host only. Real aiortc publishers
over a real server."""

from __future__ import annotations

import asyncio

import aiohttp

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack
from protocol import Role


async def live_rooms(server, room: str, token: str) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.config.port}/api/rooms/{room}/live-rooms"
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, (await r.json() if r.status == 200 else {"text": await r.text()})


async def until(check, timeout: float = 5.0) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_a_host_sees_the_other_live_shows_but_no_private_call(start_server) -> None:
    server = await start_server()
    show_host = server.token("show", "amy", Role.HOST, name="Amy")
    rival_host = server.token("rival", "rita", Role.HOST, name="Rita")
    amy = LiveClient(server.ws_url, "show", show_host)
    rita = LiveClient(server.ws_url, "rival", rival_host)
    fan = LiveClient(server.ws_url, "show", server.token("show", "fan", Role.VIEWER))
    guest = LiveClient(server.ws_url, "show", server.token("show", "gus", Role.COHOST))
    sessions: list[MediaSession] = []
    clients = [amy, rita, fan, guest]
    try:
        for client in clients:
            await client.connect()
        status, body = await live_rooms(server, "show", show_host)
        assert status == 200 and body == {"room": "show", "live": []}  # nobody on air yet
        sessions.append(await MediaSession.publish(rita, [CounterVideoTrack(160, 120)]))
        sessions.append(await MediaSession.publish(amy, [CounterVideoTrack(160, 120)]))
        sessions.append(await MediaSession.publish(guest, [CounterVideoTrack(160, 120)]))  # a co-host: not a show
        status, body = await live_rooms(server, "show", show_host)
        assert body["live"] == [{"room": "rival", "host": "rita", "name": "Rita"}]  # not the asking room
        status, body = await live_rooms(server, "rival", rival_host)
        assert body["live"] == [{"room": "show", "host": "amy", "name": "Amy"}]

        # A private call's room has a host publishing too: it is never offered for a PK.
        await amy.request({"type": "call_invite", "user": "fan"})
        await fan.next_event("call_invited", timeout=5)
        await fan.request({"type": "call_answer", "accept": True})
        grant = await amy.next_event("call_grant", timeout=5)
        in_call = LiveClient(server.ws_url, grant["call_room"], grant["token"])
        clients.append(in_call)
        await in_call.connect()
        sessions.append(await MediaSession.publish(in_call, [CounterVideoTrack(160, 120)]))
        status, body = await live_rooms(server, "rival", rival_host)
        assert [r["room"] for r in body["live"]] == ["show"]

        # Only a host of the asking room may look; a host who stops is taken out.
        status, _ = await live_rooms(server, "show", server.token("show", "fan", Role.VIEWER))
        assert status == 403
        status, _ = await live_rooms(server, "show", rival_host)  # a token of another room
        assert status in (401, 403)
        await sessions[0].close()

        async def rival_gone() -> bool:
            return (await live_rooms(server, "show", show_host))[1]["live"] == []

        assert await until(rival_gone)
    finally:
        for session in sessions:
            await session.close()
        for client in clients:
            await client.close()
