"""OBS's WHIP stack against a real server: libdatachannel (npm node-datachannel 0.33, the library OBS's WHIP
output is built on) publishes over WHIP and plays over WHEP, session after session, while two busy loops
load the 2 cores as a busy server's would. Every session must connect: about one in ten once failed its
DTLS handshake ("unknown CA") while aiortc's answers listed three certificate fingerprints."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from protocol import Role
from tests.conftest import require_dependency
from tests.test_whip import WhipClient

INTEROP = Path(__file__).resolve().parent / "interop"
SESSIONS = 30


async def datachannel_sessions(mode: str, url: str, token: str, sessions: int) -> dict:
    node = shutil.which("node")
    missing = None if node and (INTEROP / "node_modules" / "node-datachannel").is_dir() else \
        "node and tests/interop's node-datachannel (tools/setup.sh installs them)"
    require_dependency(missing)
    assert node is not None
    proc = await asyncio.create_subprocess_exec(node, str(INTEROP / "whip_datachannel.mjs"), mode, url, token,
                                                str(sessions), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30 + sessions * 12)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-2000:]
    return json.loads(lines[-1])


async def busy_loops(count: int) -> list[asyncio.subprocess.Process]:
    """``count`` shells spinning on a core each, until killed (each is the process itself: no wrapper whose
    death would leave it running)."""
    return [await asyncio.create_subprocess_exec("sh", "-c", "while :; do :; done") for _ in range(count)]


@pytest.mark.parametrize("mode", ["whip", "whep"])
async def test_libdatachannel_connects_every_time_on_a_busy_machine(server, mode):
    async with aiohttp.ClientSession() as http:
        publisher = None
        if mode == "whep":  # something to play: an aiortc publisher over WHIP
            publisher = WhipClient(http, server.base)
            response = await publisher.start("/whip/show", server.token("show", "studio", Role.HOST), send=True)
            assert response.status == 201
        loops = await busy_loops(2)
        try:
            token = server.token("show", "obs", Role.HOST if mode == "whip" else Role.VIEWER)
            result = await datachannel_sessions(mode, f"{server.base}/{mode}/show", token, SESSIONS)
        finally:
            for loop in loops:
                if loop.returncode is None:
                    loop.kill()
                await loop.wait()
            if publisher is not None:
                await publisher.pc.close()
    outcomes = [r["outcome"] for r in result["results"]]
    assert outcomes == ["connected"] * SESSIONS, (result["results"][:2], result["errors"])


async def watch_its_pictures(fan, user: str, count: int) -> None:
    """``fan`` hears ``user``'s publication announced, subscribes, and decodes ``count`` 640x360 pictures."""
    from clients.media import MediaSession

    joined = await fan.next_event("media", timeout=30)
    assert joined["event"] == "publisher_joined" and joined["user"] == user
    viewer = await MediaSession.subscribe(fan, publisher=joined["publisher"], kinds=("video",))
    track = await viewer.wait_track("video", 20)
    pictures = [await asyncio.wait_for(track.recv(), 10) for _ in range(count)]
    assert {(p.width, p.height) for p in pictures} == {(640, 360)}
    await viewer.close()


def h264_file(path: Path) -> Path:
    """Two seconds of x264 baseline as OBS makes it (zerolatency, a keyframe a second, no B-frames), Annex B with
    an access unit delimiter before each picture, for the libdatachannel publisher to send."""
    import subprocess

    require_dependency(None if shutil.which("ffmpeg") else "ffmpeg (tools/setup.sh installs it)")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=640x360:rate=30", "-t", "2", "-c:v", "libx264", "-profile:v", "baseline",
                    "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p",
                    "-x264-params", "aud=1", "-f", "h264", str(path)], check=True, timeout=60)
    return path


