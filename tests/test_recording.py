"""`serve --record DIR`: a publisher recorded as received (video and audio in one Matroska file, the right
duration), and the room's events logged with their media time. Real server, real aiortc publisher."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import av
import pytest

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack
from protocol import Role
from signaling.config import RoomConfig


async def recording_stopped(root, room: str = "show", timeout: float = 10) -> None:
    """Until the room's events log says a recording stopped (the writer thread and the ticker are the
    server's own: there is nothing to await)."""
    async with asyncio.timeout(timeout):
        while "recording_stopped" not in "".join(  # noqa: ASYNC110
                p.read_text() for p in (root / room).glob("*-events.jsonl")):
            await asyncio.sleep(0.1)


async def test_a_publisher_is_recorded_with_its_sound_and_the_rooms_events(start_server, tmp_path):
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()])
        await asyncio.sleep(1.5)
        await host.comment("recorded comment")
        await asyncio.sleep(1.5)
        await publisher.close()
        await recording_stopped(tmp_path)  # the file is closed once the publisher has left
    [media] = list((tmp_path / "show").glob("*.mkv"))
    with av.open(str(media)) as container:
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "video"]  # sound and picture together
        video = container.streams.video[0]
        frames = [f for f in container.decode(video)]
    assert len(frames) > 60 and (frames[0].width, frames[0].height) == (320, 240)
    span = frames[-1].time - frames[0].time
    assert 2.0 < span < 4.0, span  # ~3 s of show is ~3 s of file
    events = [json.loads(line) for line in next((tmp_path / "show").glob("*-events.jsonl")).read_text().splitlines()]
    kinds_logged = [e["type"] for e in events]
    assert kinds_logged[0] == "recording_started" and "recording_stopped" in kinds_logged
    [comment] = [e for e in events if e["type"] == "comment"]
    assert comment["text"] == "recorded comment" and 1000 < comment["media_ms"] < 4000  # 1.5 s in, give or take


async def test_recordings_are_listed_and_served_to_the_rooms_host_only(start_server, tmp_path):
    import aiohttp

    srv = await start_server(rooms=("show",), record_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
        await asyncio.sleep(1.0)
        await publisher.close()
        await recording_stopped(tmp_path)
    host_token = srv.token("show", "host", Role.HOST)
    async with aiohttp.ClientSession() as http:
        url = f"{srv.base}/recordings/show"
        assert (await http.get(url)).status == 401
        assert (await http.get(url, headers={"Authorization": f"Bearer {srv.token('show', 'v')}"})).status == 403
        other = srv.token("other", "host", Role.HOST)
        assert (await http.get(url, headers={"Authorization": f"Bearer {other}"})).status == 403
        listing = await (await http.get(url, headers={"Authorization": f"Bearer {host_token}"})).json()
        assert {item["kind"] for item in listing} == {"media", "events"}
        media = next(item for item in listing if item["kind"] == "media")
        on_disk = (tmp_path / "show" / media["file"]).read_bytes()
        assert media["bytes"] == len(on_disk) > 0
        whole = await http.get(f"{url}/{media['file']}", params={"token": host_token})  # as a <video src> would
        assert whole.status == 200 and await whole.read() == on_disk
        part = await http.get(f"{url}/{media['file']}", params={"token": host_token}, headers={"Range": "bytes=0-99"})
        assert part.status == 206 and await part.read() == on_disk[:100]  # players can seek
        for name in ("..%2F..%2Fetc%2Fpasswd", "nope.mkv"):
            assert (await http.get(f"{url}/{name}", params={"token": host_token})).status == 404


async def test_the_host_starts_and_stops_a_recording(start_server, tmp_path):
    from clients.client import ServerError

    srv = await start_server(rooms=("show",), recordings_dir=str(tmp_path))  # no --record: only when asked
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host, \
            LiveClient(srv.ws_url, "show", srv.token("show", "fan")) as fan:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120), ToneAudioTrack()])
        await asyncio.sleep(0.5)
        assert not (tmp_path / "show").exists()  # nothing is recorded unless the host asks
        with pytest.raises(ServerError) as err:
            await fan.request({"type": "record_start"})
        assert err.value.code == "forbidden"
        await host.request({"type": "record_start"})
        state = (await fan.next_event("recording"))["state"]
        assert state["active"] and state["by"] == "host"
        with pytest.raises(ServerError) as err:
            await host.request({"type": "record_start"})
        assert err.value.code == "busy"
        await asyncio.sleep(1.5)
        await host.request({"type": "record_stop"})
        assert (await fan.next_event("recording"))["state"] is None
        async with LiveClient(srv.ws_url, "show") as late:
            assert late.joined["state"]["recording"] is None
        [media] = list((tmp_path / "show").glob("*.mkv"))
        with av.open(str(media)) as container:
            streams = len(container.streams)
            frames = list(container.decode(video=0))
        assert 1.0 < frames[-1].time - frames[0].time < 3.0 and streams == 2
        await publisher.close()


