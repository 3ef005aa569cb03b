"""Live-commerce scenes end to end: real aiortc peers over loopback, frames checked by content."""

from __future__ import annotations

import asyncio

import pytest

from clients.client import LiveClient, ServerError
from clients.media import MediaSession
from clients.sources import CounterVideoTrack
from protocol import ErrorCode, Role, verify_token
from tests.test_sfu import read_counters


async def on_air(server, room: str, user: str, start: int = 0, role: Role = Role.HOST):
    client = LiveClient(server.ws_url, room, server.token(room, user, role))
    await client.connect()
    publisher = await MediaSession.publish(client, [CounterVideoTrack(320, 240, start=start)])
    return client, publisher


async def frames_from(server_url_client: LiveClient, publisher: str, count: int = 5) -> list[int]:
    subscription = await MediaSession.subscribe(server_url_client, publisher=publisher, kinds=("video",))
    try:
        return await read_counters(subscription, count)
    finally:
        await subscription.close()


async def test_cohost_raises_hand_is_accepted_publishes_and_is_removed(server):
    host, host_pub = await on_air(server, "show", "host", start=0)
    guest = LiveClient(server.ws_url, "show", server.token("show", "guest", Role.VIEWER, name="Guest"))
    audience = LiveClient(server.ws_url, "show")
    await guest.connect()
    await audience.connect()
    try:
        with pytest.raises(ServerError) as err:  # not yet a co-host
            await MediaSession.publish(guest, [CounterVideoTrack()])
        assert err.value.code is ErrorCode.FORBIDDEN
        await guest.request({"type": "stage_request"})
        asked = await host.next_event("stage_requested")
        assert asked["user"] == "guest" and asked["name"] == "Guest"
        await host.request({"type": "stage_accept", "user": "guest"})
        grant = await guest.next_event("grant")
        assert grant["role"] == "cohost" and grant["seat"] == 1
        assert verify_token(server.config.secret, grant["token"]).role is Role.COHOST  # the server's grant
        stage = await audience.next_event("stage")
        assert [s["user"] for s in stage["state"]["seats"]] == ["guest"]

        cohost_pub = await MediaSession.publish(guest, [CounterVideoTrack(320, 240, start=100_000)])
        # The audience sees both: the host and the new co-host, each by its own content.
        host_frames = await frames_from(audience, host_pub.media_id)
        guest_frames = await frames_from(audience, cohost_pub.media_id)
        assert max(host_frames) < 100_000 <= min(guest_frames)
        async with LiveClient(server.ws_url, "show") as late:  # a late joiner gets the scene
            seats = late.joined["state"]["stage"]["seats"]
            assert seats[0]["user"] == "guest" and seats[0]["publishers"] == [cohost_pub.media_id]

        await host.request({"type": "stage_remove", "user": "guest"})
        assert (await guest.next_event("grant"))["role"] == "viewer"
        left = empty_stage = None  # both come, in either order
        while left is None or empty_stage is None:
            event = await audience.next_event("media", "stage")
            if event["type"] == "media" and event["event"] == "publisher_left":
                left = event
            elif event["type"] == "stage" and not event["state"]["seats"]:
                empty_stage = event
        assert left["user"] == "guest"
        with pytest.raises(ServerError) as err:  # back to viewer: no more publishing
            await MediaSession.publish(guest, [CounterVideoTrack()])
        assert err.value.code is ErrorCode.FORBIDDEN
        await cohost_pub.pc.close()
    finally:
        for c in (guest, audience):
            await c.close()
        await host_pub.close()
        await host.close()


