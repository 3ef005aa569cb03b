"""Server-side recording (``serve --record DIR``): every publisher on this node is recorded as received
(``relay.recorder``), and each recorded room's durable events and scene changes go into a JSON-lines log
with their media time, so a replay can show the comments and product cards when they happened.

Layout: ``DIR/<room>/<started>-<publisher>.mkv`` per publisher and ``DIR/<room>/<started>-events.jsonl``
per room session (the first recorded publisher starts it). Disk use is bounded: past ``max_bytes`` in
``DIR``, running recordings stop and new ones are refused (logged, and visible in /metrics).

A room's recordings are listed at ``GET /recordings/{room}`` and served (with Range, so players can seek)
at ``GET /recordings/{room}/{file}``, both only with a host or co-host token of that room (``Authorization:
Bearer`` or ``?token=`` for a <video> element).

Every path is built from a validated room name and checked, once resolved, to stay inside ``DIR``
(``inside``); file names carry the start time to the millisecond and never reuse an existing file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from protocol import ErrorCode, ProtocolError, Role, validate_room_name
from relay.recorder import DiskBudget, Recording
from relay.router import MediaRouter
from signaling.brokers import EventStream, RoomStore
from signaling.httpauth import HttpAuth, bearer_token, read_json_body, refusal
from signaling.session import Session

log = logging.getLogger(__name__)

_LOGGED_KINDS = frozenset({"comment", "comment_deleted", "product", "announce", "stage", "pk", "pk_ended", "call",
                           "media"})


def inside(directory: Path, *parts: str) -> Path:
    """``directory/parts...`` resolved, or ValueError if that is not strictly inside ``directory``."""
    base = directory.resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or base not in path.parents:
        raise ValueError(f"{'/'.join(parts)!r} is outside {str(directory)!r}")
    return path


SHARED_FILE = "shared.json"  # a room's recordings its host shared, beside their files
MAX_SHARED = 200


def _stamp_of(name: str) -> str:
    """``YYYYmmdd-HHMMSS.mmm`` from a recorded file's name."""
    return "-".join(name.split("-", 2)[:2])


def unique_stamp(folder: Path, now: float, taken: set[str]) -> str:
    """``YYYYmmdd-HHMMSS.mmm`` for ``now``, moved on a millisecond at a time until no file in ``folder``
    starts with it and it was not handed out before (``taken``, which it joins): two recordings started
    within a second never share a name."""
    ms = int(now * 1000)
    while True:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"
        key = f"{folder}/{stamp}"
        if key not in taken and not (folder.is_dir() and any(folder.glob(stamp + "-*"))):
            if len(taken) >= 10_000:  # older stamps are on disk by now, where the glob finds them
                taken.clear()
            taken.add(key)
            return stamp
        ms += 1


@dataclass
class _RoomLog:
    path: Path
    started_ms: float
    recordings: dict[str, Recording] = field(default_factory=dict)  # by publisher id


