"""Issue 21's media findings, each reproduced against a real server on loopback: sessions that never
connect filling a room (finding 7), candidates inside an offer passing the deny list and an offer with
hundreds of them (finding 8). Several client addresses come from binding 127.0.0.x as the source."""

from __future__ import annotations

import asyncio

import aiohttp
from aiortc import RTCPeerConnection

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, read_frame
from protocol import Role
from signaling.config import LimitsConfig
from tests.test_bad_input import _metric


async def _recvonly_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()  # never answers ICE checks: a session that stays "starting"
    return sdp


async def test_sessions_that_never_connect_cannot_fill_a_room(start_server):
    srv = await start_server(rooms=("show",), limits=LimitsConfig(max_media_per_room=3, max_pending_media_per_ip=2,
                                                                   media_connect_timeout=30.0))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120, start=700_000)])
        sdp = await _recvonly_offer()
        statuses: dict[str, list[int]] = {}
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):  # "a few addresses"
            connector = aiohttp.TCPConnector(local_addr=(address, 0))
            async with aiohttp.ClientSession(connector=connector) as http:
                for _ in range(3):
                    response = await http.post(srv.base + "/whep/show", data=sdp,
                                               headers={"Content-Type": "application/sdp"})
                    statuses.setdefault(address, []).append(response.status)
                    if response.status == 429:
                        assert "starting from your address" in await response.text()
        # Each address may have two starting at once; the third is refused (and says why).
        assert all(s == [201, 201, 429] for s in statuses.values()), statuses
        assert srv.relay.media.router.room_peer_count("show") == 7  # host + 6 that never connect
        # The room's bound counts connected sessions: a real viewer still gets in, and gets video.
        async with LiveClient(srv.ws_url, "show") as viewer:
            sub = await MediaSession.subscribe(viewer, kinds=("video",))
            frame = await asyncio.wait_for((await sub.wait_track("video", 20)).recv(), 20)
            assert read_frame(frame)[0] >= 700_000
            await sub.close()
        await publisher.close()


async def test_candidates_inside_an_offer_are_screened_like_trickled_ones(server):
    token = server.token("show", "studio", Role.HOST)
    pc = RTCPeerConnection()
    pc.addTransceiver(CounterVideoTrack(160, 120), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    at = sdp.index("a=candidate:")
    metadata = "a=candidate:9 1 udp 2122260223 169.254.169.254 80 typ host\r\n"
    flood = "".join(f"a=candidate:{n} 1 udp 2122260223 10.0.{n // 250}.{n % 250} 9 typ host\r\n" for n in range(500))
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        many = await http.post(server.base + "/whip/show", data=sdp[:at] + flood + sdp[at:], headers=headers)
        assert many.status == 400 and "at most 64 candidates" in await many.text()
        ok = await http.post(server.base + "/whip/show", data=sdp[:at] + metadata + sdp[at:], headers=headers)
        assert ok.status == 201
        metrics = await (await http.get(server.base + "/metrics")).text()
        assert _metric(metrics, "live_relay_ice_candidates_denied_total") == 1
        location = ok.headers["Location"]
        assert (await http.delete(server.base + location, headers={"Authorization": f"Bearer {token}"})).status == 200
    # A WebSocket offer is screened the same way.
    async with LiveClient(server.ws_url, "show", token) as host:
        import pytest

        from clients.client import ServerError

        with pytest.raises(ServerError) as err:
            await host.request({"type": "publish", "sdp": sdp[:at] + flood[:65 * 60] + sdp[at:]})
        assert err.value.code == "bad_candidate"


def _offer_transport_cc(sdp: str) -> str:
    """Our (aiortc) offer as a browser's reads: transport-cc offered on video."""
    from rtc.twcc import URI

    out, kind = [], ""
    for line in sdp.splitlines():
        out.append(line)
        if line.startswith("m="):
            kind = line[2:].split()[0]
        elif line.startswith("a=rtpmap:") and "VP8/90000" in line:
            out.append(f"a=rtcp-fb:{line.split(':')[1].split()[0]} transport-cc")
        elif line.startswith("a=mid:") and kind == "video":
            out.append(f"a=extmap:9 {URI}")
    return "\r\n".join(out) + "\r\n"


async def test_a_viewer_flooding_hostile_transport_feedback_costs_the_server_nothing_and_is_counted(server):
    """A viewer that negotiated transport-cc (as browsers do) sends feedback made to cost: packets claiming
    65535 statuses in 40 bytes, and hundreds of packets a second. They are refused or not read, counted in
    /metrics, and the viewer's own video goes on (and so does everybody else's)."""
    from rtc.twcc import TransportFeedback

    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show") as hostile, LiveClient(server.ws_url, "show") as bystander:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120, start=800_000)])
        session = await MediaSession.subscribe(hostile, kinds=("video",), offer_filter=_offer_transport_cc)
        other = await MediaSession.subscribe(bystander, kinds=("video",))
        track, other_track = await session.wait_track("video"), await other.wait_track("video")
        async with asyncio.timeout(10):
            await track.recv()
            await other_track.recv()
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(server.base + "/metrics")).text()
        assert _metric(metrics, "live_relay_media_subscriber_estimator", estimator="send_side") == 1
        assert _metric(metrics, "live_relay_media_subscriber_estimator", estimator="remb") == 1  # the bystander
        amplifier = b"\x8f\xcd\x00\x09" + b"\x00" * 8 + b"\x00\x00\xff\xff" + b"\x00" * 4 + b"\x1f\xff" * 10
        valid = TransportFeedback()
        valid.record(1, 1_000_000)
        [plain] = valid.build(1, 2)
        # aiortc's DTLS transport (the test's own peer): it protects RTCP as SRTCP like any other.
        transport = session.pc.getTransceivers()[0].receiver.transport
        for n in range(600):
            await transport._send_rtp(amplifier if n % 2 else plain)
        await asyncio.sleep(1.0)
        async with asyncio.timeout(10):  # both still watching
            seen = [read_frame(await track.recv())[0] for _ in range(10)]
            await other_track.recv()
        assert seen == sorted(seen)
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(server.base + "/metrics")).text()
        assert _metric(metrics, "live_relay_media_bad_feedback") >= 300  # the amplifiers at least
        for s in (session, other, publisher):
            await s.close()