async def test_three_cohosts_on_stage_at_once(server):
    host, host_pub = await on_air(server, "show", "host")
    guests = [LiveClient(server.ws_url, "show", server.token("show", f"g{i}")) for i in range(3)]
    audience = LiveClient(server.ws_url, "show")
    publishers = []
    try:
        await audience.connect()
        for i, guest in enumerate(guests):
            await guest.connect()
            await host.request({"type": "stage_invite", "user": f"g{i}"})
            assert (await guest.next_event("stage_invited"))["from"] == "host"
            await guest.request({"type": "stage_invite_answer", "accept": True})
            assert (await guest.next_event("grant"))["seat"] == i + 1
            publishers.append(await MediaSession.publish(guest, [CounterVideoTrack(320, 240, start=(i + 1) * 100_000)]))
        subscriptions = [await MediaSession.subscribe(audience, publisher=p.media_id, kinds=("video",))
                         for p in [host_pub, *publishers]]
        results = await asyncio.gather(*(read_counters(s, 5) for s in subscriptions))
        assert [min(r) // 100_000 for r in results] == [0, 1, 2, 3]  # four distinct streams, by content
        for s in subscriptions:
            await s.close()
        async with LiveClient(server.ws_url, "show") as late:
            assert [s["seat"] for s in late.joined["state"]["stage"]["seats"]] == [1, 2, 3]
    finally:
        for p in publishers:
            await p.close()
        for c in (*guests, audience):
            await c.close()
        await host_pub.close()
        await host.close()


async def test_unauthorized_scene_actions_are_refused(start_server):
    from signaling.config import RoomConfig, ServerConfig
    from tests.conftest import SECRET

    srv = await start_server(ServerConfig(secret=SECRET, rooms=("show",), room=RoomConfig(stage_seats=1)))
    host = LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST))
    viewer = LiveClient(srv.ws_url, "show", srv.token("show", "v1"))
    other = LiveClient(srv.ws_url, "show", srv.token("show", "v2"))
    anon = LiveClient(srv.ws_url, "show")
    for c in (host, viewer, other, anon):
        await c.connect()
    try:
        async def refused(client: LiveClient, message: dict, code: ErrorCode) -> None:
            with pytest.raises(ServerError) as err:
                await client.request(message)
            assert err.value.code is code, message

        await refused(anon, {"type": "stage_request"}, ErrorCode.FORBIDDEN)
        await refused(viewer, {"type": "stage_accept", "user": "v2"}, ErrorCode.FORBIDDEN)
        await refused(viewer, {"type": "stage_invite", "user": "v2"}, ErrorCode.FORBIDDEN)
        await refused(viewer, {"type": "pk_invite", "room": "elsewhere"}, ErrorCode.FORBIDDEN)
        await refused(viewer, {"type": "call_invite", "user": "v2"}, ErrorCode.FORBIDDEN)
        await refused(viewer, {"type": "stage_invite_answer", "accept": True}, ErrorCode.NO_INVITATION)
        await refused(host, {"type": "stage_accept", "user": "v1"}, ErrorCode.NO_INVITATION)
        await refused(viewer, {"type": "call_answer", "accept": True}, ErrorCode.NO_INVITATION)
        await refused(host, {"type": "pk_invite", "room": "nobody-here"}, ErrorCode.NOT_FOUND)
        await refused(host, {"type": "stage_invite", "user": "ghost"}, ErrorCode.NOT_FOUND)
        await viewer.request({"type": "stage_request"})
        await refused(viewer, {"type": "stage_request"}, ErrorCode.BUSY)
        await host.request({"type": "stage_accept", "user": "v1"})
        await refused(other, {"type": "stage_request"}, ErrorCode.STAGE_FULL)  # one seat only
        await refused(viewer, {"type": "stage_mute", "user": "v1", "kind": "video", "muted": True},
                      ErrorCode.FORBIDDEN)  # a co-host cannot mute
        await host.comment("server still fine")
    finally:
        for c in (host, viewer, other, anon):
            await c.close()


async def test_invitations_expire(start_server):
    from signaling.config import RoomConfig, ServerConfig
    from tests.conftest import SECRET

    srv = await start_server(ServerConfig(secret=SECRET, rooms=("show",), room=RoomConfig(invite_ttl=0.3)))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host, \
            LiveClient(srv.ws_url, "show", srv.token("show", "v")) as viewer:
        await host.request({"type": "stage_invite", "user": "v"})
        await viewer.next_event("stage_invited")
        declined = await host.next_event("stage_declined", timeout=5)
        assert declined["reason"] == "expired"
        with pytest.raises(ServerError) as err:
            await viewer.request({"type": "stage_invite_answer", "accept": True})
        assert err.value.code is ErrorCode.NO_INVITATION