async def test_ffprobe_agrees_with_what_the_server_says_it_recorded(start_server, tmp_path):
    """An independent reader (ffprobe) finds the duration and streams the listing states."""
    import shutil

    import aiohttp

    from tests.conftest import require_dependency

    require_dependency(None if shutil.which("ffprobe") else "ffprobe (apt-get install ffmpeg)")
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()])
        await asyncio.sleep(2.5)
        await publisher.close()
        await recording_stopped(tmp_path)
    host_token = srv.token("show", "h", Role.HOST)
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{srv.base}/recordings/show", headers={"Authorization": f"Bearer {host_token}"})
        listing = await response.json()
    [media] = [item for item in listing if item["kind"] == "media"]
    assert media["streams"] == {"video": "vp8", "audio": "opus"} and 2.0 < media["duration_s"] < 3.5
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json",
        str(tmp_path / "show" / media["file"]), stdout=asyncio.subprocess.PIPE)
    probe = json.loads((await asyncio.wait_for(proc.communicate(), 30))[0])
    assert sorted((s["codec_type"], s["codec_name"]) for s in probe["streams"]) == [("audio", "opus"), ("video", "vp8")]
    assert abs(float(probe["format"]["duration"]) - media["duration_s"]) < 0.2, (probe["format"], media)


async def test_a_crash_loses_at_most_a_few_seconds(tmp_path):
    """The server is killed (SIGKILL) three seconds into a recording: the file holds most of them."""
    import sys

    from tests.conftest import SECRET, free_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port), "--secret", SECRET,
        "--room", "show", "--no-web", "--record", str(tmp_path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        async with asyncio.timeout(20):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        from protocol import issue_token

        host = LiveClient(url, "show", issue_token(SECRET, "show", "host", Role.HOST))
        await host.connect()
        await MediaSession.publish(host, [CounterVideoTrack(640, 480), ToneAudioTrack()])
        await asyncio.sleep(3.5)
    finally:
        proc.kill()
        await proc.wait()
    with contextlib.suppress(Exception):
        await host.close()
    [media] = list((tmp_path / "show").glob("*.mkv"))
    frames = []
    with av.open(str(media)) as container, contextlib.suppress(av.error.InvalidDataError, av.error.EOFError):
        for frame in container.decode(video=0):  # the file has no trailer: read what is there
            frames.append(frame)
    assert frames and frames[-1].time - frames[0].time > 1.5, (len(frames), frames[-1].time if frames else None)


async def test_the_recording_directory_is_bounded(start_server, tmp_path):
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path), record_max_bytes=30_000,
                             room=RoomConfig(presence_interval=0.2, likes_interval=0.1))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(640, 480)])
        await recording_stopped(tmp_path, timeout=15)  # the ticker stops it once the directory is over its bound
        assert srv.relay.media.router.source(publisher.media_id) is not None  # the show itself goes on
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(srv.base + "/metrics")).text()
        from tests.test_bad_input import _metric

        # The writers stop at the frame that would not fit (the bound holds frame by frame), so the directory
        # ends just under 30 kB or a container trailer over it; the gauge is the ticker's last reading.
        on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
        assert 15_000 <= on_disk <= 30_000 + 4_096, on_disk
        assert 0 < _metric(metrics, "live_relay_recording_bytes") <= 30_000 + 4_096
        await publisher.close()


