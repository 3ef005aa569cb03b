"""The forwarding SFU end to end: real aiortc peers over loopback, frames checked by their content."""

from __future__ import annotations

import asyncio

import pytest

from clients.client import LiveClient, ServerError
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack, read_frame
from signaling.protocol import ErrorCode, Role


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