async def test_pk_links_two_rooms_scores_and_ends(server):
    host_a, pub_a = await on_air(server, "room-a", "alice", start=0)
    host_b, pub_b = await on_air(server, "room-b", "bob", start=500_000)
    fan_a = LiveClient(server.ws_url, "room-a")
    fan_b = LiveClient(server.ws_url, "room-b")
    await fan_a.connect()
    await fan_b.connect()
    try:
        await host_a.request({"type": "pk_invite", "room": "room-b", "duration_s": 120})
        invited = await host_b.next_event("pk_invited")
        assert invited["from_room"] == "room-a"
        await host_b.request({"type": "pk_answer", "room": "room-a", "accept": True})
        state_a = (await fan_a.next_event("pk"))["state"]
        state_b = (await fan_b.next_event("pk"))["state"]
        sides = {s["room"]: s for s in state_a["sides"]}
        assert sides["room-b"]["publishers"] == [pub_b.media_id] and state_b["sides"] == state_a["sides"]
        # Each room's viewers receive the other host, forwarded: by content.
        assert min(await frames_from(fan_a, pub_b.media_id)) >= 500_000
        assert max(await frames_from(fan_b, pub_a.media_id)) < 500_000
        # A viewer outside the link cannot reach the other room's publisher.
        async with LiveClient(server.ws_url, "room-c", server.token("room-c", "carol", Role.HOST)) as carol:
            with pytest.raises(ServerError) as err:
                await MediaSession.subscribe(carol, publisher=pub_b.media_id, kinds=("video",))
            assert err.value.code is ErrorCode.NO_PUBLISHER
        # Likes in room A count for A.
        await fan_a.like(7)
        async with asyncio.timeout(10):
            while (await fan_b.next_event("pk_score"))["scores"]["room-a"] != 7:
                pass
        async with LiveClient(server.ws_url, "room-b") as late:
            assert {s["room"] for s in late.joined["state"]["pk"]["sides"]} == {"room-a", "room-b"}
        await host_b.request({"type": "pk_end"})
        for fan in (fan_a, fan_b):
            ended = await fan.next_event("pk_ended")
            assert ended["reason"] == "ended by bob" and ended["scores"]["room-a"] == 7
        with pytest.raises(ServerError):  # the link is gone
            await MediaSession.subscribe(fan_a, publisher=pub_b.media_id, kinds=("video",))
    finally:
        for c in (fan_a, fan_b):
            await c.close()
        for p in (pub_a, pub_b):
            await p.close()
        for c in (host_a, host_b):
            await c.close()


async def test_pk_ends_when_a_host_disconnects(server):
    host_a, pub_a = await on_air(server, "room-a", "alice")
    host_b, pub_b = await on_air(server, "room-b", "bob", start=500_000)
    fan_a = LiveClient(server.ws_url, "room-a")
    await fan_a.connect()
    try:
        await host_a.request({"type": "pk_invite", "room": "room-b"})
        await host_b.next_event("pk_invited")
        await host_b.request({"type": "pk_answer", "room": "room-a", "accept": True})
        await fan_a.next_event("pk")
        await pub_b.pc.close()
        await host_b.close()  # bob's connection drops
        ended = await fan_a.next_event("pk_ended", timeout=10)
        assert "bob" in ended["reason"]
        # Room A's own show goes on.
        assert await frames_from(fan_a, pub_a.media_id)
    finally:
        await fan_a.close()
        await pub_a.close()
        await host_a.close()


