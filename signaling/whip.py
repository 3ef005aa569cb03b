"""WHIP ingest (RFC 9725) and WHEP playback over plain HTTP: what OBS, GStreamer and players speak.

    POST   /whip/{room}            Authorization: Bearer <host or co-host token>, body: SDP offer
                                   -> 201 Created, Location: /whip/{room}/{session}, body: SDP answer
    PATCH  /whip/{room}/{session}  application/trickle-ice-sdpfrag: trickled candidates -> 204
    DELETE /whip/{room}/{session}  -> 200, the stream ends
    POST   /whep/{room}[?publisher=ID]   a viewer token, or none where anonymous viewing is on
    PATCH / DELETE /whep/{room}/{session}
    OPTIONS on all of them: CORS preflight, Accept-Post: application/sdp

A WHIP stream is an ordinary publisher of the room (the media plane cannot tell): viewers, co-host
layouts, PK links and the cascade see it as they see a host publishing from the page. Errors use the
RFC's status codes with a one-line body that says why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from protocol import Grant, ProtocolError, Role
from signaling.httpauth import HttpAuth, refusal
from signaling.media import MediaSignaling
from signaling.membership import Membership

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Accept-Patch, Link",
}
_MAX_SDP_BYTES = 60_000


def _error(status: int, why: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=why + "\n", headers={**_CORS, **headers})


def parse_sdpfrag(text: str) -> list[dict[str, str | int | None]]:
    """The candidates of a trickle-ice-sdpfrag (RFC 8840), with the mid of the media section they follow."""
    candidates: list[dict[str, str | int | None]] = []
    mid: str | None = None
    index = -1
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": max(index, 0)})
    return candidates


class HttpMedia:
    """The WHIP and WHEP endpoints of one node."""

    def __init__(self, media: MediaSignaling, membership: Membership, auth: HttpAuth, allow_anonymous: bool) -> None:
        self.media = media
        self.membership = membership
        self.auth = auth
        self.allow_anonymous = allow_anonymous
        self._rooms: dict[str, str] = {}  # session (media id) -> room, for the resource URLs

    def add_routes(self, app: web.Application) -> None:
        for kind in ("whip", "whep"):
            app.router.add_route("OPTIONS", f"/{kind}/{{room}}", self.options)
            app.router.add_route("OPTIONS", f"/{kind}/{{room}}/{{session}}", self.options)
            app.router.add_patch(f"/{kind}/{{room}}/{{session}}", self.patch)
            app.router.add_delete(f"/{kind}/{{room}}/{{session}}", self.delete)
        app.router.add_post("/whip/{room}", self.whip)
        app.router.add_post("/whep/{room}", self.whep)

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**_CORS, "Accept-Post": "application/sdp",
                                                 "Accept-Patch": "application/trickle-ice-sdpfrag"})

    async def _offer(self, request: web.Request) -> str:
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="the body must be an SDP offer (Content-Type: application/sdp)\n",
                                               headers=_CORS)
        body = await request.content.read(_MAX_SDP_BYTES + 1)
        if len(body) > _MAX_SDP_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_SDP_BYTES, actual_size=len(body), headers=_CORS)
        return body.decode(errors="replace")

    async def _create(self, request: web.Request, kind: str,
                      start: Callable[[str, Grant | None, str], Awaitable[tuple[str, str]]]) -> web.Response:
        room = request.match_info["room"]
        try:
            grant = await (self.auth.grant(request, room, roles=(Role.HOST, Role.COHOST)) if kind == "whip"
                           else self.auth.grant(request, room, anonymous_ok=self.allow_anonymous))
            offer = await self._offer(request)
            session, answer = await start(room, grant, offer)
        except ProtocolError as exc:
            return refusal(exc, _CORS)
        for ended in [s for s in self._rooms if not self.media.owns_http(s)]:
            del self._rooms[ended]  # sessions that ended without a DELETE (peer gone, connect timeout)
        self._rooms[session] = room
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={**_CORS, "Location": f"/{kind}/{room}/{session}", "ETag": f'"{session}"',
                                     "Accept-Patch": "application/trickle-ice-sdpfrag"})

    async def whip(self, request: web.Request) -> web.Response:
        remote = request.remote or "?"

        async def start(room: str, grant: Grant | None, offer: str) -> tuple[str, str]:
            assert grant is not None
            return await self.media.publish_http(room, grant.user, remote, offer)

        return await self._create(request, "whip", start)

    async def whep(self, request: web.Request) -> web.Response:
        remote = request.remote or "?"
        publisher = request.query.get("publisher")

        async def start(room: str, grant: Grant | None, offer: str) -> tuple[str, str]:
            # A private call room admits its two parties only, over HTTP as over the WebSocket.
            await self.membership.scenes.admit(room, grant.user if grant else None)
            user = grant.user if grant else "whep-viewer"
            return await self.media.subscribe_http(room, user, remote, offer, publisher)

        return await self._create(request, "whep", start)

    def _session(self, request: web.Request) -> str | None:
        session = request.match_info["session"]
        known = self._rooms.get(session) == request.match_info["room"] and self.media.owns_http(session)
        return session if known else None

    async def patch(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return _error(404, "no such session (it may have ended)")
        if request.content_type != "application/trickle-ice-sdpfrag":
            return _error(415, "trickle with Content-Type: application/trickle-ice-sdpfrag (ICE restarts: no)")
        text = (await request.content.read(_MAX_SDP_BYTES + 1)).decode(errors="replace")
        try:
            await self.media.candidates_http(session, parse_sdpfrag(text))
        except ProtocolError as exc:
            return refusal(exc, _CORS)
        return web.Response(status=204, headers=_CORS)

    async def delete(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return _error(404, "no such session (it may have ended)")
        self._rooms.pop(session, None)
        await self.media.close_media(session)
        return web.Response(status=200, text="ended\n", headers=_CORS)
