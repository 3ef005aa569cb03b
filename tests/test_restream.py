"""Restreaming (signaling/restream.py) to a platform: a stand-in platform, nginx with Debian's RTMP module
that checks the stream key through its on_publish hook as the platforms do, on loopback, and takes RTMPS
through nginx's stream module terminating TLS in front of it (as platforms' RTMPS ingests do). A host adds
the destination over HTTP; ffprobe reads what the platform got (H.264 passed through, AAC); a wrong key is
refused, retried, then "failed" with the platform's reason and never the key; the host removes it. A VP8 show
is made H.264 once for all of its destinations, over RTMP and RTMPS."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from clients.client import LiveClient
from clients.ingest_doors import NGINX_RTMP_MODULE
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack
from protocol import Role
from signaling.restream import explain_refusal, redact
from tests.conftest import free_port, require_dependency
from tests.test_tls import self_signed

GOOD_KEY = "live_7f3a9c-good"
SECOND_KEY = "live_51d0e2-good"
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # Debian's libnginx-mod-stream

PLATFORM = """load_module {module};
load_module {stream_module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
rtmp {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            record off;
            on_publish http://127.0.0.1:{hook}/publish;
            allow play 127.0.0.1;
            deny play all;
        }}
    }}
}}
stream {{
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        proxy_pass 127.0.0.1:{port};
    }}
}}
"""


@contextlib.asynccontextmanager
async def stand_in_platform(directory: Path) -> AsyncIterator[Platform]:
    """A stand-in for a streaming platform's RTMP ingest: nginx-rtmp, keys checked by a hook of ours
    (GOOD_KEY only). Also run by the studio's browser scenario."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert nginx is not None

    async def on_publish(request: web.Request) -> web.Response:
        form = await request.post()
        return web.Response(status=200 if form.get("name") in (GOOD_KEY, SECOND_KEY) else 403)

    hook = web.Application()
    hook.router.add_post("/publish", on_publish)
    runner = web.AppRunner(hook)
    await runner.setup()
    hook_port, port, tls_port = free_port(), free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    config = directory / "platform.conf"
    cert, key = self_signed(directory)
    config.write_text(PLATFORM.format(module=NGINX_RTMP_MODULE, stream_module=NGINX_STREAM_MODULE, dir=directory,
                                      port=port, hook=hook_port, tls_port=tls_port, cert=cert, key=key))
    stand_in = Platform(nginx, config, directory / "nginx.pid", port, tls_port)
    try:
        await stand_in.start()
        yield stand_in
    finally:
        await stand_in.stop()
        await runner.cleanup()


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    modules = all(module.exists() for module in (NGINX_RTMP_MODULE, NGINX_STREAM_MODULE))
    require_dependency(None if nginx and modules and shutil.which("ffmpeg") else
                       "nginx, libnginx-mod-rtmp, libnginx-mod-stream and ffmpeg (tools/setup.sh installs them)")
    async with stand_in_platform(tmp_path) as stand_in:
        yield stand_in


class Platform:
    """The stand-in platform's nginx: RTMP on ``port``, RTMPS on ``tls_port``; ``stop`` and ``start`` again (a
    platform that drops)."""

    def __init__(self, nginx: str, config: Path, pid: Path, port: int, tls_port: int) -> None:
        self.nginx, self.config, self.pid, self.port, self.tls_port = nginx, config, pid, port, tls_port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.pid.unlink(missing_ok=True)
        self.proc = await asyncio.create_subprocess_exec(self.nginx, "-c", str(self.config), "-e", "stderr",
                                                         stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(10):
            while not self.pid.exists():  # noqa: ASYNC110 - nginx says it listens by its pid file
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def _destinations(http: aiohttp.ClientSession, base: str, token: str) -> list[dict]:
    async with http.get(f"{base}/api/rooms/show/restreams", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        return (await r.json())["destinations"]


async def _until(http: aiohttp.ClientSession, base: str, token: str, wanted: str, timeout: float) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            found = await _destinations(http, base, token)
            if found and found[-1]["state"] == wanted:
                return found[-1]
            await asyncio.sleep(0.2)


def _probe(url: str) -> list[str]:
    result = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "10000000", "-show_entries", "stream=codec_name",
                             "-of", "csv=p=0", url], capture_output=True, text=True, timeout=30)
    return sorted(result.stdout.split())


