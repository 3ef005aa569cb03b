"""The command-line clients as a person runs them: `live-relay host`, `view` (with --record) and `call`,
as real processes against a real server."""

from __future__ import annotations

import asyncio
import re
import sys

import av

from protocol import Role


async def cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "--log-level", "WARNING", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_host_pushes_products_and_viewer_sees_and_records_them(server, tmp_path):
    products = tmp_path / "products.yaml"
    products.write_text("""
products:
  - {id: p1, title: Tea set, price: "25.00", currency: EUR, url: "https://shop.example/tea", image: "https://shop.example/tea.jpg"}
  - {id: p2, title: Fan, price: "9.90", currency: EUR, url: "https://shop.example/fan", image: "https://shop.example/fan.jpg"}
""")
    record = tmp_path / "show.webm"
    host = asyncio.create_task(cli("host", "--url", server.ws_url, "--room", "show", "--token",
                                   server.token("show", "shop", Role.HOST), "--products", str(products),
                                   "--every", "0.7", "--duration", "7"))
    await asyncio.sleep(2.0)  # the host is on air
    code, out, err = await cli("view", "--url", server.ws_url, "--room", "show", "--record", str(record),
                               "--duration", "3")
    assert code == 0, err
    assert "🛒 Tea set 25.00 EUR" in out or "🛒 Fan 9.90 EUR" in out
    summary = out.strip().splitlines()[-1]  # "frames N, freezes N, messages N, recorded N frames to ..."
    frames = int(re.match(r"frames (\d+),", summary).group(1))
    assert frames > 20
    host_code, host_out, host_err = await host
    assert host_code == 0, host_err and "pushed Tea set" in host_out
    with av.open(str(record)) as container:  # recorded as received, and it plays
        assert sorted(s.type for s in container.streams) == ["audio", "video"]  # with the host's sound
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) > 20 and (decoded[0].width, decoded[0].height) == (640, 480)
    # It lasts as long as it was recorded: ~30 frames a second (the timestamps were once 90x too long).
    span = decoded[-1].time - decoded[0].time
    assert 0.5 < span / ((len(decoded) - 1) / 30) < 2, (span, len(decoded))


async def test_two_call_clients_connect(server):
    a = asyncio.create_task(cli("call", "--url", server.ws_url, "--room", "call-cli", "--token",
                                server.token("call-cli", "ann", Role.HOST), "--duration", "3"))
    await asyncio.sleep(0.5)
    b = asyncio.create_task(cli("call", "--url", server.ws_url, "--room", "call-cli", "--token",
                                server.token("call-cli", "ben", Role.COHOST), "--duration", "3"))
    for code, out, err in await asyncio.gather(a, b):
        assert code == 0, err
        assert "connected with" in out and "set-up" in out


async def test_view_resubscribes_after_the_server_drops_it(server, tmp_path):
    from clients.client import LiveClient
    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack
    from protocol import CloseCode

    record = tmp_path / "resumed.webm"
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)])
        view = asyncio.create_task(cli("view", "--url", server.ws_url, "--room", "show", "--token",
                                       server.token("show", "watcher"), "--record", str(record), "--duration", "6"))
        await asyncio.sleep(2.5)
        sessions = [s for s in server.relay.hub.rooms["show"].sessions.values() if s.user == "watcher"]
        assert sessions
        await server.relay.hub.disconnect(sessions[0], CloseCode.SLOW_CONSUMER, "test: as if too slow")
        code, out, err = await view
        await publisher.close()
    assert code == 0, err
    assert "📡 resubscribed" in out, out + err
    with av.open(str(record)) as container:  # one file across the reconnect, and it plays
        decoded = list(container.decode(video=0))
    assert len(decoded) > 60


async def test_host_goes_back_on_air_after_the_server_drops_it(server):
    from clients.client import LiveClient
    from clients.media import MediaSession
    from protocol import CloseCode
    from tests.test_sfu import read_counters

    host = asyncio.create_task(cli("host", "--url", server.ws_url, "--room", "show", "--token",
                                   server.token("show", "shop", Role.HOST), "--duration", "7"))
    await asyncio.sleep(2.0)
    sessions = [s for s in server.relay.hub.rooms["show"].sessions.values() if s.user == "shop"]
    await server.relay.hub.disconnect(sessions[0], CloseCode.SLOW_CONSUMER, "test: as if too slow")
    async with LiveClient(server.ws_url, "show") as viewer:
        for _ in range(40):  # until the host has published again
            if server.relay.media.router.publishers_of("show", "shop"):
                break
            await asyncio.sleep(0.1)
        subscription = await MediaSession.subscribe(viewer, kinds=("video",))
        assert len(await read_counters(subscription, 5)) == 5
        await subscription.close()
    code, out, err = await host
    assert code == 0, err
    assert "back on air" in out


async def test_host_source_file_loops_without_stopping_the_video(server, tmp_path):
    """A 1 s file played for several seconds: video goes on through every loop, at the file's pace."""
    import numpy as np

    clip = tmp_path / "clip.webm"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i * 8, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    host = asyncio.create_task(cli("host", "--url", server.ws_url, "--room", "show", "--token",
                                   server.token("show", "shop", Role.HOST), "--source", str(clip), "--duration", "8"))
    await asyncio.sleep(1.5)
    code, out, err = await cli("view", "--url", server.ws_url, "--room", "show", "--duration", "5")
    assert code == 0, err
    frames = int(re.match(r"frames (\d+),", out.strip().splitlines()[-1]).group(1))
    assert 60 <= frames <= 200, frames  # ~30 fps through ~5 loops of a 1 s file: neither stopped nor bursting
    host_code, _, host_err = await host
    assert host_code == 0 and "InvalidDataError" not in host_err, host_err


async def test_view_follows_the_next_publisher_after_the_one_it_watched_leaves(server):
    # It kept subscribing to the publisher it first saw ("no_publisher", retrying quietly for good), and a
    # room whose listed publisher was gone made it exit.
    from clients.client import LiveClient
    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack

    async with LiveClient(server.ws_url, "show", server.token("show", "first", Role.HOST)) as first:
        publisher = await MediaSession.publish(first, [CounterVideoTrack(320, 240)])
        view = asyncio.create_task(cli("view", "--url", server.ws_url, "--room", "show", "--duration", "9"))
        await asyncio.sleep(3.0)
        await publisher.close()
    await asyncio.sleep(1.0)
    async with LiveClient(server.ws_url, "show", server.token("show", "second", Role.HOST)) as second:
        publisher = await MediaSession.publish(second, [CounterVideoTrack(320, 240)])
        code, out, err = await view
        await publisher.close()
    assert code == 0, err
    assert "watching 'show': first's stream" in out and "watching 'show': second's stream" in out, out + err
    assert out.index("first's stream") < out.index("second's stream")