async def test_room_names_that_lead_out_of_the_recordings_are_refused_everywhere(start_server, tmp_path):
    """Finding 3: the room `..` was accepted, recorded outside DIR and listed the parent folder over HTTP."""
    from clients.client import ServerError
    from signaling.recording import inside

    root = tmp_path / "rec"
    (tmp_path / "secret.mkv").write_bytes(b"not yours")
    srv = await start_server(record_dir=str(root))
    for name in ("..", ".", ".hidden"):
        with pytest.raises(ServerError) as err:  # the WebSocket
            await LiveClient(srv.ws_url, name, srv.token(name, "host", Role.HOST)).connect()
        assert err.value.code == "bad_message"
        token = srv.token(name, "host", Role.HOST)
        async with aiohttp.ClientSession() as http:
            for path in (f"/recordings/{name}", f"/recordings/{name}/secret.mkv"):  # recordings over HTTP
                for spelled in (path, path.replace(".", "%2e")):
                    response = await http.get(srv.base + spelled, headers={"Authorization": f"Bearer {token}"})
                    assert response.status in (400, 403, 404), (spelled, response.status)
                    assert b"not yours" not in await response.read()
            response = await http.post(srv.base + f"/whip/{name.replace('.', '%2e')}", data="v=0",  # WHIP
                                       headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
            assert response.status in (400, 404)
    with pytest.raises(ValueError):
        inside(root, "..", "secret.mkv")
    with pytest.raises(ValueError):
        srv.relay.recordings.listing("..")
    assert srv.relay.recordings.file("..", "secret.mkv") is None
    assert not any(tmp_path.glob("*events*"))


async def test_two_recordings_in_one_second_never_share_a_file_and_empty_ranges_are_416(start_server, tmp_path):
    srv = await start_server(rooms=("show",), recordings_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
        for _ in range(2):  # start and stop twice within a second
            await host.request({"type": "record_start"})
            await asyncio.sleep(0.2)
            await host.request({"type": "record_stop"})
        await publisher.close()
    media = sorted(p.name for p in (tmp_path / "show").glob("*.mkv"))
    assert len(media) == 2 and media[0] != media[1]
    token = srv.token("show", "host", Role.HOST)
    async with aiohttp.ClientSession() as http:
        url = f"{srv.base}/recordings/show/{media[0]}"
        empty = await http.get(url, params={"token": token}, headers={"Range": "bytes=-0"})
        assert empty.status == 416 and empty.headers["Content-Range"].startswith("bytes */")
        tail = await http.get(url, params={"token": token}, headers={"Range": "bytes=-10"})
        assert tail.status == 206 and len(await tail.read()) == 10


async def test_a_tiny_disk_cap_holds_frame_by_frame(start_server, tmp_path):
    """Finding 11: the cap was checked by the ticker only and overshot five times on a tiny cap."""
    cap = 40_000
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path), record_max_bytes=cap,
                             room=RoomConfig(presence_interval=0.2, likes_interval=0.1))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(640, 480)])
        await recording_stopped(tmp_path, timeout=15)
        await publisher.close()
    used = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert used <= cap * 1.25, used  # the container's own bytes and the events log on top of the frames