@pytest.mark.parametrize(("ffmpeg_said", "told"), [
    ("***: Connection refused", "nothing answers at that address and port: ***: Connection refused"),
    ("***: Input/output error", "the platform closed the connection before taking the stream (a wrong or expired "
                                "stream key?): ***: Input/output error"),
    ("Unknown error", "Unknown error"),
])
def test_refusals_are_explained(ffmpeg_said, told):
    assert explain_refusal(ffmpeg_said) == told


def test_keys_are_cut_out_of_what_ffmpeg_says():
    said = "rtmp://a.rtmp.youtube.com/live2/abcd-1234: I/O error; key abcd-1234"
    assert redact(said, ["rtmp://a.rtmp.youtube.com/live2/abcd-1234", "abcd-1234"]) == "***: I/O error; key ***"


async def test_a_host_restreams_the_show_to_a_platform(server, platform):
    stand_in, platform = platform, platform.port
    host_token = server.token("show", "host", Role.HOST)
    headers = {"Authorization": f"Bearer {host_token}"}
    base = server.base
    async with LiveClient(server.ws_url, "show", host_token) as host, aiohttp.ClientSession() as http:
        url = f"{base}/api/rooms/show/restreams"
        async with http.post(url, json={"url": f"rtmp://127.0.0.1:{platform}/live", "key": GOOD_KEY},
                             headers=headers) as r:
            assert r.status == 400 and "go live first" in await r.text()
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()],
                                               video_codec="H264")
        async with asyncio.timeout(10):
            while not server.relay.media.router.publishers_of("show"):  # noqa: ASYNC110 - the router's own state
                await asyncio.sleep(0.1)
        async with http.post(url, json={"url": f"rtmp://127.0.0.1:{platform}/live", "key": GOOD_KEY},
                             headers=headers) as r:
            assert r.status == 201
            added = await r.json()
        assert added["state"] == "connecting" and GOOD_KEY not in str(added)
        live = await _until(http, base, host_token, "live", 30)
        assert live["id"] == added["id"] and live["reason"] == ""
        # What the platform got: the H.264 as the host's encoder made it, and AAC.
        streams = await asyncio.to_thread(_probe, f"rtmp://127.0.0.1:{platform}/live/{GOOD_KEY}")
        assert streams == ["aac", "h264"]

        # The platform drops (restarts): the push retries, and is live again once it is back.
        await stand_in.stop()
        retrying = await _until(http, base, host_token, "retrying", 20)
        assert retrying["attempts"] == 1 and GOOD_KEY not in str(retrying)
        await stand_in.start()
        again = await _until(http, base, host_token, "live", 30)
        assert again["attempts"] >= 1
        for _ in range(3):  # (a probe that joins before the new push's first keyframe sees the audio alone)
            streams = await asyncio.to_thread(_probe, f"rtmp://127.0.0.1:{platform}/live/{GOOD_KEY}")
            if streams == ["aac", "h264"]:
                break
        assert streams == ["aac", "h264"]

        # A wrong key: refused by the platform, retried, then failed with its reason and without the key.
        started = time.monotonic()
        async with http.post(url, json={"url": f"rtmp://127.0.0.1:{platform}/live", "key": "wrong-key-123"},
                             headers=headers) as r:
            assert r.status == 201
        failed = await _until(http, base, host_token, "failed", 40)
        assert failed["attempts"] == 4 and "wrong-key-123" not in str(failed)
        assert failed["reason"].startswith("the platform closed the connection before taking the stream")
        assert time.monotonic() - started > 1 + 2 + 4  # it backed off between its tries
        # The show went on meanwhile: the first destination is still live.
        listed = await _destinations(http, base, host_token)
        assert [d["state"] for d in listed] == ["live", "failed"]
        async with http.get(f"{base}/metrics") as r:
            metrics = await r.text()
        assert 'live_relay_restreams{state="live"} 1.0' in metrics
        assert 'live_relay_restreams{state="failed"} 1.0' in metrics and "wrong-key-123" not in metrics
        assert "wrong-key-123" not in str(listed) and GOOD_KEY not in str(listed)

        # Bad requests and who may ask.
        for body in ({"url": "http://example.com/live", "key": "k"}, {"url": f"rtmp://127.0.0.1:{platform}/live"},
                     ["not", "an", "object"]):
            async with http.post(url, json=body, headers=headers) as r:
                assert r.status == 400
        viewer = {"Authorization": f"Bearer {server.token('show', 'bea')}"}
        async with http.get(url, headers=viewer) as r:
            assert r.status == 403
        for destination in listed:
            async with http.delete(f"{url}/{destination['id']}", headers=headers) as r:
                assert r.status == 204
        assert await _destinations(http, base, host_token) == []
        await publisher.close()


