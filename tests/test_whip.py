"""WHIP ingest and WHEP playback, driven by a client of this file's own on aiortc and plain HTTP (not the
project's client library), against a real server on loopback."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, read_frame
from protocol import Role
from rtc import adapter
from signaling.app import SERVER
from signaling.whip import parse_sdpfrag


class WhipClient:
    """What OBS does, in a few lines: POST an offer with a bearer token, use the answer, DELETE to stop."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.auth: dict[str, str] = {}  # RFC 9725: the session's URL is used with the token that created it

    async def start(self, path: str, token: str | None, *, send: bool, first: int = 900_000) -> aiohttp.ClientResponse:
        if send:
            self.pc.addTransceiver(CounterVideoTrack(320, 240, start=first), direction="sendonly")
        else:
            self.pc.addTransceiver("video", direction="recvonly")
        adapter.restrict_host_addresses(self.pc, ["127.0.0.1"])  # aioice leaves loopback out otherwise
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        headers = {"Content-Type": "application/sdp", **self.auth}
        response = await self.http.post(self.base + path, data=self.pc.localDescription.sdp, headers=headers)
        if response.status == 201:
            self.location = response.headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=await response.text(), type="answer"))
        return response

    async def stop(self) -> int:
        status = (await self.http.delete(self.base + self.location, headers=self.auth)).status if self.location else 0
        await self.pc.close()
        return status


async def test_a_whip_stream_is_a_publisher_of_the_room_and_whep_plays_it(server):
    async with aiohttp.ClientSession() as http, LiveClient(server.ws_url, "show") as viewer:
        obs = WhipClient(http, server.base)
        response = await obs.start("/whip/show", server.token("show", "studio", Role.HOST), send=True)
        assert response.status == 201 and response.headers["Content-Type"].startswith("application/sdp")
        assert obs.location and obs.location.startswith("/whip/show/")
        joined = await viewer.next_event("media", timeout=10)
        assert joined["event"] == "publisher_joined" and joined["user"] == "studio"
        # A WebSocket viewer sees it as any host's stream, by its content.
        sub = await MediaSession.subscribe(viewer, publisher=joined["publisher"], kinds=("video",))
        frame = await asyncio.wait_for((await sub.wait_track("video", 20)).recv(), 20)
        assert read_frame(frame)[0] >= 900_000
        # A WHEP player (no token: anonymous viewing is on) plays the room's stream.
        player = WhipClient(http, server.base)
        got = asyncio.get_running_loop().create_future()
        player.pc.on("track", lambda track: got.set_result(track) if not got.done() else None)
        answer = await player.start("/whep/show", None, send=False)
        assert answer.status == 201 and answer.headers["Location"].startswith("/whep/show/")
        track = await asyncio.wait_for(got, 20)
        frame = await asyncio.wait_for(track.recv(), 20)
        assert read_frame(frame)[0] >= 900_000
        assert await player.stop() == 200
        await sub.close()
        # DELETE ends the stream for the room.
        assert await obs.stop() == 200
        while (left := await viewer.next_event("media", timeout=10))["event"] != "publisher_left":
            pass
        assert left["publisher"] == joined["publisher"]


