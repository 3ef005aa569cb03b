"""RTMP and SRT ingest (clients/ingest.py, clients/ingest_doors.py, `live-relay ingest`): Debian's ffmpeg pushes
over RTMP (to nginx's RTMP module) and SRT (to GStreamer's SRT listener) as an encoder would (OBS's default
output, x264 baseline and AAC), its stream key or streamid a host token; a WebSocket viewer of the token's room
receives the H.264 (the bridge has no video encoder: its RTP carries the encoder's own NAL units) and the audio
as Opus. Keys the server does not take are refused at the door, before any media flows."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from clients.client import LiveClient
from clients.ingest import IngestBridge
from clients.ingest_doors import NGINX_RTMP_MODULE, RtmpDoor, SrtDoor
from clients.media import MediaSession
from protocol import Role
from protocol.tokens import issue_token
from tests.conftest import free_port, require_dependency


def ffmpeg_push(url: str, seconds: float, *, bframes: bool = False, codec: str = "libx264") -> list[str]:
    """An encoder pushing a test picture (640x360, 30 fps, a keyframe each second) and a tone over RTMP (FLV)
    or SRT (MPEG-TS, as SRT encoders send)."""
    video = ["-c:v", codec, "-pix_fmt", "yuv420p", "-g", "30"]
    if codec == "libx264":
        video += ["-preset", "veryfast"]
        video += ["-profile:v", "high", "-bf", "2"] if bframes else ["-profile:v", "baseline", "-bf", "0",
                                                                     "-tune", "zerolatency"]
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", *video, "-c:a", "aac", "-t", str(seconds),
            "-f", "mpegts" if url.startswith("srt://") else "flv", url]


def push_url(door: RtmpDoor | SrtDoor, key: str, passphrase: str | None = None) -> str:
    """Where an encoder set up for ``door`` pushes with ``key``: OBS's Server + Stream Key, or SRT's URL."""
    if isinstance(door, RtmpDoor):
        return f"rtmp://127.0.0.1:{door.port}/{door.app}/{key}"
    secret = f"&passphrase={passphrase}" if passphrase else ""
    return f"srt://127.0.0.1:{door.uri.split(':')[2].split('?')[0]}?streamid={quote(key)}{secret}"


async def push(url: str, seconds: float, **kwargs: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*ffmpeg_push(url, seconds, **kwargs),  # type: ignore[arg-type]
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def ended(proc: asyncio.subprocess.Process, timeout: float) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
def ffmpeg() -> None:
    require_dependency(None if shutil.which("ffmpeg") else "ffmpeg (tools/setup.sh installs it)")


@pytest.fixture
def doors() -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    require_dependency(None if nginx and NGINX_RTMP_MODULE.exists() else
                       "nginx and libnginx-mod-rtmp (tools/setup.sh installs them)")
    require_dependency(None if Path("/usr/lib/python3/dist-packages/gi").exists() else
                       "python3-gi and gstreamer1.0-plugins-bad (tools/setup.sh installs them)")


@contextlib.asynccontextmanager
async def door_at(scheme: str, bridge: IngestBridge, query: str = "") -> AsyncIterator[RtmpDoor | SrtDoor]:
    port = free_port()
    door: RtmpDoor | SrtDoor = (RtmpDoor(f"rtmp://127.0.0.1:{port}/live", bridge) if scheme == "rtmp"
                                else SrtDoor(f"srt://127.0.0.1:{port}{query}", bridge))
    await door.open()
    try:
        yield door
    finally:
        await door.close()


async def watch(fan: LiveClient, frames: int = 30) -> None:
    """The room's publisher seen and decoded at ``fan``: 640x360 H.264 pictures, then a second of Opus."""
    joined = await fan.next_event("media", timeout=20)
    assert joined["event"] == "publisher_joined" and joined["user"] == "studio"
    assert sorted(joined["kinds"]) == ["audio", "video"]
    viewer = await MediaSession.subscribe(fan, publisher=joined["publisher"])
    try:
        video = await viewer.wait_track("video", 20)
        pictures = [await asyncio.wait_for(video.recv(), 10) for _ in range(frames)]
        assert {(f.width, f.height) for f in pictures} == {(640, 360)}
        sound = await viewer.wait_track("audio", 20)
        heard = [await asyncio.wait_for(sound.recv(), 10) for _ in range(50)]  # a second of it, whole
        assert {s.sample_rate for s in heard} == {48000}
        codec = viewer.pc.getTransceivers()[0].receiver._RTCRtpReceiver__codecs  # what the relay sends
        assert any(c.mimeType == "video/H264" for c in codec.values())
    finally:
        await viewer.close()


@pytest.mark.parametrize("scheme", ["rtmp", "srt"])
async def test_a_push_with_a_host_token_as_key_reaches_its_room_as_the_encoder_made_it(server, ffmpeg, doors,
                                                                                        scheme):
    said: list[str] = []
    bridge = IngestBridge(server.ws_url, on_event=said.append)
    async with door_at(scheme, bridge) as door, \
            LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        pusher = await push(push_url(door, server.token("show", "studio", Role.HOST)), 6)
        try:
            await watch(fan)
            assert await ended(pusher, 20) == 0  # pushed its 6 s to the end, never dropped
        finally:
            await ended(pusher, 0.1)
        left = await fan.next_event("media", timeout=10)  # the encoder stopped: so does its publication
        assert left["event"] == "publisher_left"
    assert bridge.relayed == 1
    assert any(line.startswith("show: encoder from 127.0.0.1") for line in said), said
    assert not any(server.token("show", "studio", Role.HOST)[:40] in line for line in said)  # keys never said


