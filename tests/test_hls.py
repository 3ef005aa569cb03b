"""LL-HLS egress (relay/hls.py, rtc/fmp4.py, signaling/hls.py): the playlist renderer and the blocking rule as
tables; a stream cut from real H.264 (libx264 through PyAV) read back by ffprobe; and a server whose H.264
publisher (a real aiortc peer) is fetched over HTTP as a low-latency player does — the playlist's LL-HLS
tags checked as Apple's rules say, a blocking reload, the hinted part fetched before it exists, the init
section and a segment read by ffprobe."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from benchmarks.hls_load import NGINX as NGINX_HLS_CACHE  # the one cache configuration (docs/deploy.md's)
from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack
from protocol import Role
from relay.hls import DateRange, HlsStream, HlsUnavailable, Part, Segment, blocking_verdict, render_playlist
from rtc.fmp4 import parameter_sets
from tests.conftest import free_port, require_dependency


def _segment(msn: int, parts: int, complete: bool = True, duration: float = 0.3) -> Segment:
    return Segment(msn, 1_700_000_000.0 + msn * 2, [Part(duration, i == 0) for i in range(parts)], complete)


def test_playlist_lists_parts_of_the_newest_segments_and_hints_the_next_part():
    segments = [_segment(n, 6) for n in range(5, 9)] + [_segment(9, 2, complete=False)]
    text = render_playlist(segments, 0.3, 4, (9, 2))
    lines = text.splitlines()
    assert lines[:7] == ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:4",
                         "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.900",
                         "#EXT-X-PART-INF:PART-TARGET=0.300", "#EXT-X-MEDIA-SEQUENCE:5", '#EXT-X-MAP:URI="init.mp4"']
    assert [line for line in lines if line.startswith("seg")] == [f"seg{n}.m4s" for n in range(5, 9)]
    listed = re.findall(r'URI="part(\d+)\.(\d+)\.m4s"', text)
    # Parts of the newest three segments only (7, 8 and the open 9), then the hint for 9.2.
    assert {int(m) for m, _ in listed} == {7, 8, 9}
    assert listed[-1] == ("9", "2") and lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part9.2.m4s"'
    assert text.count("INDEPENDENT=YES") == 3  # each segment's first part starts at its keyframe
    assert "#EXTINF:1.800," in lines
    assert lines.count("#EXTINF:1.800,") == 4 and lines[-2].startswith("#EXT-X-PART:DURATION=0.300")


def test_events_ride_on_the_timeline_as_dateranges_no_text_can_break():
    segments = [_segment(n, 6) for n in range(5, 8)]  # program dates 1_700_000_010 .. 014
    hostile = b'"\n#EXT-X-ENDLIST\n,X-EVIL="1'
    events = [DateRange("product-3", "live-relay.product", 1_700_000_009.0, b"{}"),  # before the first picture
              DateRange("product-4", "live-relay.product", 1_700_000_011.5, hostile)]
    lines = render_playlist(segments, 0.3, 4, None, dateranges=events).splitlines()
    ranges = [line for line in lines if line.startswith("#EXT-X-DATERANGE")]
    assert ranges == ['#EXT-X-DATERANGE:ID="product-4",CLASS="live-relay.product",'
                      f'START-DATE="2023-11-14T22:13:31.500Z",X-DATA=0x{hostile.hex().upper()}']
    assert "#EXT-X-ENDLIST" not in lines and not any("X-EVIL" in line for line in lines)


@pytest.mark.parametrize(("newest", "complete", "parts", "msn", "part", "verdict"), [
    (9, False, 2, 9, 1, "ready"),  # the part is there
    (9, False, 2, 9, 2, "wait"),  # the next part: block
    (9, False, 2, 8, None, "ready"),  # an older segment
    (9, False, 2, 9, None, "wait"),  # the open segment, whole: block until it completes
    (9, True, 6, 9, None, "ready"),
    (9, False, 2, 10, 0, "wait"),  # the next segment's first part
    (9, False, 2, 11, 0, "wait"),  # two ahead: still allowed
    (9, False, 2, 12, 0, "too-far"),  # more than two segments ahead: 400
])
def test_blocking_reload_table(newest, complete, parts, msn, part, verdict):
    segments = [_segment(newest - 1, 6), _segment(newest, parts, complete)]
    assert blocking_verdict(segments, msn, part) == verdict


def test_blocking_before_the_first_segment():
    assert blocking_verdict([], 0, 0) == "wait"
    assert blocking_verdict([], 3, 0) == "too-far"


def _h264_frames(count: int, gop: int) -> list[tuple[bytes, int, bool]]:
    """``count`` frames of 30 fps H.264 (Annex B) from libx264, a keyframe every ``gop``: (data, RTP ts, key)."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(gop), "keyint_min": str(gop)}
    out = []
    for i in range(count):
        picture = np.full((240, 320, 3), (i * 7) % 255, np.uint8)
        picture[(i * 3) % 200:(i * 3) % 200 + 40, 40:80] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3000, encoder.time_base
        out += [(bytes(p), (4_294_000_000 + p.pts) % (1 << 32), p.is_keyframe) for p in encoder.encode(frame)]
    return out