async def test_a_deleted_comment_is_marked_in_the_recordings_events(start_server, tmp_path):
    """The replay leaves out what a moderator deleted: the events log says which comment went."""
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host, \
            LiveClient(srv.ws_url, "show", srv.token("show", "spam")) as spam:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
        await asyncio.sleep(0.5)
        ack = await spam.request({"type": "comment", "text": "visit spam dot example"})
        await host.request({"type": "delete_comment", "seq": ack["seq"]})
        await asyncio.sleep(0.3)
        await publisher.close()
        await recording_stopped(tmp_path)
    events = [json.loads(line) for line in next((tmp_path / "show").glob("*-events.jsonl")).read_text().splitlines()]
    [deleted] = [e for e in events if e["type"] == "comment_deleted"]
    assert deleted["target"] == ack["seq"] and deleted["media_ms"] > 0
    assert any(e["type"] == "comment" and e["seq"] == ack["seq"] for e in events)  # the page drops it by seq


async def test_two_publishers_leaving_at_once_stop_their_recordings_cleanly(start_server, tmp_path, caplog):
    # As a private call ends: both parties' recordings stop together. The second to finish once found the
    # room's log already gone (KeyError in the server's log).
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "a", Role.HOST)) as a, \
            LiveClient(srv.ws_url, "show", srv.token("show", "b", Role.HOST)) as b:
        first = await MediaSession.publish(a, [CounterVideoTrack(160, 120), ToneAudioTrack()])
        second = await MediaSession.publish(b, [CounterVideoTrack(160, 120), ToneAudioTrack()])
        await asyncio.sleep(1.5)
        await asyncio.gather(first.close(), second.close())
        for _ in range(100):
            logs = "".join(p.read_text() for p in (tmp_path / "show").glob("*-events.jsonl"))
            if logs.count("recording_stopped") == 2:
                break
            await asyncio.sleep(0.1)
    assert logs.count("recording_stopped") == 2
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]