async def test_whip_answers_with_the_rfc_status_codes(server):
    async with aiohttp.ClientSession() as http:
        cases = [
            ("/whip/show", None, "application/sdp", 401),
            ("/whip/show", server.token("show", "v", Role.VIEWER), "application/sdp", 403),
            ("/whip/show", server.token("other", "h", Role.HOST), "application/sdp", 403),
            ("/whip/show", "garbage", "application/sdp", 401),
            ("/whip/show", server.token("show", "h", Role.HOST), "text/plain", 415),
            ("/whep/show", None, "application/sdp", 404),  # nobody publishes yet
            ("/whip/not%20a%20room!", "x", "application/sdp", 400),  # room names as the WebSocket allows them
        ]
        for path, token, content_type, status in cases:
            headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
            response = await http.post(server.base + path, data="v=0\r\n", headers=headers)
            assert response.status == status, (path, token, await response.text())
            assert (await response.text()).strip()  # a body that says why
            if status == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
        bad = await http.post(server.base + "/whip/show", data="not sdp at all",
                              headers={"Content-Type": "application/sdp",
                                       "Authorization": f"Bearer {server.token('show', 'h', Role.HOST)}"})
        assert bad.status == 400 and "bad_sdp" in await bad.text()
        assert (await http.delete(server.base + "/whip/show/nope")).status == 401  # no token: never says more
        assert (await http.patch(server.base + "/whip/show/nope", data="a=end-of-candidates",
                                 headers={"Content-Type": "application/trickle-ice-sdpfrag"})).status == 401
        options = await http.options(server.base + "/whip/show")
        assert options.status == 204 and options.headers["Accept-Post"] == "application/sdp"
        assert options.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in options.headers["Access-Control-Expose-Headers"]


async def test_whip_trickle_patch(server):
    async with aiohttp.ClientSession() as http:
        obs = WhipClient(http, server.base)
        assert (await obs.start("/whip/show", server.token("show", "studio", Role.HOST), send=True)).status == 201
        frag = ("a=ice-ufrag:x\r\na=ice-pwd:y\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n")
        ok = await http.patch(server.base + obs.location, data=frag,
                              headers={"Content-Type": "application/trickle-ice-sdpfrag", **obs.auth})
        assert ok.status == 204
        bad = await http.patch(server.base + obs.location, data="m=video 9 X 0\r\na=mid:0\r\na=candidate:garbage\r\n",
                               headers={"Content-Type": "application/trickle-ice-sdpfrag", **obs.auth})
        assert bad.status == 400 and "bad_candidate" in await bad.text()
        assert (await http.patch(server.base + obs.location, data=frag,
                                 headers={"Content-Type": "application/sdp", **obs.auth})).status == 415
        assert await obs.stop() == 200
        assert (await http.delete(server.base + obs.location, headers=obs.auth)).status == 404  # already ended


@pytest.mark.parametrize("text, expected", [
    ("m=audio 9 X 0\r\na=mid:a\r\na=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n"
     "m=video 9 X 0\r\na=mid:v\r\na=candidate:2 1 udp 1 127.0.0.1 2 typ host\r\n",
     [("candidate:1 1 udp 1 127.0.0.1 1 typ host", "a", 0), ("candidate:2 1 udp 1 127.0.0.1 2 typ host", "v", 1)]),
    ("a=end-of-candidates\r\n", []),
])
def test_sdpfrag_parsing(text, expected):
    assert [(c["candidate"], c["sdpMid"], c["sdpMLineIndex"]) for c in parse_sdpfrag(text)] == expected


async def test_what_obs_sends_h264_and_opus_bundled(server):
    """OBS's WHIP output: H.264 video and Opus audio on one bundled connection."""
    from aiortc import RTCRtpSender

    from clients.sources import ToneAudioTrack

    async with aiohttp.ClientSession() as http, LiveClient(server.ws_url, "show") as viewer:
        obs = WhipClient(http, server.base)
        video = obs.pc.addTransceiver(CounterVideoTrack(320, 240, start=500_000), direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() in ("video/h264", "video/rtx")])
        obs.pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        adapter.restrict_host_addresses(obs.pc, ["127.0.0.1"])
        await obs.pc.setLocalDescription(await obs.pc.createOffer())
        assert obs.pc.localDescription.sdp.count("m=") == 2 and "a=group:BUNDLE" in obs.pc.localDescription.sdp
        response = await http.post(server.base + "/whip/show", data=obs.pc.localDescription.sdp, headers={
            "Content-Type": "application/sdp", "Authorization": f"Bearer {server.token('show', 'obs', Role.HOST)}"})
        assert response.status == 201
        answer = await response.text()
        assert "H264" in answer and "opus" in answer
        obs.location = response.headers["Location"]
        obs.auth = {"Authorization": f"Bearer {server.token('show', 'obs', Role.HOST)}"}
        await obs.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        joined = await viewer.next_event("media", timeout=10)
        assert joined["kinds"] == ["audio", "video"]
        sub = await MediaSession.subscribe(viewer, publisher=joined["publisher"])
        frame = await asyncio.wait_for((await sub.wait_track("video", 20)).recv(), 20)
        assert read_frame(frame)[0] >= 500_000
        audio = await asyncio.wait_for((await sub.wait_track("audio", 20)).recv(), 20)
        assert audio.sample_rate == 48000
        await sub.close()
        assert await obs.stop() == 200