def _ffprobe_frames(path: Path) -> tuple[str, int]:
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(path)],
                            capture_output=True, text=True, timeout=30, check=True)
    codec, frames = result.stdout.strip().split(",")
    return codec, int(frames)


def _ffprobe_audio(path: Path) -> list[str]:
    """[codec, sample rate, channels, frames] of the file's first audio stream."""
    return subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-count_frames", "-show_entries",
                           "stream=codec_name,sample_rate,channels,nb_read_frames", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip().split(",")


def test_a_stream_is_cut_into_parts_and_keyframe_segments_that_ffprobe_reads(tmp_path):
    frames = _h264_frames(200, gop=30)
    assert parameter_sets(frames[0][0]).count(b"\x00\x00\x00\x01") == 2  # its SPS and PPS
    stream = HlsStream("h264", part_target=0.3, segment_target=2.0)
    for data, timestamp, keyframe in frames:  # the RTP timestamps wrap past 2^32 on the way
        stream.add_frame(data, timestamp, keyframe)
    segments = list(stream.segments)
    complete = [s for s in segments if s.complete]
    assert len(complete) >= 2
    assert segments[0].merged and len(segments[0].parts) == 1  # past the listing: kept whole, not by part
    for segment in segments[1:]:
        assert segment.parts[0].independent  # each begins at a keyframe
        assert all(part.duration <= 0.3 + 1e-9 for part in segment.parts)
    assert all(1.9 <= s.duration <= 2.1 for s in complete)  # keyframes every second, segments of ~2 s
    assert stream.init is not None
    # One segment after the init section is a file a player (and ffprobe) reads: its frames, all of them.
    first = complete[0]
    path = tmp_path / "seg.mp4"
    path.write_bytes(stream.init + stream.segment(first.msn))
    assert _ffprobe_frames(path) == ("h264", round(first.duration * 30))
    # The parts of the newest segment concatenate to the same bytes as the segment itself.
    newest = complete[-1]
    assert b"".join(stream.part(newest.msn, i) for i in range(len(newest.parts))) == stream.segment(newest.msn)


async def _fetched(http: aiohttp.ClientSession, url: str, *names: str) -> bytes:
    """The stream's files ``names`` (an init section, then segments), joined: a file ffprobe reads."""
    out = b""
    for name in names:
        async with http.get(f"{url}/{name}") as response:
            out += await response.read()
    return out


def test_only_h264_is_streamed():
    with pytest.raises(HlsUnavailable, match=r"H\.264"):
        HlsStream("vp8")


