"""The forwarding SFU end to end: real aiortc peers over loopback, frames checked by their content."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from clients.client import LiveClient, ServerError
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack, read_frame
from protocol import ErrorCode, Role


async def read_counters(session: MediaSession, frames: int, timeout: float = 20.0) -> list[int]:
    track = await session.wait_track("video")
    counters = []
    async with asyncio.timeout(timeout):
        while len(counters) < frames:
            frame = await track.recv()
            counters.append(read_frame(frame)[0])
    return counters


async def test_host_video_reaches_every_viewer_by_content(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        source = CounterVideoTrack()
        publisher = await MediaSession.publish(host, [source, ToneAudioTrack()])
        viewers = [LiveClient(server.ws_url, "show") for _ in range(3)]
        subscriptions = []
        try:
            for viewer in viewers:
                await viewer.connect()
                subscriptions.append(await MediaSession.subscribe(viewer))
            results = await asyncio.gather(*(read_counters(s, 30) for s in subscriptions))
            for counters in results:
                # Real frames of this publisher, in order, mostly consecutive.
                assert counters == sorted(counters)
                assert counters[-1] - counters[0] < 60
                assert len(set(counters)) >= 25
                assert counters[-1] <= source.counter
            audio = await subscriptions[0].wait_track("audio")
            assert (await asyncio.wait_for(audio.recv(), 5)).sample_rate == 48000
        finally:
            for s in subscriptions:
                await s.close()
            for viewer in viewers:
                await viewer.close()
            await publisher.close()


async def test_viewer_cannot_publish_and_bad_offers_are_refused(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "v")) as viewer:
        with pytest.raises(ServerError) as err:
            await MediaSession.publish(viewer, [CounterVideoTrack()])
        assert err.value.code is ErrorCode.FORBIDDEN
        with pytest.raises(ServerError) as err:
            await MediaSession.subscribe(viewer)
        assert err.value.code is ErrorCode.NO_PUBLISHER
    async with LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST)) as host:
        with pytest.raises(ServerError) as err:
            await host.request({"type": "publish", "sdp": "v=0\r\nthis is not sdp"})
        assert err.value.code is ErrorCode.BAD_SDP
        with pytest.raises(ServerError) as err:
            await host.request({"type": "candidate", "media": "nope", "candidate": {"candidate": "x"}})
        assert err.value.code is ErrorCode.UNKNOWN_MEDIA
        await host.comment("still up")  # the server and this connection are fine


async def test_late_joiner_gets_a_keyframe_quickly_and_nothing_undecodable(server, caplog):
    """aiortc's VP8 encoder makes a keyframe every 3000 frames (100 s): once the kept keyframe is too old
    to start from (relay.tracks.KEPT_KEYFRAME_AGE), only a PLI to the publisher gets a late joiner a picture
    within seconds."""
    from relay.tracks import KEPT_KEYFRAME_AGE

    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack()])
        try:
            async with LiveClient(server.ws_url, "show") as early:
                first = await MediaSession.subscribe(early, kinds=("video",))
                await read_counters(first, 10)
                await asyncio.sleep(KEPT_KEYFRAME_AGE + 0.5)  # its first keyframe is too old to start from
                caplog.clear()
                async with LiveClient(server.ws_url, "show") as late:
                    second = await MediaSession.subscribe(late, kinds=("video",))
                    # Without a PLI the next keyframe is ~100 s away: frames within the bound prove it.
                    counters = await read_counters(second, 5, timeout=10.0)
                    assert counters[0] > 30
                    await second.close()
                await first.close()
            media = server.relay.media
            track = next(iter(media.router.rooms["show"].publishers.values())).tracks["video"]
            assert track.pli_sent >= 2  # one per joiner, coalesced
            assert not [r for r in caplog.records if "failed to decode" in r.getMessage()]
        finally:
            await publisher.close()


async def test_publisher_leaving_is_announced_and_ends_the_stream(server):
    from aiortc.mediastreams import MediaStreamError

    host = LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST))
    await host.connect()
    publisher = await MediaSession.publish(host, [CounterVideoTrack()])
    async with LiveClient(server.ws_url, "show") as viewer:
        subscription = await MediaSession.subscribe(viewer, kinds=("video",))
        await read_counters(subscription, 3)
        assert viewer.joined["state"]["publishers"][0]["user"] == "host"
        # The host's connection drops without a word (a crash): the server cleans up and tells the room.
        await host.close()
        while (event := await viewer.next_event("media", timeout=10))["event"] == "publisher_joined":
            pass  # (announced once it connected, which may be after this viewer joined)
        assert event["event"] == "publisher_left" and event["user"] == "host"
        track = subscription.tracks["video"]
        with pytest.raises(MediaStreamError):
            async with asyncio.timeout(10):
                while True:
                    await track.recv()
        await subscription.close()
    await publisher.pc.close()
    assert "show" not in server.relay.media.router.rooms or not server.relay.media.router.rooms["show"].publishers


async def test_plain_1v1_call_both_ways(server):
    """Two parties in a two-party room: each publishes and subscribes to the other."""
    alice = LiveClient(server.ws_url, "call-1", server.token("call-1", "alice", Role.HOST))
    bob = LiveClient(server.ws_url, "call-1", server.token("call-1", "bob", Role.COHOST))
    await alice.connect()
    await bob.connect()
    sessions = []
    try:
        a_pub = await MediaSession.publish(alice, [CounterVideoTrack(), ToneAudioTrack()])
        b_pub = await MediaSession.publish(bob, [CounterVideoTrack(), ToneAudioTrack()])
        sessions += [a_pub, b_pub]
        a_sub = await MediaSession.subscribe(alice, publisher=b_pub.media_id)
        b_sub = await MediaSession.subscribe(bob, publisher=a_pub.media_id)
        sessions += [a_sub, b_sub]
        for sub in (a_sub, b_sub):
            counters = await read_counters(sub, 10)
            assert counters == sorted(counters) and len(set(counters)) >= 8
            setup_ms = (sub.answered - sub.offer_sent) * 1000
            assert setup_ms > 0
    finally:
        for s in sessions:
            await s.close()
        await alice.close()
        await bob.close()


async def test_relay_never_decodes_or_encodes(tmp_path):
    """Structural: a server process whose aiortc decoder factory and encoders are counted forwards a
    stream to two subscribers (checked by content) with zero decoders created and zero encode() calls."""
    import json
    import os
    import signal
    import sys

    import aiohttp

    from protocol import issue_token
    from tests.conftest import SECRET, free_port

    port = free_port()
    audit = tmp_path / "audit.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.audited_server", "--log-level", "WARNING", "serve", "--port", str(port),
        "--secret", SECRET, "--room", "show", env={**os.environ, "AUDIT_OUT": str(audit)})
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        async with LiveClient(url, "show", issue_token(SECRET, "show", "host", Role.HOST)) as host:
            publisher = await MediaSession.publish(host, [CounterVideoTrack(), ToneAudioTrack()])
            async with LiveClient(url, "show") as v1, LiveClient(url, "show") as v2:
                subs = [await MediaSession.subscribe(v1), await MediaSession.subscribe(v2)]
                for counters in await asyncio.gather(*(read_counters(s, 30) for s in subs)):
                    assert len(set(counters)) >= 25
                audio = await subs[0].wait_track("audio")
                await asyncio.wait_for(audio.recv(), 5)
                for s in subs:
                    await s.close()
            await publisher.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert json.loads(audit.read_text()) == {"decoders": 0, "encodes": 0}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_loss_on_one_subscriber_link_is_repaired_and_spares_the_others(server):
    """10% of the RTP to one subscriber is dropped by a forwarder of the test's own. NACK/RTX from the
    relay's own history (and PLI when needed) keep it playing; the other subscriber is unaffected."""
    from tests.lossy_forwarder import LossyForwarder, route_through, server_port_in

    forwarder = await LossyForwarder.start(("127.0.0.1", 0), loss=0.10)

    def via_forwarder(sdp: str) -> str:
        forwarder.server = ("127.0.0.1", server_port_in(sdp))
        return route_through(sdp, forwarder.port)

    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack()])
        async with LiveClient(server.ws_url, "show") as v1, LiveClient(server.ws_url, "show") as v2:
            clean = await MediaSession.subscribe(v1, kinds=("video",))
            lossy = await MediaSession.subscribe(v2, kinds=("video",), answer_filter=via_forwarder)
            clean_counters, lossy_counters = await asyncio.gather(
                read_counters(clean, 150, timeout=40), read_counters(lossy, 120, timeout=40))
            subscribers = server.relay.media.router.rooms["show"].subscribers
            repaired = {s.id: sum(d.retransmitted for d in s.down_tracks) for s in subscribers.values()}
            links = {s["subscriber"]: s["tracks"][0] for s in server.relay.media.router.quality("show")}
            for s in (clean, lossy):
                await s.close()
        await publisher.close()
    forwarder.close()

    def coverage(counters: list[int]) -> float:
        return len(set(counters)) / (max(counters) - min(counters) + 1)

    print(f"loss test: dropped {forwarder.dropped}, forwarded {forwarder.forwarded}, coverage clean "
          f"{coverage(clean_counters):.3f} lossy {coverage(lossy_counters):.3f}")
    assert forwarder.dropped > 20 and forwarder.forwarded > 200  # the loss really happened on that link
    # The lossy subscriber's NACKs were answered from its down-track's history (RTX); the clean one's
    # link lost nothing to ask for.
    assert repaired[lossy.media_id] > 10 and repaired[clean.media_id] == 0, repaired
    # Each subscriber's own receiver reports say the same: loss on one link, none on the other.
    assert links[lossy.media_id]["packets_lost"] > 0 and links[clean.media_id]["packets_lost"] == 0, links
    assert coverage(clean_counters) >= 0.95 and clean_counters == sorted(clean_counters)
    assert coverage(lossy_counters) >= 0.9 and lossy_counters == sorted(lossy_counters)


