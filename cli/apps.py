"""The command-line clients: `live-relay host`, `live-relay view` and `live-relay call`.

Each is a small program over the client library (``LiveClient`` + ``MediaSession``) that reconnects with
backoff and resumes messages by sequence number, and prints what a person at the keyboard wants to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import yaml
from aiortc.mediastreams import MediaStreamError

from clients.client import ConnectionClosed, LiveClient, ServerError
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, LoopingFile, ToneAudioTrack, latency_ms, read_frame
from protocol import ErrorCode
from rtc.mediafile import MediaFileWriter

FREEZE_S = 0.2


def _print(*parts: object) -> None:
    click.echo(" ".join(str(p) for p in parts))


def describe(event: dict[str, Any]) -> str | None:
    """One line for an event worth showing a person; None for the rest."""
    kind = event["type"]
    lat = f" ({event['latency_ms']:.1f} ms)" if isinstance(event.get("latency_ms"), float) else ""
    who = event.get("name") or event.get("user", "")
    if kind == "comment" and event.get("role") == "assistant":  # the room's assistant, never a person
        return f"🤖 [assistant] ↳ #{event.get('reply_to')}: {event['text']}{lat}"
    if kind == "comment":
        return f"💬 {who}: {event['text']}{lat}"
    if kind == "product":
        p = event["product"]
        return f"🛒 {p['title']} {p['price']} {p['currency']} {p['url']}{lat}"
    if kind == "announce":
        return f"📢 {event['text']}{lat}"
    if kind == "stage_requested":
        return f"✋ {event.get('name') or event['user']} asks to join the stage (type: accept {event['user']})"
    if kind in ("stage", "pk", "call"):
        return f"🎬 {kind}: {json.dumps(event['state'])}"
    if kind == "media":
        return f"📡 {event['event']} {event['user']} ({event['publisher']})"
    if kind in ("grant", "call_grant", "pk_invited", "stage_invited", "call_invited", "pk_ended", "call_ended"):
        return f"🔔 {kind}: {json.dumps({k: v for k, v in event.items() if k not in ('type', 'token')})}"
    return None


def load_products(path: str) -> list[dict[str, Any]]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON: one loader reads both
    except yaml.YAMLError as exc:  # a typo is one line, where it is, never a traceback
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise click.ClickException(f"{path}: not YAML or JSON{where}: {getattr(exc, 'problem', exc)}") from None
    products = data.get("products", data) if isinstance(data, dict) else data
    if not isinstance(products, list) or not all(isinstance(p, dict) for p in products):
        raise click.ClickException(f"{path}: expected a list of products (or {{products: [...]}})")
    return products


async def _stdin_lines() -> asyncio.Queue[str]:
    """Lines typed on stdin, without blocking the event loop."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.remove_reader(sys.stdin)
            return
        queue.put_nowait(line.strip())

    with contextlib.suppress(OSError, ValueError, NotImplementedError):
        loop.add_reader(sys.stdin, readable)
    return queue


async def _say(client: LiveClient, text: str) -> None:
    """A line typed at the terminal, sent as a comment; a refusal is said, not raised."""
    try:
        await client.comment(text)
    except ServerError as exc:
        _print(f"comment refused: {exc}")


async def keep_media(client: LiveClient, sessions: list[MediaSession], redo: Callable[[], Awaitable[MediaSession]],
                     what: str, done: Callable[[MediaSession], str]) -> None:
    """The server closes a connection's media with it: after a reconnect, or when the current media session
    died, do it again (once the connection is up), retrying until it works."""
    seen = client.reconnects
    said: str | None = None  # tell a person once per reason, not twice a second while it lasts
    while True:
        await asyncio.sleep(0.5)
        current = sessions[-1]
        stale = client.reconnects != seen or current.pc.connectionState in ("closed", "failed")
        if not stale or not client.connected:
            continue
        seen = client.reconnects
        await current.pc.close()
        try:
            sessions.append(await redo())
        except (ServerError, ConnectionClosed, TimeoutError) as exc:
            if str(exc) != said:
                said = str(exc)
                _print(f"could not {what} again yet ({exc}); retrying quietly")
            continue
        said = None
        _print(done(sessions[-1]))


# -- host ---------------------------------------------------------------------------------------------

HOST_HELP = ("Type: 'p' pushes the next product, 'p N' product N, 'accept USER' seats a stage request, "
             "'help' shows this, 'q' quits; any other line is sent as a comment.")


