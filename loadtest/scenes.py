"""`live-relay loadtest scenes`: drive every live-commerce scene end to end against a running server.

Real aiortc peers (a host, a viewer, a second room's host and viewer, a co-host, the parties of a 1v1),
frames checked by content (each publisher's counters live in their own range). Prints a table, writes
JSON, exits non-zero if any scene fails: how a user checks a deployment in one command.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import click
import numpy as np

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, read_frame
from loadtest.media import one_call
from loadtest.report import print_table, write_json
from protocol import Role, issue_token


class Cast:
    """Everyone a scene needs, created and closed in one place."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.clients: list[LiveClient] = []
        self.sessions: list[MediaSession] = []

    async def client(self, room: str, user: str | None, role: Role = Role.VIEWER) -> LiveClient:
        token = issue_token(self.secret, room, user, role, 600) if user else None
        client = LiveClient(self.url, room, token)
        self.clients.append(client)
        await client.connect()
        return client

    async def publish(self, client: LiveClient, start: int) -> MediaSession:
        session = await MediaSession.publish(client, [CounterVideoTrack(320, 240, start=start)])
        self.sessions.append(session)
        return session

    async def first_frame_in(self, client: LiveClient, publisher: str, lo: int, hi: int) -> int:
        """Subscribe to ``publisher`` and return the first decoded counter (checked to be in [lo, hi))."""
        session = await MediaSession.subscribe(client, publisher=publisher, kinds=("video",))
        self.sessions.append(session)
        return await _first_counter(await session.wait_track("video", timeout=20), lo, hi)

    async def watch(self, client: LiveClient, publisher: str, lo: int, hi: int) -> MediaSession:
        """A viewer's one connection (as the page keeps it), showing ``publisher`` first."""
        session = await MediaSession.subscribe(client, publisher=publisher, kinds=("video",), keep=True)
        self.sessions.append(session)
        await _first_counter(await session.wait_track("video", timeout=20), lo, hi)
        return session

    async def first_frame_added(self, session: MediaSession, publisher: str, lo: int, hi: int) -> int:
        """Add ``publisher`` to a viewer's connection (renegotiation) and return its first decoded counter."""
        tracks = await session.add(publisher, kinds=("video",))
        return await _first_counter(tracks["video"], lo, hi)

    async def close(self) -> None:
        for session in self.sessions:
            await session.pc.close()
        for client in self.clients:
            await client.close()


async def _first_counter(track: Any, lo: int, hi: int) -> int:
    counter, _ = read_frame(await asyncio.wait_for(track.recv(), 20))
    if not lo <= counter < hi:
        raise AssertionError(f"frame {counter} is not from the expected publisher ({lo}..{hi})")
    return counter