async def test_h264_is_forwarded_with_the_publishers_exact_codec(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
        async with LiveClient(server.ws_url, "show") as viewer:
            subscription = await MediaSession.subscribe(viewer, kinds=("video",))
            answer = subscription.pc.remoteDescription.sdp
            assert "H264" in answer and "VP8" not in answer
            counters = await read_counters(subscription, 20)
            assert counters == sorted(counters) and len(set(counters)) >= 18
            await subscription.close()
        await publisher.close()


async def test_one_continuous_stream_through_the_keyframe_gate_with_consistent_sender_reports(server):
    """A subscriber's packets, as its own receiver sees them: sequence numbers without a gap or a jump
    across a mute and unmute of the publisher (the down-track stops, then restarts at a keyframe),
    timestamps carried on by the time that passed, and RTCP sender reports whose NTP time matches when
    the packet with their RTP timestamp came."""
    from aiortc.rtp import RtcpSrPacket

    packets: list[tuple[float, int, int]] = []  # (arrival, sequence number, timestamp)
    reports: list[tuple[float, int]] = []  # (NTP time as Unix seconds, RTP timestamp)
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
        async with LiveClient(server.ws_url, "show") as viewer:
            subscription = await MediaSession.subscribe(
                viewer, kinds=("video",), frame_sink=lambda *args: None,
                packet_sink=lambda kind, p, codec: packets.append((time.time(), p.sequence_number, p.timestamp)))
            receiver = subscription.receivers["video"]
            handle_rtcp = receiver._handle_rtcp_packet

            async def watch_rtcp(packet: object) -> None:  # the test's window on what reaches the receiver
                if isinstance(packet, RtcpSrPacket):
                    info = packet.sender_info
                    reports.append((info.ntp_timestamp / (1 << 32) - 2208988800, info.rtp_timestamp))
                await handle_rtcp(packet)

            receiver._handle_rtcp_packet = watch_rtcp
            await asyncio.sleep(2.5)
            assert server.relay.media.router.set_muted("show", "host", "video", True) == 1
            await asyncio.sleep(1.0)
            server.relay.media.router.set_muted("show", "host", "video", False)
            await asyncio.sleep(2.5)
            await subscription.close()
        await publisher.close()
    seqs = [seq for _, seq, _ in packets]
    assert len(set(seqs)) == max(seqs) - min(seqs) + 1  # nothing missing, nothing skipped
    gaps = [(b[0] - a[0], a, b) for a, b in itertools.pairwise(packets)]
    pause, before, after = max(gaps)
    assert pause > 0.8  # the mute (the longest silence; how long the keyframe after it took is not the point)
    assert after[1] == (before[1] + 1) & 0xFFFF  # numbering simply carries on
    assert abs((after[2] - before[2]) / 90000 - pause) < 0.3  # and time went by in the timestamps
    arrivals = {}
    for when, _, ts in packets:
        arrivals.setdefault(ts, when)
    matched = [abs(arrivals[ts] - ntp) for ntp, ts in reports if ts in arrivals]
    assert len(matched) >= 2 and max(matched) < 0.1, (reports[:3], matched)


async def test_a_publishers_stream_restart_is_one_continuous_stream_for_its_subscribers(server):
    """The publisher's stream starts again under a new SSRC (an encoder or connection restart): the relay
    waits for its keyframe and carries the subscriber's numbering on, so the subscriber sees no gap, no
    jump and no new stream, and keeps getting frames."""
    import random

    packets: list[tuple[float, int, int, int]] = []  # (arrival, sequence number, timestamp, ssrc)
    frames: list[float] = []
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
        async with LiveClient(server.ws_url, "show") as viewer:
            subscription = await MediaSession.subscribe(
                viewer, kinds=("video",), frame_sink=lambda *args: frames.append(time.time()),
                packet_sink=lambda kind, p, codec: packets.append((time.time(), p.sequence_number, p.timestamp,
                                                                   p.ssrc)))
            await asyncio.sleep(2.0)
            sender = next(t.sender for t in publisher.pc.getTransceivers() if t.kind == "video")
            downs = [d for s in server.relay.media.router.rooms["show"].subscribers.values() for d in s.down_tracks]
            restarts = downs[0].restarts
            switched = time.time()
            # The publisher's stream restarts under a new SSRC (its transport routes RTCP for it too, as a
            # restarted encoder's would: the relay's keyframe request must reach it).
            sender._ssrc = random.getrandbits(32)
            sender.transport._rtp_router.register_sender(sender, sender._ssrc)
            await asyncio.sleep(2.5)
            await subscription.close()
        await publisher.close()
    assert len(downs) == 1 and downs[0].restarts == restarts + 1  # again, at the new stream's keyframe
    assert len({ssrc for *_, ssrc in packets}) == 1  # one stream, as the subscriber sees it
    seqs = [seq for _, seq, _, _ in packets]
    assert len(set(seqs)) == max(seqs) - min(seqs) + 1  # nothing missing, nothing skipped
    before = [p for p in packets if p[0] < switched]
    after = [p for p in packets if p[0] > switched + 0.3]
    assert before and after and after[0][1] > before[-1][1]
    elapsed = after[0][0] - before[-1][0]
    assert abs(((after[0][2] - before[-1][2]) & 0xFFFFFFFF) / 90000 - elapsed) < 0.3  # timestamps follow time
    assert sum(1 for t in frames if t > switched + 0.5) > 30  # and it keeps decoding-ready frames coming


async def test_the_host_sees_each_subscribers_link(server):
    import aiohttp

    url = server.ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/api/rooms/show/quality"
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
        async with LiveClient(server.ws_url, "show") as viewer, aiohttp.ClientSession() as http:
            subscription = await MediaSession.subscribe(viewer, kinds=("video",))
            await read_counters(subscription, 40)
            headers = {"Authorization": f"Bearer {server.token('show', 'host', Role.HOST)}"}
            # Until its receiver has answered one of the relay's sender reports (they come every 0.5-1.5 s):
            # only then is there a round-trip time.
            async with asyncio.timeout(15):
                while True:
                    async with http.get(url, headers=headers) as r:
                        assert r.status == 200
                        body = await r.json()
                    if body["subscribers"] and body["subscribers"][0]["tracks"][0]["rtt_ms"] is not None:
                        break
                    await asyncio.sleep(0.2)
            async with http.get(url, headers={"Authorization": f"Bearer {server.token('show', 'v')}"}) as r:
                assert r.status == 403
            await subscription.close()
        await publisher.close()
    [link] = body["subscribers"]
    track = link["tracks"][0]
    assert link["subscriber"] == subscription.media_id and track["kind"] == "video"
    assert track["packets_sent"] > 40 and track["loss"] == 0 and track["rtt_ms"] is not None


async def test_a_subscription_to_a_users_publication_waits_for_it_and_gets_its_first_frames(start_server):
    """A 1v1 call's shape: each side subscribes to the other's user before either has published; the
    answer comes once the publication exists (how much sooner the first frame is: benchmarks/call_setup.py)."""
    from signaling.config import LimitsConfig

    srv = await start_server(rooms=("show",), limits=LimitsConfig(publication_wait_s=1.5))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "caller", Role.HOST)) as caller, \
            LiveClient(srv.ws_url, "show", srv.token("show", "callee", Role.COHOST)) as callee:
        waiting = asyncio.ensure_future(MediaSession.subscribe(caller, user="callee", kinds=("video",)))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # nothing to answer with yet; the connection itself carries on
        assert await caller.ping() > 0
        publisher = await MediaSession.publish(callee, [CounterVideoTrack(160, 120, start=40_000)])
        subscription = await asyncio.wait_for(waiting, 10)
        frame = await asyncio.wait_for((await subscription.wait_track("video", 20)).recv(), 20)
        assert read_frame(frame)[0] >= 40_000
        with pytest.raises(ServerError) as err:  # a user who never publishes: told, the slot freed
            await MediaSession.subscribe(callee, user="nobody", kinds=("video",))
        assert err.value.code == "no_publisher" and "nobody" in err.value.args[0]
        await subscription.close()
        await publisher.close()


