"""LL-HLS over HTTP: ``GET /hls/{room}/index.m3u8`` and the init section, parts and segments it names
(``relay.hls`` cuts them from the room's H.264 publisher, never re-encoding).

A room's stream starts on its first request and stops after ``IDLE_AFTER`` seconds without one (its frame
observer removed: a room nobody watches over HLS costs nothing); at most ``ServerConfig.hls_max_streams`` run
at once (past it: 503 with Retry-After). The playlist blocks (``_HLS_msn``, ``_HLS_part``) up to three target
durations, and a request for the part the playlist hints at waits for it the same way (how LL-HLS players
fetch). Product cards and announcements pushed while a room streams go into its playlists as ``EXT-X-
DATERANGE`` (``observe``). A simulcast H.264 publisher (OBS's three-layer WHIP output) is a rendition ladder:
each layer below the top its own video rendition (``video{rank}.m3u8``, files named ``{epoch}.v{rank}...``),
as the encoder made it, listed in the multivariant playlist with its size and rate, so a player on a weak link
steps down without the server encoding anything. Names carry the stream's epoch
(``{epoch}.{msn}.{part}.m4s``), so a cache in front never serves a restarted publisher's old bytes; parts,
segments and the init section never change once written and are cacheable for a minute, playlists for a second
(a blocking one, whose URL names its part, for six).

Who may fetch: as the room is. Anonymous viewers where the server allows them, otherwise a token of the room
(``?token=``, carried into every URI the playlist names, as a player cannot add headers to them).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from protocol import ProtocolError
from relay.hls import DateRange, HlsStream, HlsUnavailable, render_master
from relay.router import MediaRouter
from relay.tracks import EncodedFrame, PublishedTrack
from relay.transcode import DECODERS as TRANSCODED
from relay.transcode import Transcoder
from signaling.hlsviewers import HlsViewers
from signaling.httpauth import HttpAuth, refusal

log = logging.getLogger(__name__)

IDLE_AFTER = 30.0  # seconds without a request before a room's stream stops
MAX_LADDER = 3  # renditions below the top one (simulcast sends at most three layers, and the top is video.m3u8)
_FILE = re.compile(r"^(?P<epoch>\d{1,16})\.(?P<rendition>a|v\d)?"
                   r"(?:(?P<init>init\.mp4)|(?P<msn>\d{1,9})(?:\.(?P<part>\d{1,4}))?\.m4s)$")
_PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_ON_TIMELINE = {"product": ("product",), "announce": ("text", "pinned")}  # what of each event the player gets
_CORS = {"Access-Control-Allow-Origin": "*"}  # players on a shop's own pages, and caches in front, fetch it


@dataclass
class _Running:
    stream: HlsStream
    track: PublishedTrack
    epoch: int
    last_request: float
    audio: PublishedTrack | None = None
    transcoder: Transcoder | None = None  # a VP8 or VP9 show's frames made H.264 before the stream cuts them
    # A simulcast H.264 show's layers below the top, by rank: each a video rendition of its own.
    lower: dict[int, HlsStream] = field(default_factory=dict)
    _lower_observers: dict[int, Any] = field(default_factory=dict)

    def add_lower(self, rank: int, stream: HlsStream) -> None:
        def observe(track: PublishedTrack, frame: EncodedFrame, chain_broken: bool) -> None:
            stream.add_frame(frame.data, frame.timestamp, frame.keyframe)
        self.lower[rank] = stream
        self._lower_observers[rank] = observe
        self.track.layer_observers.setdefault(rank, []).append(observe)

    @property
    def streams(self) -> list[HlsStream]:
        """Every video rendition's stream, the top one first."""
        return [self.stream, *(self.lower[rank] for rank in sorted(self.lower, reverse=True))]

    def rendition(self, name: str) -> HlsStream | None:
        """The stream of ``video.m3u8`` (``""``, ``"a"``: the top one, which carries the sound) or of a
        lower rendition (``"v0"``...)."""
        if name in ("", "a"):
            return self.stream
        return self.lower.get(int(name[1:])) if name[1:].isdigit() else None

    def master(self) -> str:
        variants = [self.stream.variant("video.m3u8")]
        variants += [self.lower[rank].variant(f"video{rank}.m3u8") for rank in sorted(self.lower, reverse=True)
                     if self.lower[rank].segments]  # (a layer that has sent nothing yet is not offered)
        return render_master(variants, self.stream.audio_codec)

    def observe(self, track: PublishedTrack, frame: EncodedFrame, chain_broken: bool) -> None:
        if self.transcoder is not None:
            self.transcoder.put(frame.data, frame.timestamp, frame.keyframe)
        else:
            self.stream.add_frame(frame.data, frame.timestamp, frame.keyframe)

    def observe_audio(self, track: PublishedTrack, frame: EncodedFrame, chain_broken: bool) -> None:
        self.stream.add_audio(frame.data, frame.timestamp)

    def stop(self) -> None:
        if self.observe in self.track.observers:
            self.track.observers.remove(self.observe)
        if self.audio is not None and self.observe_audio in self.audio.observers:
            self.audio.observers.remove(self.observe_audio)
        if self.transcoder is not None:
            self.transcoder.close()
        for rank, observe in self._lower_observers.items():
            listeners = self.track.layer_observers.get(rank, [])
            if observe in listeners:
                listeners.remove(observe)
            if not listeners:
                self.track.layer_observers.pop(rank, None)
        for stream in self.streams:
            stream.close()