async def test_a_vp8_show_is_transcoded_once_for_its_destinations_over_rtmp_and_rtmps(start_server, platform):
    """A browser host's VP8: one transcode for the room, H.264 on both destinations (one over RTMPS), none left
    once the last destination is removed; a second VP8 room past the node's limit is refused with the reason."""
    server = await start_server(rooms=("show", "other"), restream_max_transcodes=1)
    host_token = server.token("show", "host", Role.HOST)
    headers = {"Authorization": f"Bearer {host_token}"}
    restreams = server.relay.restreams
    url = f"{server.base}/api/rooms/show/restreams"
    async with LiveClient(server.ws_url, "show", host_token) as host, aiohttp.ClientSession() as http:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()])  # VP8
        async with asyncio.timeout(10):
            while not server.relay.media.router.publishers_of("show"):  # noqa: ASYNC110 - the router's own state
                await asyncio.sleep(0.1)
        added = []
        for target, key in ((f"rtmp://127.0.0.1:{platform.port}/live", GOOD_KEY),
                            (f"rtmps://127.0.0.1:{platform.tls_port}/live", SECOND_KEY)):
            async with http.post(url, json={"url": target, "key": key}, headers=headers) as r:
                assert r.status == 201, await r.text()
                added.append(await r.json())
        assert len(restreams.transcodes) == 1  # one transcode, whatever the number of destinations
        async with asyncio.timeout(40):
            while [d["state"] for d in await _destinations(http, server.base, host_token)] != ["live", "live"]:  # noqa: ASYNC110 - the host's view, over HTTP
                await asyncio.sleep(0.2)
        for key in (GOOD_KEY, SECOND_KEY):  # what the platform got from each: H.264 made from the VP8, and AAC
            streams = await asyncio.to_thread(_probe, f"rtmp://127.0.0.1:{platform.port}/live/{key}")
            assert streams == ["aac", "h264"], key
        transcoder = restreams.transcodes["show"].transcoder
        assert transcoder.frames_out > 0 and transcoder.failures == 0

        # The node's limit: a second room's VP8 show is refused, with the reason, while this one runs.
        other_token = server.token("other", "host2", Role.HOST)
        async with LiveClient(server.ws_url, "other", other_token) as other_host:
            other = await MediaSession.publish(other_host, [CounterVideoTrack(320, 240)])
            async with asyncio.timeout(10):
                while not server.relay.media.router.publishers_of("other"):  # noqa: ASYNC110 - the router's state
                    await asyncio.sleep(0.1)
            async with http.post(f"{server.base}/api/rooms/other/restreams",
                                 json={"url": f"rtmp://127.0.0.1:{platform.port}/live", "key": GOOD_KEY},
                                 headers={"Authorization": f"Bearer {other_token}"}) as r:
                assert r.status == 400 and "needs a transcode" in await r.text()
            await other.close()

        for destination in added:
            async with http.delete(f"{url}/{destination['id']}", headers=headers) as r:
                assert r.status == 204
        assert restreams.transcodes == {}  # the last destination gone, so is the transcode
        await publisher.close()
