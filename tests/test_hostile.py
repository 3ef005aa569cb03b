"""A server probed as a hostile user would: grants taken back, private rooms that close, malformed and
out-of-range input, floods of media sessions and likes. Real server on loopback, real sockets."""

from __future__ import annotations

import aiohttp
import pytest

from clients.client import ConnectionClosed, LiveClient, ServerError
from protocol import CloseCode, ErrorCode, Role


async def _seat(server, host: LiveClient, user: str) -> tuple[LiveClient, str]:
    """A signed-in viewer raises a hand and the host seats them: returns (their client, the co-host token)."""
    fan = LiveClient(server.ws_url, "show", server.token("show", user, Role.VIEWER, name=user.title()))
    await fan.connect()
    await fan.request({"type": "stage_request"})
    await host.next_event("stage_requested")
    await host.request({"type": "stage_accept", "user": user})
    return fan, (await fan.next_event("grant"))["token"]


async def _join_refused(url: str, room: str, token: str | None) -> tuple[str, int | None]:
    """Join with a raw socket: (the error code, the close code)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"type": "join", "room": room, **({"token": token} if token else {})})
        error = await ws.receive_json(timeout=10)
        closing = await ws.receive(timeout=10)
        return error.get("code"), closing.data if closing.type is aiohttp.WSMsgType.CLOSE else None


@pytest.mark.parametrize("how", ["stage_remove", "stage_leave"])
async def test_a_cohost_token_taken_back_with_the_seat_no_longer_joins(server, how):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host:
        fan, cohost_token = await _seat(server, host, "fan")
        async with LiveClient(server.ws_url, "show", cohost_token) as again:  # valid while seated
            assert again.joined["role"] == "cohost"
        if how == "stage_remove":
            await host.request({"type": "stage_remove", "user": "fan"})
        else:
            await fan.request({"type": "stage_leave"})
        assert (await fan.next_event("grant"))["role"] == "viewer"
        await fan.close()
        code, close = await _join_refused(server.ws_url, "show", cohost_token)
        assert code == ErrorCode.REVOKED and close == CloseCode.UNAUTHORIZED
        with pytest.raises(ServerError) as err:  # and the shipped client does not retry it
            await LiveClient(server.ws_url, "show", cohost_token, reconnect=True).connect()
        assert err.value.code is ErrorCode.REVOKED


async def test_a_private_room_closes_to_everyone_when_its_call_ends(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "guest")) as guest:
        await host.request({"type": "call_invite", "user": "guest"})
        await guest.next_event("call_invited")
        await guest.request({"type": "call_answer", "accept": True})
        host_grant, guest_grant = await host.next_event("call_grant"), await guest.next_event("call_grant")
        private = guest_grant["call_room"]
        async with LiveClient(server.ws_url, private, guest_grant["token"]) as inside:
            assert inside.joined["room"] == private
            await guest.request({"type": "call_end"})
            await host.next_event("call_ended")
            with pytest.raises(ConnectionClosed):  # the server closes the private room's connections
                await inside.next_event("no-such-event", timeout=10)
            assert inside.close_code == CloseCode.NORMAL
        for token in (guest_grant["token"], host_grant["token"], server.token(private, "host", Role.HOST), None):
            code, close = await _join_refused(server.ws_url, private, token)
            assert code in (ErrorCode.REVOKED, ErrorCode.FORBIDDEN), (token, code)
            assert close in (CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN)
