"""The load generator's pre-encoded publisher (clients.sources.ReplayVideoTrack): sent through a real relay
without an encoder, its frames reach a decoding subscriber whole (the keyframe first, pictures that decode
to the pattern's counters, in order through the loop) and a counting subscriber gets them all."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import ReplayVideoTrack, pre_encode_vp8, read_frame
from protocol import Role


def test_pre_encoded_video_starts_with_a_keyframe_and_has_one_each_second():
    frames = pre_encode_vp8(320, 240, fps=10, seconds=3.0, kbps=300)
    assert len(frames) == 30 and [n for n, (_, key) in enumerate(frames) if key] == [0, 10, 20]
    with pytest.raises(ValueError, match="keyframe"):
        ReplayVideoTrack(frames[1:])


async def test_a_replayed_stream_decodes_and_is_counted_through_the_relay(server):
    frames = pre_encode_vp8(320, 240, fps=30, seconds=1.0, kbps=500)
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show") as watcher, LiveClient(server.ws_url, "show") as counter:
        source = ReplayVideoTrack(frames)
        publisher = await MediaSession.publish(host, [source], video_codec="vp8")
        counted: list[bool] = []
        counting = await MediaSession.subscribe(counter, kinds=("video",),
                                                frame_sink=lambda kind, frame, codec: counted.append(True))
        decoding = await MediaSession.subscribe(watcher, kinds=("video",))
        track = await decoding.wait_track("video")
        seen = []
        async with asyncio.timeout(20):
            while len(seen) < 45:  # past the end of the 30-frame loop: it goes round
                seen.append(read_frame(await track.recv())[0])
        steps = [(b - a) % 30 for a, b in itertools.pairwise(seen)]
        assert all(step in (1, 2) for step in steps), seen  # the pattern's own counters, in order (a skip at most)
        assert len(counted) >= 40 and source.counter >= 45
        for session in (decoding, counting, publisher):
            await session.close()


async def test_a_new_viewer_of_a_publisher_that_ignores_keyframe_requests_starts_from_the_kept_keyframe(server):
    """Issue 26's instant first picture: the publisher (pre-encoded, a keyframe every 2 s, deaf to PLI as OBS
    over WHIP is) is joined at several points of its GOP. Each viewer's first picture is one the publisher
    sent *before* the viewer asked (the relay's kept keyframe, not a fresh one), and the frames after it
    follow in order up to the live ones: the past was caught up, not played at its pace."""
    frames = pre_encode_vp8(320, 240, fps=30, seconds=4.0, kbps=400, gop=60)
    assert [n for n, (_, key) in enumerate(frames) if key] == [0, 60]
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        source = ReplayVideoTrack(frames)
        publisher = await MediaSession.publish(host, [source], video_codec="vp8")
        await asyncio.sleep(0.5)
        for pause in (0.3, 0.7, 1.1):  # into the GOP by different amounts
            await asyncio.sleep(pause)
            async with LiveClient(server.ws_url, "show") as viewer:
                asked_at = source.counter  # the frame the publisher is at when the viewer asks
                session = await MediaSession.subscribe(viewer, kinds=("video",))
                track = await session.wait_track("video")
                seen = []
                async with asyncio.timeout(10):
                    while len(seen) < 40:
                        seen.append(read_frame(await track.recv())[0])
                key_counter = asked_at - asked_at % 60  # the last keyframe before the viewer asked
                assert seen[0] % len(frames) == key_counter % len(frames), (asked_at, seen[:5])
                if asked_at % 60 > 2:  # the keyframe was some frames old: a fresh one was not waited for
                    assert seen[0] % 120 != asked_at % 120
                steps = [(b - a) % len(frames) for a, b in itertools.pairwise(seen)]
                assert all(step == 1 for step in steps), seen
                await session.close()
        await publisher.close()