async def run_host(url: str, room: str, token: str, source: str | None, products: list[dict[str, Any]],
                   every: float | None, duration: float | None) -> None:
    client = LiveClient(url, room, token, reconnect=True)
    await client.connect()

    def make_tracks() -> list[Any]:
        # Fresh tracks each time: closing a peer connection stops the tracks it was sending.
        if source:
            return LoopingFile(source).tracks
        return [CounterVideoTrack(), ToneAudioTrack()]

    try:
        media = await MediaSession.publish(client, make_tracks())
    except BaseException:
        await client.close()
        raise
    medias = [media]

    def keep_publishing() -> Any:
        return keep_media(client, medias, lambda: MediaSession.publish(client, make_tracks()),
                          "go on air", lambda m: f"back on air ({m.media_id})")

    _print(f"on air in {room!r} as {client.user} ({media.media_id}); {len(products)} products. {HOST_HELP}")
    lines = await _stdin_lines()
    index = 0

    async def push(n: int) -> None:
        product = products[n % len(products)]
        try:
            ack = await client.push_product(product)
            _print(f"pushed {product['title']} (seq {ack['seq']})")
        except ServerError as exc:
            _print(f"refused: {exc}")

    async def schedule() -> None:
        nonlocal index
        while every and products:
            await asyncio.sleep(every)
            await push(index)
            index += 1

    async def show() -> None:
        async for event in client.events():
            line = describe(event)
            if line:
                _print(line)

    tasks = [asyncio.create_task(schedule()), asyncio.create_task(show()), asyncio.create_task(keep_publishing())]
    deadline = time.monotonic() + duration if duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                command = await asyncio.wait_for(lines.get(), 1.0)
            except TimeoutError:
                continue
            word, _, arg = command.partition(" ")
            if command == "q":
                break
            if command in ("help", "?", "h"):
                _print(HOST_HELP)
            elif word == "p":
                if not products:
                    _print("no products loaded (start with --products FILE)")
                elif arg and not (arg.isdigit() and 1 <= int(arg) <= len(products)):
                    _print(f"p N: N is 1..{len(products)}")
                else:
                    await push(int(arg) - 1 if arg else index)
                    index += 0 if arg else 1
            elif word == "accept":
                if not arg:
                    _print("accept USER: the user named in a stage request")
                    continue
                try:
                    await client.request({"type": "stage_accept", "user": arg})
                    _print(f"{arg} is on stage")
                except ServerError as exc:
                    _print(f"could not seat {arg}: {exc}")
            elif command:
                await _say(client, command)
    finally:
        for task in tasks:
            task.cancel()
        for m in medias:
            await m.close()
        await client.close()


# -- ingest -------------------------------------------------------------------------------------------


async def run_ingest_bridge(listens: list[str], url: str, *, max_streams: int = 8,
                            ready: asyncio.Event | None = None) -> int:
    """``live-relay ingest``: doors at ``listens`` (rtmp:// and srt://) whose encoders' stream keys are host
    tokens, each encoder published into its key's room, until a door fails or the bridge is stopped.
    Returns how many streams went on air."""
    import aiohttp

    from clients.ingest import IngestBridge
    from clients.ingest_doors import open_door

    async with aiohttp.ClientSession() as http, http.ws_connect(url):  # the server is there: said now
        pass
    bridge = IngestBridge(url, max_streams=max_streams, on_event=_print)
    doors = [open_door(listen, bridge) for listen in listens]
    this = asyncio.current_task()
    assert this is not None
    for stop in (signal.SIGTERM, signal.SIGINT):  # stopped: the doors closed, their encoders let go
        asyncio.get_running_loop().add_signal_handler(stop, this.cancel)
    try:
        for door in doors:
            await door.open()
            _print(f"listening at {door.listen}: each encoder's stream key is a host token of its room")
        if ready is not None:
            ready.set()
        await asyncio.gather(*(door.wait() for door in doors))
    except asyncio.CancelledError:
        pass
    finally:
        for door in doors:
            await door.close()
    return bridge.relayed


# -- view ---------------------------------------------------------------------------------------------