async def _wait(client: LiveClient, kind: str, check: Callable[[dict[str, Any]], bool] = lambda e: True,
                timeout: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event(kind, timeout=timeout)
            if check(event):
                return event


async def cohost_scene(cast: Cast, tag: str) -> dict[str, Any]:
    room = f"scenes-{tag}"
    host = await cast.client(room, "host", Role.HOST)
    host_pub = await cast.publish(host, 0)
    guest = await cast.client(room, "guest")
    viewer = await cast.client(room, None)
    watching = await cast.watch(viewer, host_pub.media_id, 0, 100_000)
    await guest.request({"type": "stage_request"})
    await _wait(host, "stage_requested")
    accepted = time.perf_counter()
    await host.request({"type": "stage_accept", "user": "guest"})
    await _wait(guest, "grant")
    cohost = await cast.publish(guest, 100_000)
    event = await _wait(viewer, "stage", lambda e: any(s["publishers"] for s in e["state"]["seats"]))
    assert event["state"]["seats"][0]["publishers"] == [cohost.media_id]
    await cast.first_frame_added(watching, cohost.media_id, 100_000, 200_000)  # on the viewer's one connection
    first_ms = (time.perf_counter() - accepted) * 1000
    await host.request({"type": "stage_remove", "user": "guest"})
    await _wait(viewer, "stage", lambda e: not e["state"]["seats"])
    # The host goes on, on the same connection.
    await _first_counter(watching.publishers[host_pub.media_id]["video"], 0, 100_000)
    return {"cohost_first_frame_ms": round(first_ms, 1)}


async def pk_scene(cast: Cast, tag: str) -> dict[str, Any]:
    room_a, room_b = f"scenes-{tag}-a", f"scenes-{tag}-b"
    host_a = await cast.client(room_a, "alice", Role.HOST)
    host_b = await cast.client(room_b, "bob", Role.HOST)
    pub_a = await cast.publish(host_a, 0)
    pub_b = await cast.publish(host_b, 500_000)
    fan_a = await cast.client(room_a, None)
    watching = await cast.watch(fan_a, pub_a.media_id, 0, 100_000)
    await host_a.request({"type": "pk_invite", "room": room_b, "duration_s": 60})
    await _wait(host_b, "pk_invited")
    accepted = time.perf_counter()
    await host_b.request({"type": "pk_answer", "room": room_a, "accept": True})
    state = (await _wait(fan_a, "pk"))["state"]
    other = next(s for s in state["sides"] if s["room"] == room_b)
    await cast.first_frame_added(watching, other["publishers"][0], 500_000, 600_000)
    first_ms = (time.perf_counter() - accepted) * 1000
    assert other["publishers"][0] == pub_b.media_id
    await fan_a.like(3)
    await _wait(fan_a, "pk_score", lambda e: e["scores"].get(room_a) == 3)
    await host_a.request({"type": "pk_end"})
    await _wait(fan_a, "pk_ended")
    return {"pk_first_frame_ms": round(first_ms, 1)}


async def switch_scene(cast: Cast, tag: str) -> dict[str, Any]:
    room = f"scenes-{tag}-show"
    host = await cast.client(room, "host", Role.HOST)
    await cast.publish(host, 0)
    guest = await cast.client(room, "guest")
    await host.request({"type": "call_invite", "user": "guest", "keep_video": False})
    await _wait(guest, "call_invited")
    accepted = time.perf_counter()
    await guest.request({"type": "call_answer", "accept": True})
    grant_a = await _wait(host, "call_grant")
    grant_b = await _wait(guest, "call_grant")
    a = LiveClient(cast.url, grant_a["call_room"], grant_a["token"])
    b = LiveClient(cast.url, grant_b["call_room"], grant_b["token"])
    cast.clients += [a, b]
    await asyncio.gather(a.connect(), b.connect())
    pub_a, pub_b = await asyncio.gather(cast.publish(a, 700_000), cast.publish(b, 800_000))
    await asyncio.gather(cast.first_frame_in(a, pub_b.media_id, 800_000, 900_000),
                         cast.first_frame_in(b, pub_a.media_id, 700_000, 800_000))
    first_ms = (time.perf_counter() - accepted) * 1000
    await guest.request({"type": "call_end"})
    await _wait(host, "call_ended")
    return {"switch_1v1_first_frame_ms": round(first_ms, 1)}


async def run_scenes(url: str, secret: str, calls: int) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    result: dict[str, Any] = {"scenes": {}}
    scenes: list[tuple[str, Callable[[Cast, str], Awaitable[dict[str, Any]]]]] = [
        ("cohost", cohost_scene), ("pk", pk_scene), ("switch_1v1", switch_scene)]
    for name, scene in scenes:
        cast = Cast(url, secret)
        try:
            figures = await asyncio.wait_for(scene(cast, tag), 60)
            result.update(figures)
            result["scenes"][name] = "ok"
        except Exception as exc:  # a scene that fails is reported, and the next one still runs
            result["scenes"][name] = f"failed: {exc!r}"
            traceback.print_exc(file=sys.stderr)
        finally:
            await cast.close()
    setups = []
    try:
        for n in range(calls):
            setups.append(await asyncio.wait_for(one_call(url, f"scenes-{tag}-call-{n}", secret), 60))
        result["scenes"]["call"] = "ok"
    except Exception as exc:
        result["scenes"]["call"] = f"failed: {exc!r}"
    if setups:
        result["call_setup_ms_p50"] = round(float(np.percentile(setups, 50)), 1)
        result["call_setup_ms_p95"] = round(float(np.percentile(setups, 95)), 1)
        result["calls"] = len(setups)
    return result


@click.command("scenes")
@click.option("--url", required=True, help="WebSocket URL of the server.")
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET", help="The server's token secret.")
@click.option("--calls", default=10, type=int, help="1v1 calls for the set-up figures.")
@click.option("--json", "json_out", default=None)
def scenes_command(url: str, secret: str, calls: int, json_out: str | None) -> None:
    """Co-host, PK, switch to 1v1 and plain 1v1 calls, end to end; non-zero exit if any fails."""
    import uvloop

    result = uvloop.run(run_scenes(url, secret, calls))
    rows = [[name, status,
             {"cohost": result.get("cohost_first_frame_ms"), "pk": result.get("pk_first_frame_ms"),
              "switch_1v1": result.get("switch_1v1_first_frame_ms"),
              "call": f"{result.get('call_setup_ms_p50')} / {result.get('call_setup_ms_p95')}"}.get(name)]
            for name, status in result["scenes"].items()]
    print_table(f"scenes against {url}", ["scene", "result", "first frame ms (call: set-up p50 / p95)"], rows)
    if json_out:
        write_json(json_out, result)
    if any(status != "ok" for status in result["scenes"].values()):
        raise SystemExit(1)