async def test_a_player_fetches_the_live_show_over_ll_hls(server, tmp_path):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            aiohttp.ClientSession() as http:
        url = f"{server.base}/hls/show"
        async with http.get(f"{url}/index.m3u8") as response:
            assert response.status == 404 and "nothing is on air" in await response.text()
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()],
                                               video_codec="H264")
        async with asyncio.timeout(30):
            async with http.get(f"{url}/index.m3u8") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
                master = await response.text()
        # With sound: a multivariant playlist naming the video and its audio rendition, codecs from the SPS.
        assert '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Sound",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",' \
               'URI="audio.m3u8"' in master
        assert re.search(r'#EXT-X-STREAM-INF:BANDWIDTH=\d+,RESOLUTION=320x240,CODECS="avc1\.42[0-9a-f]{4},mp4a\.40\.2",'
                         r'AUDIO="audio"\nvideo\.m3u8\n', master)
        async with http.get(f"{url}/video.m3u8") as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=1"
            assert response.headers["Access-Control-Allow-Origin"] == "*"  # a shop's page, a CDN
            playlist = await response.text()
        assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.900" in playlist
        assert "#EXT-X-PART-INF:PART-TARGET=0.300" in playlist
        hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.(\d+)\.m4s"', playlist)
        init = re.search(r'#EXT-X-MAP:URI="(\d+\.init\.mp4)"', playlist)
        assert hint and init
        epoch, msn, index = int(hint[1]), int(hint[2]), int(hint[3])
        # The hinted part, asked for before it exists (as a player does): the answer waits for it.
        async with asyncio.timeout(15):
            async with http.get(f"{url}/{epoch}.{msn}.{index}.m4s") as response:
                assert response.status == 200 and response.headers["Content-Type"] == "video/mp4"
                assert response.headers["Cache-Control"] == "public, max-age=60"
                assert b"moof" in (await response.read())[:64]
        # A blocking reload for the part after it returns a playlist that lists it.
        async with asyncio.timeout(15):
            async with http.get(f"{url}/video.m3u8", params={"_HLS_msn": str(msn), "_HLS_part": str(index + 1)}) \
                    as response:
                assert response.status == 200 and response.headers["Cache-Control"] == "public, max-age=6"
                reloaded = await response.text()
        assert f'URI="{epoch}.{msn}.{index + 1}.m4s"' in reloaded or f"{epoch}.{msn}.m4s" in reloaded
        async with http.get(f"{url}/video.m3u8", params={"_HLS_msn": str(msn + 5)}) as response:
            assert response.status == 400 and "too far ahead" in await response.text()
        for bad in ("../../etc/passwd", f"{epoch}.x.m4s", "123.init.mp4"):
            async with http.get(f"{url}/{bad}") as response:
                assert response.status == 404
        # A whole segment: blocking until the first one completes (the relay asks the publisher for the
        # keyframe that ends it), then init + segment read by ffprobe.
        async with asyncio.timeout(30):
            async with http.get(f"{url}/video.m3u8", params={"_HLS_msn": str(msn + 1), "_HLS_part": "0"}) as response:
                assert response.status == 200
                playlist = await response.text()
        segment = re.search(rf"^({epoch}\.(\d+)\.m4s)$", playlist, re.M)
        assert segment, playlist
        path = tmp_path / "segment.mp4"
        path.write_bytes(await _fetched(http, url, init[1], segment[1]))
        codec, count = _ffprobe_frames(path)
        assert codec == "h264" and count >= 10
        # The publisher's Opus is in the audio rendition, as AAC, the same segment about as long as the video's.
        async with http.get(f"{url}/audio.m3u8") as response:
            sound = await response.text()
        assert f'#EXT-X-MAP:URI="{epoch}.ainit.mp4"' in sound and f"{epoch}.a{segment[2]}.m4s" in sound
        assert "#EXT-X-DATERANGE" not in sound
        async with http.get(f"{url}/{epoch}.ainit.mp4") as response:
            audio_head = await response.read()
        async with http.get(f"{url}/{epoch}.a{segment[2]}.m4s") as response:
            audio_body = await response.read()
        (tmp_path / "audio.mp4").write_bytes(audio_head + audio_body)
        audio = _ffprobe_audio(tmp_path / "audio.mp4")
        assert audio[:3] == ["aac", "48000", "2"]
        assert abs(int(audio[3]) * 1024 / 48000 - count / 30) < 0.5
        assert server.relay.hls is not None and set(server.relay.hls.running) == {"show"}
        async with http.get(f"{server.base}/metrics") as response:
            metrics = await response.text()
        assert "live_relay_hls_streams 1.0" in metrics and "live_relay_media_receive_failed 0.0" in metrics
        # A card pushed while the room streams is on the timeline from the next reload, at the server's time.
        await host.push_product({"id": "sku-1", "title": 'Tea "Longjing"\n#EXT-X-ENDLIST', "price": "19.90",
                                 "currency": "EUR", "url": "https://shop.example/p/1",
                                 "image": "https://shop.example/p/1.jpg"})
        async with http.get(f"{url}/video.m3u8") as response:  # after the push's ack
            playlist = await response.text()
        line = next(line for line in playlist.splitlines() if line.startswith("#EXT-X-DATERANGE"))
        assert re.match(r'#EXT-X-DATERANGE:ID="product-\d+",CLASS="live-relay.product",START-DATE="[^"]+Z",'
                        r"X-DATA=0x[0-9A-F]+$", line)
        card = json.loads(bytes.fromhex(line.split("X-DATA=0x")[1]))
        assert card["type"] == "product" and card["product"]["title"] == 'Tea "Longjing"\n#EXT-X-ENDLIST'
        assert "#EXT-X-ENDLIST" not in playlist.splitlines()
        await publisher.close()