class Recordings:
    """``record_all``: every room (``serve --record DIR``); otherwise the rooms whose host asked."""

    def __init__(self, directory: str, router: MediaRouter, max_bytes: int,
                 spawn: Callable[[Coroutine[Any, Any, None], str], None], record_all: bool = True) -> None:
        self.directory = Path(directory)
        # Side work (closing a file when its publisher leaves) runs as the server's tracked tasks.
        self._spawn = spawn
        self.router = router
        self.max_bytes = max_bytes
        self.record_all = record_all
        self.rooms: dict[str, _RoomLog] = {}
        self.requested: set[str] = set()  # rooms whose host started a recording (on this node)
        self.refused = 0
        self.budget = DiskBudget(max_bytes or 2**62)  # re-read from the disk by the ticker
        self._stamps: set[str] = set()  # file-name stamps handed out (bounded by the recordings made)

    def _folder(self, room: str) -> Path:
        """The room's folder (ValueError for a name that is no room, or would lead outside DIR)."""
        try:
            validate_room_name(room)
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        return inside(self.directory, room)

    def listing(self, room: str) -> list[dict[str, Any]]:
        """The room's recorded files, newest first: media files and their events logs. ``recording`` names
        the room session a file belongs to (its events log's stamp): a co-host who came later
        has a file of its own, stamped when it started, in the same session as the host's."""
        folder = self._folder(room)
        if not folder.is_dir():
            return []
        files = sorted((p for p in folder.iterdir() if p.suffix in (".mkv", ".jsonl")), reverse=True)
        said: dict[str, dict[str, Any]] = {}  # what the server wrote of each file: its session, its end
        for log_file in (p for p in files if p.suffix == ".jsonl"):
            session = _stamp_of(log_file.name)
            for line in log_file.read_text(encoding="utf-8").splitlines():
                if '"recording_started"' in line or '"recording_stopped"' in line:
                    entry = json.loads(line)
                    known = said.setdefault(str(entry.get("file", "")), {"recording": session})
                    if entry.get("type") == "recording_stopped":
                        known.update(duration_s=entry.get("duration_s"), streams=entry.get("streams"))
        return [{"file": p.name, "bytes": p.stat().st_size, "kind": "media" if p.suffix == ".mkv" else "events",
                 "recording": _stamp_of(p.name), **said.get(p.name, {})}
                for p in files]

    def shared(self, room: str) -> set[str]:
        """The room's recordings its host shared (anyone with the link may watch their replay)."""
        try:
            names = json.loads((self._folder(room) / SHARED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()

    def share(self, room: str, recording: str, public: bool) -> bool:
        """Share a recording of the room (or stop): False when the room has no such recording. Kept beside the
        files (``shared.json``), so it lasts as long as they do."""
        if recording not in {entry["recording"] for entry in self.listing(room)}:
            return False
        names = self.shared(room)
        names = names | {recording} if public else names - {recording}
        (self._folder(room) / SHARED_FILE).write_text(json.dumps(sorted(names)[-MAX_SHARED:]), encoding="utf-8")
        return True

    def file(self, room: str, name: str) -> Path | None:
        """A recorded file of the room by its listed name (nothing outside the room's folder)."""
        if name != self._safe(name) or name.startswith("."):
            return None
        try:
            path = inside(self._folder(room), name)
        except ValueError:
            return None
        return path if path.is_file() and path.suffix in (".mkv", ".jsonl") else None

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file()) \
            if self.directory.exists() else 0

    @staticmethod
    def _safe(name: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

    def on_router_event(self, room: str, event: dict[str, Any]) -> None:
        if event["type"] == "publisher_joined" and (self.record_all or room in self.requested):
            self._start(room, event["publisher"])
        elif event["type"] == "publisher_left":
            self._spawn(self._stop(room, event["publisher"]), f"recording-stop-{event['publisher']}")

    def _start(self, room: str, publisher: str) -> None:
        if room in self.rooms and publisher in self.rooms[room].recordings:
            return  # recorded already (a host's record_start can come before the publisher's announcement)
        source = self.router.source(publisher)
        if source is None or not source.local:
            return  # another node's publisher: recorded where it is published
        if self.max_bytes and not self._sync_budget():
            self.refused += 1
            log.warning("recording refused: the recording directory is full", extra={"room": room})
            return
        try:
            folder = self._folder(room)
        except ValueError:
            log.warning("recording refused: not a room name", extra={"room": room})
            return
        stamp = unique_stamp(folder, time.time(), self._stamps)
        path = folder / f"{stamp}-{self._safe(publisher)}.mkv"
        def first_frame(recording: Recording) -> None:
            # The file's time 0: a replay lines events up from here, not from recording_started (the
            # keyframe the file starts at may come a GOP later).
            self._log(room, {"type": "recording_first_frame", "publisher": publisher, "file": recording.path.name})

        recording = self.router.record(publisher, path, self.budget, on_first_frame=first_frame)
        if recording is None:
            return
        room_log = self.rooms.get(room)
        if room_log is None:
            room_log = self.rooms[room] = _RoomLog(folder / f"{stamp}-events.jsonl", time.time() * 1000)
        room_log.recordings[publisher] = recording
        self._log(room, {"type": "recording_started", "publisher": publisher, "user": source.user,
                         "file": path.name})

    async def _stop(self, room: str, publisher: str) -> None:
        room_log = self.rooms.get(room)
        recording = room_log.recordings.pop(publisher, None) if room_log else None
        if recording is None or room_log is None:
            return
        await asyncio.to_thread(recording.stop)
        # Into this room log, whatever happened while the file closed: two recordings of a room stop
        # together when a private call ends, and the other one may have finished first.
        self._write(room_log, {"type": "recording_stopped", "publisher": publisher, "file": recording.path.name,
                               "frames": recording.frames_written, "dropped": recording.frames_dropped,
                               "duration_s": recording.duration_s, "streams": recording.streams})
        if not room_log.recordings and self.rooms.get(room) is room_log:
            del self.rooms[room]

    def observe(self, room: str, data: dict[str, Any]) -> bool:
        """Publications and broadcasts of the room (the hub passes them): log what a replay shows."""
        if room in self.rooms and data.get("type") in _LOGGED_KINDS:
            self._log(room, data)
        return False  # never consumes: the room gets every event as usual

    def _log(self, room: str, data: dict[str, Any]) -> None:
        room_log = self.rooms.get(room)
        if room_log is not None:
            self._write(room_log, data)

    @staticmethod
    def _write(room_log: _RoomLog, data: dict[str, Any]) -> None:
        media_ms = round(time.time() * 1000 - room_log.started_ms, 1)
        room_log.path.parent.mkdir(parents=True, exist_ok=True)
        with room_log.path.open("a", encoding="utf-8") as out:  # small appends: a line per event
            out.write(json.dumps({"media_ms": media_ms, **data}, ensure_ascii=False) + "\n")

    def _sync_budget(self) -> bool:
        """Re-read what the directory holds into the writers' shared budget; False once it is full."""
        left = self.max_bytes - self.disk_bytes()
        if any(room_log.recordings for room_log in self.rooms.values()):
            # Running writers have taken bytes their muxers have not flushed yet: the disk reads low, so
            # it may only lower what is left (raising it let a 30 kB bound end 6 kB over).
            self.budget.lower(max(0, left))
        else:
            self.budget.reset(max(0, left))
        return left > 0

    def start_room(self, room: str) -> bool:
        """A host asked: record the room's publishers on this node from now on. False if the disk is full."""
        if self.max_bytes and not self._sync_budget():
            self.refused += 1
            return False
        self.requested.add(room)
        for source in self.router.local_sources(room):
            if room not in self.rooms or source.id not in self.rooms[room].recordings:
                self._start(room, source.id)
        return True

    async def stop_room(self, room: str) -> None:
        self.requested.discard(room)
        room_log = self.rooms.get(room)
        for publisher in list(room_log.recordings) if room_log else []:
            await self._stop(room, publisher)

    async def enforce_bound(self) -> None:
        """Stop every running recording once the directory is over its bound (the ticker calls this)."""
        running = [r for room_log in self.rooms.values() for r in room_log.recordings.values()]
        if self.max_bytes and running and (not self._sync_budget() or any(r.full for r in running)):
            log.warning("recording directory full; stopping recordings", extra={"dir": str(self.directory)})
            for room, room_log in list(self.rooms.items()):
                for publisher in list(room_log.recordings):
                    await self._stop(room, publisher)

    async def close(self) -> None:
        for room, room_log in list(self.rooms.items()):
            for publisher in list(room_log.recordings):
                await self._stop(room, publisher)


def add_recording_routes(app: web.Application, recordings: Recordings, auth: HttpAuth) -> None:
    """``GET /recordings/{room}`` (a JSON listing) and ``GET /recordings/{room}/{file}`` (the file, with
    Range), for a host or co-host token of that room (``?token=`` too: a <video> sends no headers), or without
    a token for the recordings its host shared (``PUT .../{recording}/share``): a replay viewers may watch and
    buy from."""

    async def refused(request: web.Request, roles: tuple[Role, ...] = (Role.HOST, Role.COHOST)) -> web.Response | None:
        try:
            await auth.grant(request, request.match_info["room"], roles=roles, query=True)
        except ProtocolError as exc:
            return refusal(exc)
        return None

    def not_shared() -> web.Response:
        return web.Response(status=401, text="unauthorized: a host token, or a replay its host shared\n",
                            headers={"WWW-Authenticate": "Bearer"})

    async def listing(request: web.Request) -> web.Response:
        """Everything for the room's host or co-host; for anyone else, what its host shared."""
        room = request.match_info["room"]
        refusing = await refused(request)
        if refusing is None:
            return web.json_response(recordings.listing(room))
        public = recordings.shared(room)
        if not public:
            return refusing if bearer_token(request, query=True) else not_shared()
        return web.json_response([e for e in recordings.listing(room) if e["recording"] in public])

    async def share(request: web.Request) -> web.Response:
        """``PUT /recordings/{room}/{recording}/share`` ``{"public": bool}`` (host): anyone with the replay's
        link may watch it (and buy from its cards), or no longer."""
        refusing = await refused(request, (Role.HOST,))
        if refusing is not None:
            return refusing
        try:
            body = await read_json_body(request, 1024)
        except ValueError as exc:
            return web.Response(status=400, text=f"bad_message: {exc}\n")
        if not isinstance(body, dict) or not isinstance(body.get("public"), bool):
            return web.Response(status=400, text='bad_message: the body must be {"public": true} or false\n')
        if not recordings.share(request.match_info["room"], request.match_info["file"], body["public"]):
            return web.Response(status=404, text="no such recording\n")
        return web.json_response({"recording": request.match_info["file"], "public": body["public"]})

    async def one(request: web.Request) -> web.StreamResponse:
        if _stamp_of(request.match_info["file"]) not in recordings.shared(request.match_info["room"]):
            refusing = await refused(request)
            if refusing is not None:
                return refusing if bearer_token(request, query=True) else not_shared()
        path = recordings.file(request.match_info["room"], request.match_info["file"])
        if path is None:
            return web.Response(status=404, text="no such recording\n")
        if request.headers.get("Range", "").replace(" ", "") == "bytes=-0":  # RFC 9110 14.1.1: unsatisfiable
            return web.Response(status=416, text="a suffix range of 0 bytes selects nothing\n",
                                headers={"Content-Range": f"bytes */{path.stat().st_size}"})
        content_type = "video/webm" if path.suffix == ".mkv" else "application/x-ndjson"
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "private"})

    app.router.add_get("/recordings/{room}", listing)
    app.router.add_get("/recordings/{room}/{file}", one)
    app.router.add_put("/recordings/{room}/{file}/share", share)