async def test_switch_viewer_to_private_1v1_and_back(server):
    host, host_pub = await on_air(server, "show", "host")
    guest = LiveClient(server.ws_url, "show", server.token("show", "guest"))
    audience = LiveClient(server.ws_url, "show")
    await guest.connect()
    await audience.connect()
    private_clients: list[LiveClient] = []
    sessions: list[MediaSession] = []
    try:
        show_view = await MediaSession.subscribe(audience, publisher=host_pub.media_id, kinds=("video",))
        await read_counters(show_view, 3)
        await host.request({"type": "call_invite", "user": "guest", "keep_video": False})
        assert (await guest.next_event("call_invited"))["from"] == "host"
        await guest.request({"type": "call_answer", "accept": True})
        host_grant = await host.next_event("call_grant")
        guest_grant = await guest.next_event("call_grant")
        assert host_grant["call_room"] == guest_grant["call_room"] and guest_grant["with"] == "host"
        call = (await audience.next_event("call"))["state"]
        assert call == {**call, "host": "host", "guest": "guest", "keep_video": False}
        private = host_grant["call_room"]
        assert server.relay.media.router.publishers_of("show", "host")[0].tracks["video"].muted

        # Only the two parties may join the private room.
        for token in (server.token(private, "intruder"), None):
            with pytest.raises(ServerError) as err:
                intruder = LiveClient(server.ws_url, private, token)
                await intruder.connect()
            assert err.value.code is ErrorCode.FORBIDDEN
        a = LiveClient(server.ws_url, private, host_grant["token"])
        b = LiveClient(server.ws_url, private, guest_grant["token"])
        private_clients += [a, b]
        await a.connect()
        await b.connect()
        a_pub = await MediaSession.publish(a, [CounterVideoTrack(320, 240, start=700_000)])
        b_pub = await MediaSession.publish(b, [CounterVideoTrack(320, 240, start=800_000)])
        sessions += [a_pub, b_pub]
        assert min(await frames_from(a, b_pub.media_id)) >= 800_000
        assert 700_000 <= min(await frames_from(b, a_pub.media_id)) < 800_000

        await guest.request({"type": "call_end"})
        assert (await audience.next_event("call"))["state"] is None
        assert (await host.next_event("call_ended"))["reason"] == "ended by guest"
        # The show gets the host's video again.
        assert not server.relay.media.router.publishers_of("show", "host")[0].tracks["video"].muted
        await read_counters(show_view, 3)
        await show_view.close()
    finally:
        for s in sessions:
            await s.pc.close()
        for c in (*private_clients, guest, audience):
            await c.close()
        await host_pub.close()
        await host.close()


async def test_scene_runner_reports_every_scene(server):
    from loadtest.scenes import run_scenes

    result = await run_scenes(server.ws_url, server.config.secret, calls=2)
    assert result["scenes"] == {"cohost": "ok", "pk": "ok", "switch_1v1": "ok", "call": "ok"}
    for key in ("cohost_first_frame_ms", "pk_first_frame_ms", "switch_1v1_first_frame_ms",
                "call_setup_ms_p50", "call_setup_ms_p95"):
        assert result[key] > 0


async def test_host_lets_a_cohost_answer_stage_requests(server):
    host = LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST))
    mod = LiveClient(server.ws_url, "show", server.token("show", "mod"))
    fan = LiveClient(server.ws_url, "show", server.token("show", "fan"))
    for c in (host, mod, fan):
        await c.connect()
    try:
        await host.request({"type": "stage_invite", "user": "mod"})
        await mod.request({"type": "stage_invite_answer", "accept": True})
        await mod.next_event("grant")
        await fan.request({"type": "stage_request"})
        with pytest.raises(ServerError) as err:  # a co-host may not answer until the host allows it
            await mod.request({"type": "stage_accept", "user": "fan"})
        assert err.value.code is ErrorCode.FORBIDDEN
        await host.request({"type": "stage_allow", "user": "mod", "allowed": True})
        await mod.request({"type": "stage_accept", "user": "fan"})
        assert (await fan.next_event("grant"))["seat"] == 2
    finally:
        for c in (host, mod, fan):
            await c.close()


async def test_call_setup_reported_by_clients_reaches_metrics(server):
    import aiohttp

    from loadtest.media import one_call
    from tests.test_bad_input import _metric

    setup_ms = await one_call(server.ws_url, "call-metrics", server.config.secret)
    assert setup_ms > 0
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(5):
            while True:
                text = await (await http.get(server.base + "/metrics")).text()
                if _metric(text, "live_relay_client_call_setup_seconds_count") == 1:
                    break
                await asyncio.sleep(0.05)