async def test_a_vp8_show_is_made_h264_for_hls_within_the_nodes_bound(start_server, tmp_path):
    """A browser host's default VP8, decoded and encoded as H.264 in a worker thread (relay/transcode.py):
    the playlist names H.264, ffprobe reads its frames; a node allowed no transcode says why (409)."""
    server = await start_server(rooms=("show", "other"), hls_max_transcodes=1)
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "other", server.token("other", "host", Role.HOST)) as other, \
            aiohttp.ClientSession() as http:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
        second = await MediaSession.publish(other, [CounterVideoTrack(320, 240)])
        assert publisher.codecs()["video"].name == "VP8"
        url = f"{server.base}/hls/show"
        async with asyncio.timeout(30):
            async with http.get(f"{url}/index.m3u8") as response:
                assert response.status == 200
                playlist = await response.text()
            async with http.get(f"{server.base}/hls/other/index.m3u8") as response:  # the node's one transcode
                assert response.status == 409 and "runs the most it may (1)" in await response.text()
            init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist)
            hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.\d+\.m4s"', playlist)
            assert init and hint
            async with http.get(f"{url}/video.m3u8", params={"_HLS_msn": str(int(hint[2]) + 1)}) as response:
                assert response.status == 200
                playlist = await response.text()
        segment = re.search(rf"^({hint[1]}\.\d+\.m4s)$", playlist, re.M)
        assert segment, playlist
        (tmp_path / "vp8.mp4").write_bytes(await _fetched(http, url, init[1], segment[1]))
        codec, frames = _ffprobe_frames(tmp_path / "vp8.mp4")
        assert codec == "h264" and frames >= 30
        running = server.relay.hls.running["show"]
        assert running.transcoder is not None and running.transcoder.frames_out >= frames
        await second.close()
        await publisher.close()


async def test_a_bad_room_name_is_refused(server):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base}/hls/Bad%20Room!/index.m3u8") as response:
            assert response.status == 400




