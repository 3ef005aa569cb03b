"""WHIP ingest (RFC 9725) and WHEP playback over plain HTTP: what OBS, GStreamer and players speak.

    POST   /whip/{room}             Authorization: Bearer <host or co-host token>, body: SDP offer
                                    -> 201 Created, Location: /whip/{room}/{resource}, ETag, body: SDP answer
    PATCH  /whip/{room}/{resource}  application/trickle-ice-sdpfrag: trickled candidates -> 204
    DELETE /whip/{room}/{resource}  -> 200, the stream ends
    POST   /whep/{room}[?publisher=ID]   a viewer token, or none where anonymous viewing is on
    PATCH / DELETE /whep/{room}/{resource}
    OPTIONS on all of them: CORS preflight, Accept-Post: application/sdp

A WHIP stream is an ordinary publisher of the room (the media plane cannot tell): viewers, co-host
layouts, PK links and the cascade see it as they see a host publishing from the page. Errors use the
RFC's status codes with a one-line body that says why.

Resources are capabilities: their URL carries 128 random bits (never the media id, which the room's
``media`` events name), and PATCH or DELETE needs the token that created the resource or a host token of the
room (RFC 9725 §4.3). A resource made without a token (anonymous WHEP) is reached by its URL alone. Anything
else is 404, whether or not the resource exists; an ``If-Match`` that does not match is 412.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from protocol import ErrorCode, Grant, ProtocolError, Role, validate_room_name
from signaling.httpauth import HttpAuth, bearer_token, refusal
from signaling.media import MediaSignaling
from signaling.membership import Membership
from signaling.turn import TurnService

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Accept-Patch, Link",
}
_MAX_SDP_BYTES = 60_000
_NOT_FOUND = "no such session (it may have ended)"


def _error(status: int, why: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=why + "\n", headers={**_CORS, **headers})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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


@dataclass(frozen=True, slots=True)
class HttpResource:
    """One WHIP or WHEP session as its URL names it."""

    kind: str  # "whip" | "whep"
    room: str
    media_id: str  # the media plane's id (announced to the room; never part of the URL)
    token_digest: bytes | None  # SHA-256 of the token that created it; None: created anonymously
    etag: str


def may_modify(resource: HttpResource | None, room: str, token: str | None, grant: Grant | None) -> bool:
    """Whether a PATCH/DELETE with ``token`` (already verified into ``grant`` for ``room``) may touch
    ``resource``: the creating token, a host token of the room, or no token for an anonymous resource."""
    if resource is None or resource.room != room:
        return False
    if resource.token_digest is None:
        return True
    if token is None or grant is None:
        return False
    return hmac.compare_digest(_digest(token), resource.token_digest) or grant.role is Role.HOST


def if_match_ok(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.1: absent or ``*`` matches; otherwise one of the listed entity tags must be ours."""
    if header is None or header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class HttpMedia:
    """The WHIP and WHEP endpoints of one node."""

    def __init__(self, media: MediaSignaling, membership: Membership, auth: HttpAuth, allow_anonymous: bool,
                 turn: TurnService | None = None) -> None:
        self.media = media
        self.turn = turn
        self.membership = membership
        self.auth = auth
        self.allow_anonymous = allow_anonymous
        self._resources: dict[str, HttpResource] = {}  # resource id (URL) -> resource

    def add_routes(self, app: web.Application) -> None:
        for kind in ("whip", "whep"):
            app.router.add_route("OPTIONS", f"/{kind}/{{room}}", self.options)
            app.router.add_route("OPTIONS", f"/{kind}/{{room}}/{{resource}}", self.options)
            app.router.add_patch(f"/{kind}/{{room}}/{{resource}}", self.patch)
            app.router.add_delete(f"/{kind}/{{room}}/{{resource}}", self.delete)
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
            media_id, answer = await start(room, grant, offer)
        except ProtocolError as exc:
            return refusal(exc, _CORS)
        self._forget_ended()
        resource_id = secrets.token_urlsafe(16)  # 128 bits: the URL is a capability
        token = bearer_token(request) if grant is not None else None
        resource = HttpResource(kind, room, media_id, _digest(token) if token else None,
                                f'"{secrets.token_urlsafe(9)}"')
        self._resources[resource_id] = resource
        response = web.Response(status=201, text=answer, content_type="application/sdp",
                                headers={**_CORS, "Location": f"/{kind}/{room}/{resource_id}", "ETag": resource.etag,
                                         "Accept-Patch": "application/trickle-ice-sdpfrag"})
        if self.turn is not None:  # RFC 9725 4.6: the ICE servers the client may use (TURN, time-limited)
            for link in self.turn.link_headers(grant.user if grant else "whep-viewer"):
                response.headers.add("Link", link)
        return response

    def _forget_ended(self) -> None:
        """Resources whose session ended without a DELETE (peer gone, connect timeout) are dropped."""
        for ended in [r for r, res in self._resources.items() if not self.media.owns_http(res.media_id)]:
            del self._resources[ended]

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

    async def _resolve(self, request: web.Request) -> tuple[str, HttpResource] | web.Response:
        """The resource a PATCH/DELETE may touch, or the answer that refuses it (404 for anything that
        would tell a stranger whether it exists)."""
        room, resource_id = request.match_info["room"], request.match_info["resource"]
        try:
            validate_room_name(room)
        except ProtocolError as exc:
            return refusal(exc, _CORS)
        token = bearer_token(request)
        grant = None
        if token is not None:
            try:
                grant = await self.auth.grant(request, room)
            except ProtocolError as exc:
                return refusal(exc, _CORS)
        kind = request.path.split("/", 2)[1]
        resource = self._resources.get(resource_id)
        if (resource is None or resource.kind != kind or not self.media.owns_http(resource.media_id)
                or not may_modify(resource, room, token, grant)):
            if token is None and (resource is None or resource.token_digest is not None):
                return refusal(ProtocolError(ErrorCode.UNAUTHORIZED, "this needs the token that created the session"),
                               _CORS)
            return _error(404, _NOT_FOUND)
        if not if_match_ok(request.headers.get("If-Match"), resource.etag):
            return _error(412, "If-Match does not match this session's ETag", ETag=resource.etag)
        return resource_id, resource

    async def patch(self, request: web.Request) -> web.Response:
        found = await self._resolve(request)
        if isinstance(found, web.Response):
            return found
        _, resource = found
        if request.content_type != "application/trickle-ice-sdpfrag":
            return _error(415, "trickle with Content-Type: application/trickle-ice-sdpfrag (ICE restarts: no)")
        text = (await request.content.read(_MAX_SDP_BYTES + 1)).decode(errors="replace")
        try:
            await self.media.candidates_http(resource.media_id, parse_sdpfrag(text))
        except ProtocolError as exc:
            return refusal(exc, _CORS)
        return web.Response(status=204, headers=_CORS)

    async def delete(self, request: web.Request) -> web.Response:
        found = await self._resolve(request)
        if isinstance(found, web.Response):
            return found
        resource_id, resource = found
        self._resources.pop(resource_id, None)
        await self.media.close_media(resource.media_id)
        return web.Response(status=200, text="ended\n", headers=_CORS)

