"""RTMP and SRT ingest (clients/ingest.py, `live-relay ingest`): Debian's ffmpeg pushes over RTMP and SRT as an
encoder would (OBS's default output, x264 baseline and AAC); a WebSocket viewer of the room receives the H.264
(the bridge has no video encoder: its RTP carries the encoder's own NAL units) and the audio as Opus."""

from __future__ import annotations

import asyncio
import contextlib
import shutil

import pytest

from cli.apps import run_ingest_bridge
from clients.client import LiveClient
from clients.media import MediaSession
from protocol import Role
from tests.conftest import free_port, require_dependency


def ffmpeg_push(url: str, seconds: float, *, bframes: bool = False) -> list[str]:
    """An encoder pushing a test picture (640x360, 30 fps, a keyframe each second) and a tone over RTMP (FLV)
    or SRT (MPEG-TS, as SRT encoders send)."""
    video = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "30"]
    video += ["-profile:v", "high", "-bf", "2"] if bframes else ["-profile:v", "baseline", "-bf", "0",
                                                                 "-tune", "zerolatency"]
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", *video, "-c:a", "aac", "-t", str(seconds),
            "-f", "mpegts" if url.startswith("srt://") else "flv", url]


async def push_when_listening(url: str, seconds: float, **kwargs: bool) -> asyncio.subprocess.Process:
    """Start ffmpeg's push, retrying while the bridge's listener is not up yet (bounded)."""
    for _ in range(50):
        proc = await asyncio.create_subprocess_exec(*ffmpeg_push(url, seconds, **kwargs),
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(0.5)
        if proc.returncode is None:
            return proc  # connected and pushing
        await proc.wait()
    raise AssertionError("ffmpeg never connected to the bridge")


async def stop_push_and_bridge(pusher: asyncio.subprocess.Process, bridge: asyncio.Task[int]) -> None:
    """The end of a session: the encoder killed if still pushing, the bridge cancelled and awaited."""
    if pusher.returncode is None:
        pusher.kill()
    await pusher.wait()
    bridge.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await bridge


@pytest.fixture
def ffmpeg() -> None:
    require_dependency(None if shutil.which("ffmpeg") else "ffmpeg (tools/setup.sh installs it)")


@pytest.mark.parametrize("scheme", ["rtmp", "srt"])
async def test_a_push_reaches_viewers_as_the_encoder_made_it(server, ffmpeg, scheme):
    port = free_port()
    listen = f"rtmp://127.0.0.1:{port}/live/stream" if scheme == "rtmp" else f"srt://127.0.0.1:{port}"
    host_token = server.token("show", "studio", Role.HOST)
    bridge = asyncio.create_task(run_ingest_bridge(listen, server.ws_url, "show", host_token, sessions=1))
    pusher = await push_when_listening(listen, 6)
    try:
        async with LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
            joined = await fan.next_event("media", timeout=20)
            assert joined["event"] == "publisher_joined" and joined["user"] == "studio"
            assert sorted(joined["kinds"]) == ["audio", "video"]
            viewer = await MediaSession.subscribe(fan, publisher=joined["publisher"])
            video = await viewer.wait_track("video", 20)
            frames = [await asyncio.wait_for(video.recv(), 10) for _ in range(30)]
            assert {(f.width, f.height) for f in frames} == {(640, 360)}
            sound = await viewer.wait_track("audio", 20)
            heard = [await asyncio.wait_for(sound.recv(), 10) for _ in range(50)]  # a second of it, whole
            assert {s.sample_rate for s in heard} == {48000}
            codec = viewer.pc.getTransceivers()[0].receiver._RTCRtpReceiver__codecs  # what the relay sends
            assert any(c.mimeType == "video/H264" for c in codec.values())
            await viewer.close()
        assert await asyncio.wait_for(bridge, 20) == 1  # the push ended: one session relayed
    finally:
        await stop_push_and_bridge(pusher, bridge)


async def test_b_frames_are_refused_with_one_line_and_the_bridge_listens_again(server, ffmpeg):
    listen = f"rtmp://127.0.0.1:{free_port()}/live/stream"
    said: list[str] = []
    from clients.ingest import run_ingest

    @contextlib.asynccontextmanager
    async def publish(tracks):  # a stand-in for the room: only what the bridge says is looked at
        yield None

    bridge = asyncio.create_task(run_ingest(listen, publish, sessions=1, on_event=said.append))
    pusher = await push_when_listening(listen, 4, bframes=True)
    try:
        assert await asyncio.wait_for(bridge, 20) == 1
    finally:
        if pusher.returncode is None:
            pusher.kill()
        await pusher.wait()
    ended = [line for line in said if line.startswith("stream ended")]
    assert ended and "B-frames" in ended[0] and "baseline" in ended[0]


async def test_video_that_is_not_h264_is_refused_with_one_line(ffmpeg):
    listen = f"rtmp://127.0.0.1:{free_port()}/live/stream"
    said: list[str] = []
    from clients.ingest import run_ingest

    @contextlib.asynccontextmanager
    async def publish(tracks):  # a stand-in for the room: never reached
        raise AssertionError("published a stream it should have refused")
        yield None

    bridge = asyncio.create_task(run_ingest(listen, publish, sessions=1, listen_timeout=8, on_event=said.append))
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
               "testsrc=size=320x240:rate=15", "-c:v", "flv1", "-t", "3", "-f", "flv", listen]
    pusher = None
    for _ in range(20):  # until the bridge listens
        pusher = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL,
                                                      stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(0.5)
        if pusher.returncode is None:
            break
        await pusher.wait()
    try:
        assert await asyncio.wait_for(bridge, 30) == 0
    finally:
        if pusher is not None and pusher.returncode is None:
            pusher.kill()
        if pusher is not None:
            await pusher.wait()
    assert any("sends flv" in line and "H.264" in line for line in said), said



async def test_an_srt_listener_with_a_passphrase_refuses_encoders_without_it(ffmpeg):
    port = free_port()
    secret = "live-relay-srt-secret"
    published: list[int] = []
    from clients.ingest import run_ingest

    @contextlib.asynccontextmanager
    async def publish(tracks):  # a stand-in for the room: counts the video packets the encoder's push gave
        packets = [0]

        async def read() -> None:
            with contextlib.suppress(Exception):
                while True:
                    await tracks[0].recv()
                    packets[0] += 1

        reader = asyncio.create_task(read())
        yield None
        await asyncio.sleep(0.2)  # what the demuxer handed over last
        reader.cancel()
        published.append(packets[0])

    bridge = asyncio.create_task(run_ingest(f"srt://127.0.0.1:{port}?passphrase={secret}", publish, sessions=1,
                                            listen_timeout=30, on_event=lambda line: None))
    try:
        await asyncio.sleep(1.0)  # the receiver listens
        wrong = await asyncio.create_subprocess_exec(
            *ffmpeg_push(f"srt://127.0.0.1:{port}?passphrase=not-the-secret-at-all", 2),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(wrong.wait(), 20) != 0  # refused at SRT's handshake
        assert not published and not bridge.done()
        right = await push_when_listening(f"srt://127.0.0.1:{port}?passphrase={secret}", 3)
        try:
            assert await asyncio.wait_for(bridge, 30) == 1
        finally:
            if right.returncode is None:
                right.kill()
            await right.wait()
        assert published and published[0] >= 60  # its 3 s at 30 fps came through (bar the start's probe)
    finally:
        bridge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bridge