@pytest.mark.parametrize("candidates", ["all", "none", "patch"])
async def test_obs_s_whip_stack_publishes_to_viewers_with_each_way_of_sending_candidates(server, tmp_path,
                                                                                           candidates):
    from clients.client import LiveClient

    node = shutil.which("node")
    require_dependency(None if node and (INTEROP / "node_modules" / "node-datachannel").is_dir() else
                       "node and tests/interop's node-datachannel (tools/setup.sh installs them)")
    assert node is not None
    source = h264_file(tmp_path / "obs.h264")
    async with LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        publisher = await asyncio.create_subprocess_exec(
            node, str(INTEROP / "whip_publish.mjs"), f"{server.base}/whip/show",
            server.token("show", "obs", Role.HOST), str(source), candidates, "8",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await watch_its_pictures(fan, "obs", 60)  # two GOPs, decoded
            out, err = await asyncio.wait_for(publisher.communicate(), 30)
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["outcome"] == "connected" and result["sent"] == 240, (result, err.decode()[-1000:])
    if candidates == "patch":
        assert result["patches"] == [204]


async def test_an_obs_that_vanishes_mid_stream_leaves_its_room_within_seconds(server, tmp_path):
    # OBS killed, or its cable pulled: no DELETE, no DTLS close. With the default silence limit (3.5 s, checked
    # each second) the room hears `publisher_left` well before ICE consent's 30 s would have said it.
    from clients.client import LiveClient

    node = shutil.which("node")
    require_dependency(None if node and (INTEROP / "node_modules" / "node-datachannel").is_dir() else
                       "node and tests/interop's node-datachannel (tools/setup.sh installs them)")
    assert node is not None and server.config.limits.media_silent_timeout <= 5
    source = h264_file(tmp_path / "obs.h264")
    async with LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        publisher = await asyncio.create_subprocess_exec(
            node, str(INTEROP / "whip_publish.mjs"), f"{server.base}/whip/show",
            server.token("show", "obs", Role.HOST), str(source), "all", "60",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            joined = await fan.next_event("media", timeout=20)
            assert joined["event"] == "publisher_joined"
            await asyncio.sleep(1.0)  # streaming
        finally:
            publisher.kill()  # SIGKILL: nothing more leaves it
            await publisher.wait()
        killed = asyncio.get_running_loop().time()
        while (event := await fan.next_event("media", timeout=15))["event"] != "publisher_left":
            pass
        waited = asyncio.get_running_loop().time() - killed
    assert event["publisher"] == joined["publisher"]
    print(f"publisher_left {waited:.1f} s after the kill")


GSTREAMER_CHECK = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp
Gst.init(None)
missing = [e for e in ("webrtcbin", "nicesrc", "vp8enc", "opusenc", "rtpvp8pay", "rtpopuspay", "videotestsrc")
           if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""


def routable_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        return str(probe.getsockname()[0])


async def test_gstreamer_webrtcbin_publishes_over_whip_session_after_session_on_a_busy_machine(start_server):
    from clients.client import LiveClient

    python3 = shutil.which("python3", path="/usr/bin")  # Debian's, with its GObject bindings
    check = await asyncio.create_subprocess_exec(python3 or "python3", "-c", GSTREAMER_CHECK,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await check.communicate()
    require_dependency(None if check.returncode == 0 and not out.strip() else
                       f"GStreamer's webrtcbin through Debian's python3-gi ({(out or err).decode().strip()[-200:]}; "
                       "tools/setup.sh installs it)")
    # libnice (webrtcbin's ICE) never gathers loopback addresses, and a packet to 127.0.0.1 from another
    # address goes nowhere: the server offers the machine's own address as well.
    address = routable_address()
    require_dependency(None if address else "a non-loopback IPv4 address (libnice gathers no loopback)")
    server = await start_server(rooms=("show",), ice_addresses=("127.0.0.1", address))
    sessions = 6
    async with LiveClient(server.ws_url, "show", server.token("show", "fan")) as fan:
        loops = await busy_loops(2)
        gst = await asyncio.create_subprocess_exec(
            python3 or "python3", str(INTEROP / "whip_gstreamer.py"), f"{server.base}/whip/show",
            server.token("show", "gst", Role.HOST), str(sessions), "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await watch_its_pictures(fan, "gst", 15)  # its VP8, decoded
            out, err = await asyncio.wait_for(gst.communicate(), 30 + sessions * 25)
        finally:
            for loop in loops:
                loop.kill()
                await loop.wait()
            if gst.returncode is None:
                gst.kill()
                await gst.wait()
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-2000:]
    outcomes = [r["outcome"] for r in json.loads(lines[-1])["results"]]
    assert outcomes == ["connected"] * sessions, (outcomes, err.decode()[-1000:])
