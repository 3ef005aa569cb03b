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