@pytest.mark.parametrize("scheme", ["rtmp", "srt"])
async def test_keys_that_are_not_a_host_token_of_a_room_are_refused_at_the_door(server, ffmpeg, doors, scheme):
    said: list[str] = []
    bridge = IngestBridge(server.ws_url, on_event=said.append)
    keys = {
        "not a token": "stream",
        "a viewer's token": server.token("show", "fan", Role.VIEWER),
        "an expired host token": server.token("show", "studio", Role.HOST, ttl=-60),
        "another server's token": issue_token("another-secret-of-at-least-thirty-two-bytes", "show", "studio",
                                              Role.HOST),
    }
    async with door_at(scheme, bridge) as door, \
            LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        for what, key in keys.items():
            pusher = await push(push_url(door, key), 3)
            assert await ended(pusher, 20) != 0, what  # refused: the encoder's push fails
        with pytest.raises(TimeoutError):  # nobody went on air
            await fan.next_event("media", timeout=0.5)
    refusals = [line for line in said if line.startswith("refused an encoder")]
    assert len(refusals) == len(keys), said
    assert "not a live-relay token" in refusals[0] and "a viewer's token" in refusals[1]
    assert "token_expired" in refusals[2] and "unauthorized" in refusals[3]
    assert bridge.relayed == 0


async def test_revoking_the_stream_key_takes_the_stream_off_air_and_drops_the_encoder(server, ffmpeg, doors):
    key = server.token("show", "studio", Role.HOST, ttl=86400)
    said: list[str] = []
    bridge = IngestBridge(server.ws_url, on_event=said.append)
    async with door_at("rtmp", bridge) as door, \
            LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        pusher = await push(push_url(door, key), 30)
        try:
            joined = await fan.next_event("media", timeout=20)
            assert joined["event"] == "publisher_joined"
            base = f"http://127.0.0.1:{server.config.port}"
            revoke = await asyncio.create_subprocess_exec(
                ".venv/bin/live-relay", "revoke", "--url", base, "--room", "show", "--token", key,
                "--secret", server.config.secret, stdout=asyncio.subprocess.DEVNULL)
            assert await revoke.wait() == 0
            left = await fan.next_event("media", timeout=10)
            assert left["event"] == "publisher_left"
            assert await ended(pusher, 10) != 0  # dropped long before its 30 s
        finally:
            await ended(pusher, 0.1)
    assert any("revoked" in line for line in said if line.startswith("stream ended")), said


async def test_b_frames_are_refused_with_one_line_and_the_door_stays_open(server, ffmpeg, doors):
    said: list[str] = []
    bridge = IngestBridge(server.ws_url, on_event=said.append)
    key = server.token("show", "studio", Role.HOST)
    async with door_at("rtmp", bridge) as door:
        pusher = await push(push_url(door, key), 20, bframes=True)
        assert await ended(pusher, 15) != 0  # dropped once the bridge saw the B-frames
        pusher = await push(push_url(door, key), 20, codec="flv1")
        assert await ended(pusher, 15) != 0
        async with LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
            pusher = await push(push_url(door, key), 4)  # set up right, the next push goes on air
            try:
                await watch(fan, frames=10)
            finally:
                await ended(pusher, 10)
    stream_ended = [line for line in said if line.startswith("stream ended")]
    assert "B-frames" in stream_ended[0] and "baseline" in stream_ended[0], said
    assert "sends flv" in stream_ended[1] and "H.264" in stream_ended[1], said


async def test_an_srt_door_with_a_passphrase_refuses_encoders_without_it(server, ffmpeg, doors):
    secret = "live-relay-srt-secret"
    said: list[str] = []
    bridge = IngestBridge(server.ws_url, on_event=said.append)
    key = server.token("show", "studio", Role.HOST)
    async with door_at("srt", bridge, f"?passphrase={secret}") as door, \
            LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        wrong = await push(push_url(door, key, "not-the-secret-at-all"), 2)
        assert await ended(wrong, 20) != 0  # refused at SRT's handshake (after its streamid was judged)
        right = await push(push_url(door, key, secret), 4)
        try:
            await watch(fan, frames=10)
        finally:
            await ended(right, 10)
    assert bridge.relayed == 1


async def test_the_command_runs_both_doors_and_relays_into_the_key_s_room(server, ffmpeg, doors):
    rtmp, srt = free_port(), free_port()
    bridge = await asyncio.create_subprocess_exec(
        ".venv/bin/live-relay", "ingest", "--listen", f"rtmp://127.0.0.1:{rtmp}/live", "--listen",
        f"srt://127.0.0.1:{srt}", "--url", f"http://127.0.0.1:{server.config.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert bridge.stdout is not None
    try:
        lines = [(await asyncio.wait_for(bridge.stdout.readline(), 15)).decode() for _ in range(2)]
        assert all(line.startswith("listening at ") for line in lines), lines
        async with LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
            pusher = await push(f"rtmp://127.0.0.1:{rtmp}/live/{server.token('show', 'studio', Role.HOST)}", 3)
            try:
                await watch(fan, frames=10)
            finally:
                await ended(pusher, 10)
        bridge.terminate()  # stopped as a service manager stops it: its doors' servers go with it
        assert await asyncio.wait_for(bridge.wait(), 15) == 0
        rest = (await bridge.stdout.read()).decode()
        assert "relayed 1 stream(s)" in rest, rest
        for port in (rtmp, srt):
            with socket.socket(type=socket.SOCK_DGRAM if port == srt else socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", port))  # free again
    finally:
        if bridge.returncode is None:
            bridge.kill()
            await bridge.wait()
