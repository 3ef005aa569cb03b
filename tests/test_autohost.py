"""`live-relay autohost` (cli/autohost.py): the room stays on air with nobody in front of a camera. Real server
with recording on, the autohost as an ordinary client, a viewer asking in the comments and listening, a person
taking the room over and leaving it. The 20-minute soak (memory flat) is benchmarks/autohost_soak.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import av
import numpy as np
import pytest

from assistant.catalog import parse_catalog
from cli.autohost import AutoHost, Step, narration, next_step, slide_colour
from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack
from protocol import Role
from tests.conftest import require_dependency
from tests.test_assistant import CATALOG
from tests.test_recording import recording_stopped
from tests.test_voice import price_heard

SCARF = {"id": "A", "title": "Silk scarf", "price": "19.90", "currency": "EUR", "url": "https://shop.example/scarf",
         "image": "https://shop.example/scarf.jpg", "stock": 12}
JADE = {"id": "B", "title": "Jade bracelet", "price": "25.00", "currency": "EUR", "url": "https://shop.example/jade",
        "image": "https://shop.example/jade.jpg"}


@pytest.mark.parametrize(("product", "said"), [
    (SCARF, "Silk scarf. 19 euros 90. 12 left. Ask me anything in the comments."),
    ({**JADE, "stock": 0}, "Jade bracelet. 25 euros. Sold out. Ask me anything in the comments."),
    ({**SCARF, "title": "龙井", "price": "88.00", "currency": "CNY", "stock": 20},
     "龙井，88元，还剩20件。有问题请在评论里问我。"),
    ({**SCARF, "title": "茶具", "price": "19.90", "currency": "CNY", "stock": None},
     "茶具，19.90元。有问题请在评论里问我。"),
])
def test_each_product_is_narrated_in_its_own_language(product, said):
    assert narration(product) == said


@pytest.mark.parametrize(("current", "shown_at", "now", "speaking", "step"), [
    (None, 0.0, 5.0, False, Step(0, 0.0)),  # the first product at once
    (0, 0.0, 2.0, False, Step(None, 0.25)),  # on screen 2 of 4 s: wait (a quarter second at a time)
    (0, 0.0, 3.9, False, Step(None, 0.1)),
    (0, 0.0, 4.0, True, Step(None, 0.25)),  # its narration goes on: it stays
    (0, 0.0, 4.0, False, Step(1, 0.0)),  # time, and quiet: the next one
    (1, 0.0, 9.0, False, Step(0, 0.0)),  # round and round
])
def test_the_next_product_comes_after_the_dwell_and_the_narration(current, shown_at, now, speaking, step):
    got = next_step(current, shown_at, now, 2, 4.0, speaking)
    assert (got.product, round(got.wait_s, 2)) == (step.product, step.wait_s)


async def test_the_autohost_keeps_the_room_on_air_answers_and_steps_aside(start_server, tmp_path) -> None:
    require_dependency(None if shutil.which("espeak-ng") else "needs espeak-ng (apt-get install espeak-ng)")
    srv = await start_server(rooms=("show",), record_dir=str(tmp_path / "rec"))
    auto = AutoHost(srv.ws_url, "show", srv.token("show", "auto", Role.HOST), [SCARF, JADE],
                    parse_catalog(CATALOG, "yaml"), dwell_s=4.0)
    running = asyncio.create_task(auto.run(duration_s=90))
    try:
        async with LiveClient(srv.ws_url, "show", srv.token("show", "mei", Role.VIEWER)) as viewer:
            # A whole round: each card pushed in turn, while its slide is the picture.
            cards = [(await viewer.next_event("product", timeout=15))["product"]["id"] for _ in range(3)]
            assert cards == ["A", "B", "A"]
            await _until(srv, lambda users: "auto" in users)
            publisher = next(p["publisher"] for p in await _publishers(srv) if p["user"] == "auto")
            listening = await MediaSession.subscribe(viewer, publisher=publisher, kinds=("audio",))
            audio = await listening.wait_track("audio")
            heard: list[tuple[float, np.ndarray]] = []

            async def listen() -> None:
                while True:
                    frame = await audio.recv()
                    heard.append((time.monotonic(), frame.to_ndarray().reshape(-1)[::len(frame.layout.channels)]))
            listener = asyncio.create_task(listen())
            # Asked while the other product is narrated (its price is not the one asked for).
            while (await viewer.next_event("product", timeout=15))["product"]["id"] != "B":
                pass
            await viewer.comment("how much is the silk scarf?")
            reply = None
            async with asyncio.timeout(15):
                while reply is None:
                    event = await viewer.next_event("comment", timeout=15)
                    if event.get("user") == "auto":
                        reply, replied = event["text"], time.monotonic()
            assert "19.90 EUR" in reply  # in the comments, from the card
            await asyncio.sleep(3.5)  # ... and aloud, over the narration it cut short
            listener.cancel()
            said = np.concatenate([s for t, s in heard if t >= replied]).astype(np.int16)
            assert "nineteen euros" in price_heard(said)
            await listening.close()

            # A person publishes in the room: the autohost steps aside, and comes back when they leave.
            async with LiveClient(srv.ws_url, "show", srv.token("show", "human", Role.HOST)) as human:
                person = await MediaSession.publish(human, [CounterVideoTrack(160, 120)])
                await _until(srv, lambda users: users == {"human"})
                assert auto.paused_for == "human"
                await person.close()
            await _until(srv, lambda users: users == {"auto"})
            assert (await viewer.next_event("product", timeout=15))["product"]["id"] == "A"  # the round again
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    await recording_stopped(tmp_path / "rec")
    _cards_were_on_screen(tmp_path / "rec" / "show")
    assert len(auto.pushed) >= 4 and auto.answered and auto.answered[0][0] == "how much is the silk scarf?"


async def _publishers(srv) -> list[dict]:
    return await srv.relay.media.publishers("show")


async def _until(srv, check, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check({p["user"] for p in await _publishers(srv)}):  # noqa: ASYNC110 - the registry
            await asyncio.sleep(0.1)


def _cards_were_on_screen(folder) -> None:
    """From the recording: at each card's push (its media time in the events log), the autohost's video shows
    that product's slide (its colour)."""
    # The first recording session's log (a person taking the room over and leaving can end a session and
    # start another when the autohost comes back: a second log, stamped later).
    log = sorted(folder.glob("*-events.jsonl"))[0]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    started = next(e for e in events if e["type"] == "recording_started" and e.get("user") == "auto")
    first = next(e for e in events if e["type"] == "recording_first_frame" and e.get("file") == started["file"])
    media = folder / first["file"]
    with av.open(str(media)) as container:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(container.streams.video[0])]
    stopped = next(e["media_ms"] for e in events if e["type"] == "recording_stopped" and e.get("file") == first["file"])
    pushes = [e for e in events if e["type"] == "product" and first["media_ms"] < e["media_ms"] < stopped - 1000]
    assert len(pushes) >= 3
    for push in pushes:
        at = (push["media_ms"] - first["media_ms"]) / 1000 + 0.5  # half a second into the product's turn
        _, picture = min(frames, key=lambda f: abs(f[0] - at))
        colour = picture[5:40, 5:40].reshape(-1, 3).mean(axis=0)  # a corner with no text
        wanted = slide_colour(["A", "B"].index(push["product"]["id"]))
        assert np.abs(colour - np.array(wanted)).max() < 30, (push["product"]["id"], colour, wanted)