async def run_view(url: str, room: str, token: str | None, record: str | None, duration: float | None) -> dict:
    from rtc.codecs import is_keyframe

    client = LiveClient(url, room, token, reconnect=True)
    await client.connect()
    stats: dict[str, Any] = {"frames": 0, "freezes": 0, "messages": 0, "e2e_ms": []}
    last_frame = [0.0]
    # Recorded as received (rtc.mediafile): video and, when the publisher sends it, Opus, in one file.
    writer: MediaFileWriter | None = None
    kinds: list[str] = []  # what the watched publisher sends

    def on_frame(kind: str, frame: Any, codec: Any) -> None:
        nonlocal writer
        if kind == "video":
            now = time.monotonic()
            if last_frame[0] and now - last_frame[0] > FREEZE_S:
                stats["freezes"] += 1
            last_frame[0] = now
            stats["frames"] += 1
        if record is None:
            return
        if writer is None:
            if kind != "video":
                return
            writer = MediaFileWriter(record, {"video": codec.name, **({"audio": "opus"} if "audio" in kinds else {})})
        keyframe = kind == "video" and is_keyframe(codec.name, frame.data)
        before = writer.frames
        writer.write(kind, frame.data, frame.timestamp, keyframe)
        if kind == "video" and writer.frames > before:
            stats["recorded_frames"] = stats.get("recorded_frames", 0) + 1

    live = asyncio.Event()  # someone publishes (set from the events, for when nobody did at join)
    # The room's publishers as the events tell them, the latest last: whom to watch, now and after the one
    # watched leaves (or fails before its stream ever came).
    current: dict[str, dict[str, Any]] = {
        p["publisher"]: p for p in (client.joined["state"]["publishers"] if client.joined else [])}

    async def subscribe() -> MediaSession:
        while True:
            if not current:
                _print("waiting for someone to go live…")
                live.clear()
                await live.wait()
                continue
            chosen = list(current.values())[-1]
            kinds[:] = chosen.get("kinds", ["video"])
            if writer is not None:
                writer.restart()
            try:
                session = await MediaSession.subscribe(client, publisher=chosen["publisher"], frame_sink=on_frame)
            except ServerError as exc:
                if exc.code is not ErrorCode.NO_PUBLISHER:
                    raise
                current.pop(chosen["publisher"], None)  # gone before we came: the next one, or wait
                continue
            _print(f"watching {room!r}: {chosen['user']}'s stream" + (f", recording to {record}" if record else ""))
            return session

    sessions: list[MediaSession] = []

    async def show() -> None:
        async for event in client.events():
            if isinstance(event.get("latency_ms"), float):
                stats["messages"] += 1
                stats["e2e_ms"].append(event["latency_ms"])
            if event["type"] == "media" and event["event"] == "publisher_joined":
                current[event["publisher"]] = event
                live.set()
            elif event["type"] == "media" and event["event"] == "publisher_left":
                current.pop(event["publisher"], None)
            line = describe(event)
            if line:
                _print(line)

    async def keep_watching() -> None:
        sessions.append(await subscribe())
        await keep_media(client, sessions, subscribe, "subscribe", lambda m: "📡 resubscribed")

    async def report() -> None:
        while True:
            await asyncio.sleep(5)
            e2e = stats["e2e_ms"][-50:]
            avg = f"{sum(e2e) / len(e2e):.1f} ms" if e2e else "-"
            _print(f"📊 frames {stats['frames']}, freezes {stats['freezes']}, messages {stats['messages']}, "
                   f"recent message E2E {avg}")

    async def comment_from_stdin() -> None:
        lines = await _stdin_lines()
        _print("type a line to send it as a comment")
        while True:
            text = await lines.get()
            if not text:
                continue
            await _say(client, text)

    tasks = [asyncio.create_task(show()), asyncio.create_task(report()), asyncio.create_task(keep_watching())]
    if token:
        tasks.append(asyncio.create_task(comment_from_stdin()))
    try:
        # Returns early only if a task fails: its error is raised here rather than lost.
        done, _ = await asyncio.wait(tasks, timeout=duration if duration else None,
                                     return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        for session in sessions:
            await session.close()
        await client.close()
        if writer is not None:
            writer.close()
    return stats


# -- call ---------------------------------------------------------------------------------------------


async def run_call(url: str, room: str, token: str, duration: float | None) -> dict:
    client = LiveClient(url, room, token, reconnect=True)
    await client.connect()
    started = time.perf_counter()
    try:
        mine = await MediaSession.publish(client, [CounterVideoTrack(), ToneAudioTrack()])
    except BaseException:
        await client.close()
        raise
    others = [p for p in client.state.get("publishers", []) if p["publisher"] != mine.media_id]
    if not others:
        _print("waiting for the other party…")
        while True:
            event = await client.next_event("media", timeout=3600)
            if event["event"] == "publisher_joined" and event["publisher"] != mine.media_id:
                others = [event]
                started = time.perf_counter()  # set-up is timed from the moment both are there
                break
    theirs = await MediaSession.subscribe(client, publisher=others[0]["publisher"])
    track = await theirs.wait_track("video", timeout=30)
    frame = await asyncio.wait_for(track.recv(), 30)
    setup_ms = (time.perf_counter() - started) * 1000
    await client.send({"type": "client_stats", "call_setup_ms": setup_ms})
    _print(f"📞 connected with {others[0]['user']}: set-up {setup_ms:.0f} ms")
    latencies = []
    deadline = time.monotonic() + (duration or 10**9)
    try:
        while time.monotonic() < deadline:
            try:
                frame = await asyncio.wait_for(track.recv(), 10)
            except MediaStreamError:
                _print("📞 the other side hung up")
                break
            latencies.append(latency_ms(read_frame(frame)[1]))
            if len(latencies) % 150 == 0:
                recent = sorted(latencies[-150:])
                _print(f"📊 glass-to-glass latency p50 {recent[len(recent) // 2]:.0f} ms "
                       "(the other side's test pattern carries its send time)")
    finally:
        await theirs.close()
        await mine.close()
        await client.close()
    return {"setup_ms": setup_ms, "frames": len(latencies)}