async def test_whip_and_whep_sessions_are_reached_only_with_the_token_that_made_them(server):
    """Finding 1 (critical): anonymous PATCH/DELETE found and ended the host's WHIP stream through ids from one
    counter. Now a resource id is 128 random bits, and only its own token (or a host token) may touch it."""
    import re

    async with aiohttp.ClientSession() as http, LiveClient(server.ws_url, "show") as viewer:
        obs = WhipClient(http, server.base)
        studio = server.token("show", "studio", Role.COHOST)
        assert (await obs.start("/whip/show", studio, send=True)).status == 201
        publisher = (await viewer.next_event("media", timeout=10))["publisher"]
        player = WhipClient(http, server.base)
        assert (await player.start("/whep/show", None, send=False)).status == 201
        ids = [loc.rsplit("/", 1)[1] for loc in (obs.location, player.location)]
        for resource_id in ids:  # at least 128 bits of URL-safe base64, nothing of a counter
            assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", resource_id) and "whip" not in resource_id
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        # Without a token, with a stranger's viewer token, with a co-host token of another user, with a host
        # token of another room: nothing may touch the WHIP session, and nothing says it exists.
        strangers = [({}, 401), ({"Authorization": f"Bearer {server.token('show', 'eve')}"}, 404),
                     ({"Authorization": f"Bearer {server.token('show', 'other', Role.COHOST)}"}, 404),
                     ({"Authorization": f"Bearer {server.token('elsewhere', 'h', Role.HOST)}"}, 403)]
        for headers, status in strangers:
            assert (await http.patch(server.base + obs.location, data="a=end-of-candidates",
                                     headers={**frag, **headers})).status == status, headers
            assert (await http.delete(server.base + obs.location, headers=headers)).status == status, headers
        # The same answers for a resource that does not exist (guessing learns nothing).
        guess = f"/whip/show/{'A' * 22}"
        for headers, status in strangers:
            assert (await http.delete(server.base + guess, headers=headers)).status == status, headers
        # A WHEP session's id under /whip/ is no session at all.
        assert (await http.delete(server.base + player.location.replace("/whep/", "/whip/"))).status == 404
        # If-Match that does not match: 412 (RFC 9725 4.3.1), the session lives.
        wrong = await http.patch(server.base + obs.location, data="a=end-of-candidates",
                                 headers={**frag, **obs.auth, "If-Match": '"not-it"'})
        assert wrong.status == 412
        etag_ok = await http.patch(server.base + obs.location, data="a=end-of-candidates",
                                   headers={**frag, **obs.auth, "If-Match": "*"})
        assert etag_ok.status == 204
        assert server.relay.media.router.source(publisher) is not None  # the stream still runs
        assert await player.stop() == 200  # the anonymous player's own URL ends its session
        # A host token of the room may end any session of the room (the operator's own console).
        host = {"Authorization": f"Bearer {server.token('show', 'boss', Role.HOST)}"}
        assert (await http.delete(server.base + obs.location, headers=host)).status == 200
        while (await viewer.next_event("media", timeout=10))["event"] != "publisher_left":
            pass
        await obs.pc.close()