class RecordingControl:
    """``record_start`` / ``record_stop`` from a room's host: the room's publishers on this node are recorded
    (or stop being); the room is told (``recording`` event, ``joined.state.recording``)."""

    def __init__(self, recordings: Recordings, store: RoomStore, stream: EventStream) -> None:
        self.recordings = recordings
        self.store = store
        self.stream = stream

    def handlers(self) -> dict[str, Callable[[Session, dict[str, Any]], Awaitable[None]]]:
        return {"record_start": self.start, "record_stop": self.stop}

    @staticmethod
    def _host_only(session: Session, ref: Any) -> str:
        if session.role is not Role.HOST or session.room is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the host can start or stop recording", ref)
        return session.room

    async def _announce(self, room: str, state: dict[str, Any] | None) -> None:
        await self.store.set_state(room, "recording", state)
        await self.stream.broadcast(room, {"type": "recording", "room": room, "state": state,
                                           "server_ts": time.time() * 1000})

    async def start(self, session: Session, message: dict[str, Any]) -> None:
        ref = message.get("id")
        room = self._host_only(session, ref)
        if room in self.recordings.requested or self.recordings.record_all:
            raise ProtocolError(ErrorCode.BUSY, "this room is already being recorded", ref)
        if not self.recordings.start_room(room):
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the recording directory is full", ref)
        await self._announce(room, {"active": True, "started_ms": time.time() * 1000, "by": session.user})
        if ref is not None:
            session.send({"type": "ok", "id": ref})

    async def stop(self, session: Session, message: dict[str, Any]) -> None:
        ref = message.get("id")
        room = self._host_only(session, ref)
        if room not in self.recordings.requested:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no recording of this room to stop", ref)
        await self.recordings.stop_room(room)
        await self._announce(room, None)
        if ref is not None:
            session.send({"type": "ok", "id": ref})