async def test_a_replay_lines_events_up_with_the_picture_though_the_first_keyframe_came_late(start_server,
                                                                                              tmp_path):
    """Issue 26: the file starts at a keyframe, which an encoder deaf to keyframe requests (OBS over WHIP,
    RTMP encoders; here a pre-encoded publisher with a 2 s GOP) sends up to a GOP after the recording
    started. The events log marks that moment (`recording_first_frame`), and by content: the picture the
    file shows at (comment's media_ms - first frame's media_ms) is the one the publisher was sending when the
    comment was sent, within 0.2 s. Counting from `recording_started` instead is off by up to the GOP."""
    from clients.sources import ReplayVideoTrack, pre_encode_vp8, read_frame

    frames = pre_encode_vp8(320, 240, fps=30, seconds=4.0, kbps=400, gop=60)
    srv = await start_server(rooms=("show",), recordings_dir=str(tmp_path))
    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        source = ReplayVideoTrack(frames)
        publisher = await MediaSession.publish(host, [source], video_codec="vp8")
        for _ in range(200):  # start the recording early in a GOP: ~1.7 s before the next keyframe
            if source.counter % 60 in range(5, 15):
                break
            await asyncio.sleep(0.03)
        await host.request({"type": "record_start"})
        await asyncio.sleep(2.6)  # past the next keyframe
        shown_at_comment = source.counter - 1  # the frame the publisher sent last
        await host.comment("at this picture")
        await asyncio.sleep(1.0)
        await host.request({"type": "record_stop"})
        await recording_stopped(tmp_path)
        await publisher.close()
    [log] = list((tmp_path / "show").glob("*-events.jsonl"))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    mark = {e["type"]: e["media_ms"] for e in events if e["type"] in ("recording_started", "recording_first_frame")}
    comment_ms = next(e["media_ms"] for e in events if e["type"] == "comment")
    assert mark["recording_first_frame"] - mark["recording_started"] > 1000  # the keyframe came late indeed
    at = (comment_ms - mark["recording_first_frame"]) / 1000
    [media] = list((tmp_path / "show").glob("*.mkv"))
    with av.open(str(media)) as container:
        decoded = [(frame.time, read_frame(frame)[0]) for frame in container.decode(video=0)]
    assert decoded[0][1] % 60 == 0  # the file starts at a keyframe
    picture = min(decoded, key=lambda d: abs(d[0] - at))[1]
    assert abs((picture - shown_at_comment + len(frames) // 2) % len(frames) - len(frames) // 2) <= 6, \
        (picture, shown_at_comment, at)


async def test_a_shared_replay_is_open_to_viewers_and_its_cards_are_bought_as_replay_clicks(start_server, tmp_path):
    """The host shares a recording: anyone with its link lists and plays it (a viewer's token too), an unshared
    one stays closed; its card's Buy goes through /go as a replay click counted for the show it was pushed in,
    to the URL the host pushed, even after the node forgot the live card (the store keeps it)."""
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path / "rec"),
                             analytics=str(tmp_path / "a.sqlite3"))
    host_token = srv.token("show", "host", Role.HOST)
    card = {"id": "tea", "title": "Oolong", "price": "12.50", "currency": "EUR",
            "url": "https://shop.example/p/tea?ref=live", "image": "https://shop.example/tea.png"}
    async with LiveClient(srv.ws_url, "show", host_token) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
        await asyncio.sleep(1.0)
        await host.request({"type": "product", "product": card})
        await asyncio.sleep(0.5)
        await publisher.close()
        await recording_stopped(tmp_path / "rec")
    writer = srv.relay.analytics_writer
    async with asyncio.timeout(10):
        while not writer.idle:  # noqa: ASYNC110 - the writer's own state
            await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http:
        url = f"{srv.base}/recordings/show"
        host_auth = {"Authorization": f"Bearer {host_token}"}
        listing = await (await http.get(url, headers=host_auth)).json()
        media = next(item for item in listing if item["kind"] == "media")
        assert (await http.get(url)).status == 401  # nothing shared yet
        assert (await http.get(f"{url}/{media['file']}")).status == 401
        share = f"{url}/{media['recording']}/share"
        assert (await http.put(share, json={"public": True})).status == 401
        viewer = {"Authorization": f"Bearer {srv.token('show', 'v')}"}
        assert (await http.put(share, json={"public": True}, headers=viewer)).status == 403
        assert (await http.put(f"{url}/20000101-000000.000/share", json={"public": True},
                               headers=host_auth)).status == 404
        assert (await http.put(share, json={"public": "yes"}, headers=host_auth)).status == 400
        r = await http.put(share, json={"public": True}, headers=host_auth)
        assert r.status == 200 and (await r.json())["public"] is True
        shared = await (await http.get(url)).json()  # anyone with the link
        assert {e["file"] for e in shared} == {e["file"] for e in listing if e["recording"] == media["recording"]}
        on_disk = (tmp_path / "rec" / "show" / media["file"]).read_bytes()
        for headers in ({}, viewer):
            whole = await http.get(f"{url}/{media['file']}", headers=headers)
            assert whole.status == 200 and await whole.read() == on_disk
        # The replay's Buy: the node forgot the live card (a restart would); the store's push says where.
        srv.relay.analytics._products.clear()
        r = await http.get(f"{srv.base}/go/show/tea", params={"src": "replay"}, allow_redirects=False)
        assert r.status == 302 and r.headers["Location"].startswith("https://shop.example/p/tea?ref=live&lr_click=")
        assert (await http.get(f"{srv.base}/go/show/nope", params={"src": "replay"},
                               allow_redirects=False)).status == 404
        async with asyncio.timeout(10):
            while not writer.idle:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        events = await writer.call(writer.store.events, "show")
        [push] = [e for e in events if e.kind == "push"]
        [click] = [e for e in events if e.kind == "click"]
        assert click.source == "replay" and click.show == push.show and click.product == "tea"
        r = await http.put(share, json={"public": False}, headers=host_auth)
        assert (await http.get(url)).status == 401 and (await http.get(f"{url}/{media['file']}")).status == 401