async def test_a_room_whose_only_publisher_is_whip_can_be_joined_and_watched(server):
    # Nobody ever joined "obsonly" over the WebSocket: the WHIP stream alone makes the room exist.
    async with aiohttp.ClientSession() as http:
        obs = WhipClient(http, server.base)
        response = await obs.start("/whip/obsonly", server.token("obsonly", "studio", Role.HOST), send=True)
        assert response.status == 201
        await server.app[SERVER].broker.gc()  # the broker's sweep (every 5 s) once dropped such a room
        async with LiveClient(server.ws_url, "obsonly", server.token("obsonly", "v1")) as viewer:
            publishers = viewer.joined["state"]["publishers"]
            assert [p["user"] for p in publishers] == ["studio"], viewer.joined
            sub = await MediaSession.subscribe(viewer, kinds=("video",))
            frame = await asyncio.wait_for((await sub.wait_track("video", 20)).recv(), 20)
            assert read_frame(frame)[0] >= 900_000
            await sub.close()
        assert await obs.stop() == 200


async def test_sessions_deleted_while_they_connect_leave_no_traceback(server, caplog):
    # aiortc's connect task raised "RTCIceTransport is closed" into nobody's hands: an ERROR with a traceback
    # in the server's log for each client that gave up mid-handshake.
    async with aiohttp.ClientSession() as http:
        for attempt in range(12):
            obs = WhipClient(http, server.base)
            obs.pc.addTransceiver("audio", direction="sendonly")  # two m-sections: aiortc starts each in turn
            response = await obs.start("/whip/show", server.token("show", f"s{attempt}", Role.HOST), send=True)
            assert response.status == 201
            for _ in range(200):  # until it connects, then leave at once (as the OBS-like client did)
                if obs.pc.connectionState == "connected":
                    break
                await asyncio.sleep(0.005)
            assert await obs.stop() == 200
    await asyncio.sleep(0.5)
    import gc

    gc.collect()  # a dropped task's exception is logged when the task is collected
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_whep_player_follows_the_encoder_s_reconnect_and_ends_when_none_comes(start_server):
    """Issue 26: OBS reconnects by DELETE then POST. A WHEP player's session goes on from the new stream
    (same peer connection, its decoder fed on: numbering continues); a WebSocket viewer is told
    publisher_left as before. With no new publication within the window, the WHEP session ends."""
    from signaling.config import LimitsConfig

    server = await start_server(rooms=("show",), limits=LimitsConfig(media_follow_window=3.0))
    async with aiohttp.ClientSession() as http:
        obs = WhipClient(http, server.base)
        token = server.token("show", "studio", Role.HOST)
        assert (await obs.start("/whip/show", token, send=True)).status == 201
        player = WhipClient(http, server.base)
        got = asyncio.get_running_loop().create_future()
        player.pc.on("track", lambda track: got.set_result(track) if not got.done() else None)
        assert (await player.start("/whep/show", None, send=False)).status == 201
        track = await asyncio.wait_for(got, 20)
        assert read_frame(await asyncio.wait_for(track.recv(), 20))[0] in range(900_000, 901_000)
        assert await obs.stop() == 200  # the encoder reconnects...
        again = WhipClient(http, server.base)
        assert (await again.start("/whip/show", token, send=True, first=950_000)).status == 201  # ...as a new POST
        async with asyncio.timeout(20):  # the same player, the same track: the new stream's pictures
            while read_frame(await track.recv())[0] < 950_000:
                pass
        assert player.pc.connectionState == "connected"
        assert await again.stop() == 200  # and now nobody comes back
        for _ in range(75):  # up to 15 s
            if player.pc.connectionState != "connected":
                break
            await asyncio.sleep(0.2)
        assert player.pc.connectionState != "connected"
        router = server.relay.media.router
        assert not any(room.waiting for room in router.rooms.values())
        await player.pc.close()