class HlsEgress:
    """The node's LL-HLS streams, one per room being watched over HLS. ``close()`` at shutdown."""

    def __init__(self, router: MediaRouter, auth: HttpAuth, allow_anonymous: bool, max_streams: int,
                 max_transcodes: int = 2, viewers: HlsViewers | None = None) -> None:
        self.router = router
        self.auth = auth
        self.allow_anonymous = allow_anonymous
        self.max_streams = max_streams
        self.max_transcodes = max_transcodes
        self.running: dict[str, _Running] = {}
        self.requests = 0
        self.refused_full = 0
        self._reaper: asyncio.TimerHandle | None = None
        self.viewers = viewers  # its players' sessions, for analytics (None: not counted)

    def routes(self) -> list[web.RouteDef]:
        ladder = [web.get(f"/hls/{{room}}/video{rank}.m3u8", self.playlist) for rank in range(MAX_LADDER)]
        return [web.get("/hls/{room}/index.m3u8", self.index), web.get("/hls/{room}/video.m3u8", self.playlist),
                web.get("/hls/{room}/audio.m3u8", self.playlist), *ladder, web.get("/hls/{room}/{file}", self.file)]

    # -- streams -----------------------------------------------------------------------------------------

    def _tracks_of(self, room: str) -> tuple[PublishedTrack | None, PublishedTrack | None]:
        """The room's first publisher with video: (its video, its Opus audio or None)."""
        for publisher in self.router.publishers_of(room):
            track = publisher.tracks.get("video")
            if track is not None and not track.closed:
                audio = publisher.tracks.get("audio")
                opus = audio is not None and not audio.closed and _codec(audio) == "opus"
                return track, audio if opus else None
        return None, None

    def _running(self, room: str) -> _Running:
        """The room's stream, started if needed. Raises web.HTTPException with the reason."""
        track, audio = self._tracks_of(room)
        current = self.running.get(room)
        if current is not None and (track is None or current.track is not track or current.stream.closed):
            current.stop()  # the publisher left or came back: a new stream (a new epoch)
            del self.running[room]
            current = None
        if track is None:
            raise _error(404, "nothing is on air in this room")
        if current is None:
            if len(self.running) >= self.max_streams:
                self.refused_full += 1
                raise _error(503, "this server streams the most HLS rooms it may; retry", retry_after=5)
            current = self._start(track, audio)
            track.observers.append(current.observe)
            if audio is not None:
                audio.observers.append(current.observe_audio)
            _ask_keyframe(track, "hls start")  # its first segment starts at the next keyframe: ask for one now
            self.running[room] = current
            self._schedule_reaper()
        current.last_request = time.monotonic()
        return current

    def _start(self, track: PublishedTrack, audio: PublishedTrack | None) -> _Running:
        """A new stream of ``track``: its H.264 cut as it comes, or a VP8 or VP9 show's made H.264 first (a
        ``Transcoder``, while fewer than ``max_transcodes`` run). Raises a 409 with the reason otherwise."""
        codec = _codec(track)
        transcoders = sum(1 for r in self.running.values() if r.transcoder is not None)
        transcode = codec in TRANSCODED
        if transcode and transcoders >= self.max_transcodes:
            raise _error(409, f"HLS of a {codec.upper()} show needs a transcode and this server runs the most it "
                              f"may ({self.max_transcodes}); a host sending H.264 has HLS at no cost")
        holder: list[Transcoder] = []

        def new_keyframe() -> None:  # a segment outgrows its target: the encoder (ours, or the publisher's)
            if holder:
                holder[0].keyframe()
            else:
                _ask_keyframe(track, "hls segment")

        try:
            stream = HlsStream("h264" if transcode else codec, request_keyframe=new_keyframe, audio=audio is not None)
        except HlsUnavailable as exc:
            raise _error(409, str(exc)) from None
        if transcode:
            holder.append(Transcoder(codec, stream.add_frame, lambda: _ask_keyframe(track, "hls transcode")))
        running = _Running(stream, track, int(time.time() * 1000), time.monotonic(), audio,
                           holder[0] if holder else None)
        if not transcode:  # simulcast H.264: the lower layers as they are, a rendition each (none transcoded)
            for rank in range(min(len(track.layers) - 1, MAX_LADDER)):
                running.add_lower(rank, HlsStream(codec, prefix=f"v{rank}",
                                                  request_keyframe=functools.partial(_ask_layer_keyframe, track, rank)))
                track.request_keyframe("hls start", layer=rank)
        return running

    def _schedule_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(IDLE_AFTER / 3, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        if self.viewers is not None:
            self.viewers.sweep()
        now = time.monotonic()
        for room, running in list(self.running.items()):
            if now - running.last_request > IDLE_AFTER:
                running.stop()
                del self.running[room]
        if self.running or (self.viewers is not None and len(self.viewers)):
            self._schedule_reaper()

    def observe(self, room: str, data: dict[str, Any]) -> bool:
        """A durable event of a room (the hub passes them): a product card or an announcement goes on the
        timeline of the room's HLS stream, if one runs, at the time the server got it."""
        running = self.running.get(room)
        kind = data.get("type")
        if running is not None and kind in _ON_TIMELINE and isinstance(data.get("seq"), int):
            at = data.get("server_ts")
            start = at / 1000 if isinstance(at, int | float) else time.time()
            payload = {key: data[key] for key in _ON_TIMELINE[kind] if key in data}
            event = DateRange(f"{kind}-{data['seq']}", f"live-relay.{kind}", start,
                              json.dumps({"type": kind, "seq": data["seq"], **payload}, ensure_ascii=False).encode())
            for stream in running.streams:  # every rendition's timeline: a player on any of them sees it
                stream.add_daterange(event)
        return False  # never consumes: the room gets every event as usual

    def close(self) -> None:
        if self.viewers is not None:
            self.viewers.close_all()
        if self._reaper is not None:
            self._reaper.cancel()
        for running in self.running.values():
            running.stop()
        self.running.clear()

    # -- HTTP --------------------------------------------------------------------------------------------

    async def _admit(self, request: web.Request) -> _Running:
        room = request.match_info["room"]
        self.requests += 1
        try:
            grant = await self.auth.grant(request, room, anonymous_ok=self.allow_anonymous, query=True)
        except ProtocolError as exc:
            raise _as_http(refusal(exc)) from None
        running = self._running(room)
        # (The page's own fallback player says so: its viewer is counted by its WebSocket already.)
        if self.viewers is not None and request.path.endswith(".m3u8") and \
                request.headers.get("X-Live-Relay-Viewer") != "page":
            key = self.viewers.key_of(grant.user if grant is not None else None, request.remote or "",
                                      request.headers.get("User-Agent", ""))
            self.viewers.seen(room, key, request.query.get("src") or request.query.get("utm_source"))
        return running

    async def index(self, request: web.Request) -> web.StreamResponse:
        """A stream with sound: the multivariant playlist naming its two renditions; video alone: its media
        playlist (as ``video.m3u8``)."""
        running = await self._admit(request)
        if not running.stream.has_audio and not running.lower:
            return await self.playlist(request, running)
        await self._started(running.stream)
        token = request.query.get("token")
        text = running.master()
        if token:
            text = re.sub(r"^(video\d?\.m3u8)$", rf"\1?token={token}", text, flags=re.M)
            text = text.replace('URI="audio.m3u8"', f'URI="audio.m3u8?token={token}"')
        return web.Response(body=text.encode(), content_type=_PLAYLIST_TYPE, headers={
            "Cache-Control": "public, max-age=1", **_CORS})

    @staticmethod
    async def _started(stream: HlsStream) -> None:
        """Wait for the stream's first whole segment (players, hls.js among them, refuse a playlist of parts
        alone: "no segments"); the first request of a new stream waits about a segment."""
        first = stream.segments[0].msn if stream.segments else 0
        if await stream.wait(first, None, timeout=3 * stream.target_duration) != "ready":
            raise _error(503, "the stream has not started yet (waiting for a keyframe)", retry_after=1)

    async def playlist(self, request: web.Request, running: _Running | None = None) -> web.StreamResponse:
        """A rendition's media playlist (``video.m3u8``, ``audio.m3u8``), blocking when asked to."""
        running = running or await self._admit(request)
        audio = request.path.endswith("/audio.m3u8")
        name = request.path.rsplit("/", 1)[-1].removesuffix(".m3u8").removeprefix("video")
        found = running.rendition(f"v{name}" if name.isdigit() else "")
        if found is None:
            raise _error(404, "no such rendition (this show sends no such layer)")
        stream = found
        if audio and not stream.has_audio:
            raise _error(404, "this show has no sound")
        msn, part = _int(request.query.get("_HLS_msn")), _int(request.query.get("_HLS_part"))
        blocking = msn is not None
        if request.query.get("_HLS_part") is not None and msn is None:
            raise _error(400, "_HLS_part needs _HLS_msn")
        if blocking:
            assert msn is not None
            verdict = await stream.wait(msn, part, timeout=3 * stream.target_duration)
            if verdict == "too-far":
                raise _error(400, f"segment {msn} is too far ahead of the stream")
            if verdict in ("timeout", "gone"):
                raise _error(503, "the stream did not reach that part in time", retry_after=1)
        else:
            await self._started(stream)
        token = request.query.get("token")
        text = _with_names(stream.playlist(audio=audio), running.epoch, token)
        return web.Response(body=text.encode(), content_type=_PLAYLIST_TYPE, headers={
            "Cache-Control": f"public, max-age={6 if blocking else 1}", **_CORS})

    async def file(self, request: web.Request) -> web.StreamResponse:
        match = _FILE.match(request.match_info["file"])
        if match is None:
            raise _error(404, "no such file")
        running = await self._admit(request)
        if int(match["epoch"]) != running.epoch:
            raise _error(404, "that stream has ended (the publisher restarted): reload the playlist")
        rendition = match["rendition"] or ""
        audio = rendition == "a"
        found = running.rendition(rendition)
        if found is None:
            raise _error(404, "no such rendition (this show sends no such layer)")
        stream = found
        if audio and not stream.has_audio:
            raise _error(404, "this show has no sound")
        if match["init"]:
            data = stream.audio_init if audio else stream.init
        elif match["part"] is None:
            data = stream.segment(int(match["msn"]), audio=audio)
        else:
            msn, index = int(match["msn"]), int(match["part"])
            data = stream.part(msn, index, audio=audio)
            if data is None and stream.preload_hint is not None and (msn, index) >= stream.preload_hint:
                # The hinted part (or the next): players ask before it exists; it comes within a part target.
                if await stream.wait(msn, index, timeout=3 * stream.target_duration) == "ready":
                    data = stream.part(msn, index, audio=audio)
        if data is None:
            raise _error(404, "no such part or segment (too old, or not written yet)")
        return web.Response(body=data, content_type="video/mp4", headers={
            "Cache-Control": "public, max-age=60", **_CORS})


def _codec(track: PublishedTrack) -> str:
    """A track's codec, lower case: as its packets say, or as negotiated before the first one came."""
    return (track.codec_name or (track.codec.name if track.codec is not None else "")).lower()


def _ask_layer_keyframe(track: PublishedTrack, rank: int) -> None:
    track.request_keyframe("hls segment", layer=rank)


def _ask_keyframe(track: PublishedTrack, reason: str) -> None:
    track.request_keyframe(reason, layer=len(track.layers) - 1)  # the frames observed are the top layer's


def _with_names(playlist: str, epoch: int, token: str | None) -> str:
    """The renderer's names (``init.mp4``, ``seg{n}.m4s``, ``part{n}.{i}.m4s``, each after its rendition's
    prefix: ``a``, ``v0``...) as this stream's files."""
    suffix = f"?token={token}" if token else ""
    prefix = r"(a|v\d)?"
    playlist = re.sub(rf'URI="{prefix}init\.mp4"', lambda m: f'URI="{epoch}.{m[1] or ""}init.mp4{suffix}"', playlist)
    playlist = re.sub(rf'URI="{prefix}part(\d+)\.(\d+)\.m4s"',
                      lambda m: f'URI="{epoch}.{m[1] or ""}{m[2]}.{m[3]}.m4s{suffix}"', playlist)
    return re.sub(rf"^{prefix}seg(\d+)\.m4s$", lambda m: f"{epoch}.{m[1] or ''}{m[2]}.m4s{suffix}", playlist,
                  flags=re.M)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 9:
        raise _error(400, f"not a number: {value[:20]!r}")
    return int(value)


def _error(status: int, reason: str, retry_after: int | None = None) -> web.HTTPException:
    headers = {**_CORS, "Retry-After": str(retry_after)} if retry_after else dict(_CORS)
    cls = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict,
           503: web.HTTPServiceUnavailable}[status]
    return cls(text=f"{reason}\n", headers=headers)


def _as_http(response: web.Response) -> web.HTTPException:
    exc = web.HTTPException(text=response.text, headers={k: v for k, v in response.headers.items()
                                                         if k.lower() != "content-type"})
    exc.set_status(response.status)
    return exc