async def test_a_publisher_that_vanishes_without_a_word_leaves_its_room_within_the_silent_timeout(start_server):
    # An encoder that crashes or loses its cable sends no DELETE and no close: its room heard
    # `publisher_left` only when ICE consent ran out, 30 s later.
    from signaling.config import LimitsConfig

    srv = await start_server(rooms=("show",), limits=LimitsConfig(media_silent_timeout=2.0))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host, \
            LiveClient(srv.ws_url, "show", srv.token("show", "fan")) as fan:
        session = await MediaSession.publish(host, [CounterVideoTrack(160, 120), ToneAudioTrack()])
        joined = await fan.next_event("media", timeout=10)
        viewer = await MediaSession.subscribe(fan, publisher=joined["publisher"], kinds=("video",))
        await asyncio.wait_for((await viewer.wait_track("video", 20)).recv(), 20)
        # The publisher's sockets go dead: nothing more leaves it (no RTP, RTCP, DTLS alert or STUN).
        for transceiver in session.pc.getTransceivers():
            for protocol in transceiver.sender.transport.transport._connection._protocols:
                protocol.transport.abort()
        # Told within the 10 s window (2 s of silence, checked once a second), not at consent's 30 s.
        while (event := await fan.next_event("media", timeout=10))["event"] != "publisher_left":
            pass
        assert event["publisher"] == joined["publisher"]
        await viewer.close()
    await session.close()


async def test_a_publisher_is_announced_with_its_display_name(server):
    """Viewers label a tile with its publisher's name, as they label its comments (they showed user ids)."""
    async with LiveClient(server.ws_url, "show") as early:
        async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST, name="Lin")) as host:
            publisher = await MediaSession.publish(host, [CounterVideoTrack()])
            try:
                joined = await early.next_event("media", timeout=10)
                assert joined["event"] == "publisher_joined" and (joined["user"], joined["name"]) == ("host", "Lin")
                async with LiveClient(server.ws_url, "show") as late:
                    listed = late.joined["state"]["publishers"]
                    assert [(p["user"], p["name"]) for p in listed] == [("host", "Lin")]
            finally:
                await publisher.close()