async def test_a_caching_proxy_in_front_sends_the_origin_one_request_per_part(server, tmp_path):
    """nginx from Debian as the cache a CDN would be (docs/deploy.md's configuration): 200 players asking at
    once for the part being written, then for the playlist that will list the next one, cost the origin one
    request each, and every player gets the same bytes."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    require_dependency(None if nginx else "nginx (tools/setup.sh installs nginx-light)")
    port = free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(NGINX_HLS_CACHE.format(dir=tmp_path, port=port, origin=server.config.port))
    proxy = await asyncio.create_subprocess_exec(nginx, "-c", str(config), "-e", "stderr",
                                                 stderr=asyncio.subprocess.PIPE)
    try:
        async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
            url = f"http://127.0.0.1:{port}/hls/show"
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        async with http.get(f"{url}/index.m3u8") as response:
                            if response.status == 200:
                                playlist = await response.text()
                                break
                    await asyncio.sleep(0.2)
            hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.(\d+)\.m4s"', playlist)
            assert hint
            epoch, msn, index = int(hint[1]), int(hint[2]), int(hint[3])
            egress = server.relay.hls

            async def fetch(path: str, params: dict[str, str] | None = None) -> bytes:
                async with http.get(f"{url}/{path}", params=params) as response:
                    assert response.status == 200
                    return await response.read()

            before = egress.requests
            async with asyncio.timeout(20):
                bodies = await asyncio.gather(*[fetch(f"{epoch}.{msn}.{index}.m4s") for _ in range(200)])
            assert len(set(bodies)) == 1 and b"moof" in bodies[0][:64]
            assert egress.requests - before == 1
            before = egress.requests
            params = {"_HLS_msn": str(msn), "_HLS_part": str(index + 1)}
            async with asyncio.timeout(20):
                playlists = await asyncio.gather(*[fetch("index.m3u8", params) for _ in range(200)])
            assert len(set(playlists)) == 1
            assert egress.requests - before == 1
            await publisher.close()
    finally:
        proxy.terminate()
        await proxy.wait()


async def test_a_room_without_anonymous_viewers_needs_a_token_which_every_uri_carries(start_server):
    server = await start_server(rooms=("show",), allow_anonymous=False)
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            aiohttp.ClientSession() as http:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
        url = f"{server.base}/hls/show"
        async with http.get(f"{url}/index.m3u8") as response:
            assert response.status == 401
        async with http.get(f"{url}/index.m3u8", params={"token": server.token("other", "bea")}) as response:
            assert response.status == 403  # a token for another room
        viewer = server.token("show", "bea")
        async with asyncio.timeout(30):
            async with http.get(f"{url}/index.m3u8", params={"token": viewer}) as response:
                assert response.status == 200
                playlist = await response.text()
        uris = re.findall(r'URI="([^"]+)"', playlist) + [line for line in playlist.splitlines()
                                                          if line and not line.startswith("#")]
        assert uris and all(uri.endswith(f"?token={viewer}") for uri in uris)
        init = next(uri for uri in uris if "init.mp4" in uri)
        async with http.get(f"{url}/{init}") as response:
            assert response.status == 200
        async with http.get(f"{url}/{init.split('?')[0]}") as response:
            assert response.status == 401  # the file itself asks for the token too
        await publisher.close()


def test_hls_players_are_grouped_into_viewing_sessions():
    """signaling/hlsviewers.py with a clock of the test's: a session per user (or address and agent) per room,
    opened at its first playlist request, closed idle_s after its last with the dwell; the oldest closed first
    past the bound."""
    from signaling.hlsviewers import HlsViewers

    now = [100.0]
    said: list[tuple[str, str, str, float | None]] = []
    viewers = HlsViewers(lambda room, key, source, joined, dwell: said.append((room, key, source, dwell)),
                         idle_s=30.0, max_sessions=2, clock=lambda: now[0], wall=lambda: 1_800_000_000.0)
    mei = viewers.key_of("mei", "10.0.0.1", "hls.js")
    phone = viewers.key_of(None, "10.0.0.2", "AppleCoreMedia")
    assert mei == "user:mei" and phone.startswith("anon:") and "10.0.0.2" not in phone
    assert viewers.key_of(None, "10.0.0.2", "AppleCoreMedia") == phone != viewers.key_of(None, "10.0.0.3", "x")
    viewers.seen("show", mei, "douyin")
    for _ in range(20):  # a player at the live edge: a playlist every 0.3 s for 6 s
        now[0] += 0.3
        viewers.seen("show", mei, None)
    now[0] += 1.0
    viewers.seen("show", phone, None)
    assert said == [("show", mei, "douyin", None), ("show", phone, "hls", None)]
    now[0] += 28.5
    assert viewers.sweep() == 0  # not idle long enough
    now[0] += 1.0  # mei's last request 30.5 s ago, the phone's 29.5 s
    assert viewers.sweep() == 1 and said[-1] == ("show", mei, "douyin", 6.0)  # first to last request
    viewers.seen("other", mei, None)
    viewers.seen("third", mei, None)  # a third session: past the bound the oldest (the phone's) is closed
    assert said[-2:] == [("third", mei, "hls", None), ("show", phone, "hls", 0.0)] and len(viewers) == 2
    viewers.close_all()
    assert len(viewers) == 0 and [s[0] for s in said[-2:]] == ["other", "third"]


async def test_hls_players_are_counted_as_viewers_in_analytics(start_server, tmp_path):
    server = await start_server(rooms=("show",), analytics=str(tmp_path / "a.sqlite3"), hls_viewer_idle_s=1.0)
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            aiohttp.ClientSession(headers={"User-Agent": "test-player"}) as http:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
        url = f"{server.base}/hls/show"
        async with asyncio.timeout(30):
            for _ in range(3):
                async with http.get(f"{url}/index.m3u8", params={"src": "weibo"}) as response:
                    assert response.status == 200
                await asyncio.sleep(0.3)
            # The page's own fallback player (its viewer counted by its WebSocket) is not counted again.
            async with http.get(f"{url}/index.m3u8", headers={"X-Live-Relay-Viewer": "page",
                                                               "User-Agent": "the page"}) as response:
                assert response.status == 200
        writer = server.relay.analytics_writer
        async with asyncio.timeout(20):
            while not any(e.kind == "leave" and (e.data or {}).get("via") == "hls"  # noqa: ASYNC110
                          for e in await writer.call(writer.store.events, "show")):
                await asyncio.sleep(0.3)
        events = [e for e in await writer.call(writer.store.events, "show") if (e.data or {}).get("via") == "hls"]
        assert [(e.kind, e.source) for e in events] == [("join", "weibo"), ("leave", "weibo")]
        assert events[0].viewer == events[1].viewer and 0.5 < (events[1].value or 0) < 5
        await publisher.close()


def test_the_multivariant_playlist_lists_each_rendition_with_its_size_and_the_shared_sound():
    from relay.hls import Variant, render_master

    variants = [Variant("video.m3u8", 900_000, "avc1.42c020", (1280, 720)),
                Variant("video0.m3u8", 150_000, "avc1.42c015", (320, 180)),
                Variant("video1.m3u8", 300_000, "avc1.42c01f")]
    assert render_master(variants, "mp4a.40.2") == (
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Sound",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=1280x720,CODECS="avc1.42c020,mp4a.40.2",AUDIO="audio"\nvideo.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=150000,RESOLUTION=320x180,CODECS="avc1.42c015,mp4a.40.2",AUDIO="audio"\nvideo0.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=300000,CODECS="avc1.42c01f,mp4a.40.2",AUDIO="audio"\nvideo1.m3u8\n')
    assert render_master(variants[:1], None) == (
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=1280x720,CODECS="avc1.42c020"\nvideo.m3u8\n')
