"""TURN: the credentials (TURN REST API scheme) and a real coturn the server starts beside itself (`serve
--turn`), on loopback: minted credentials get an allocation over UDP and TCP, forged or expired ones do not,
clients are told in `joined` and in WHIP/WHEP `Link` headers. (Clients behind a UDP-blocking firewall
using it for real: tests/test_reach.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import shutil
import time

import aiohttp
import pytest
from aioice import turn as aioice_turn

from clients.client import LiveClient
from protocol import Role
from signaling.turn import TurnService, coturn_config, turn_credentials
from tests.conftest import free_port, require_dependency


def test_credentials_follow_the_turn_rest_api_scheme():
    username, password = turn_credentials("s3cret", "alice", ttl=600, now=1_000_000)
    assert username == "1000600:alice"
    assert password == base64.b64encode(hmac.new(b"s3cret", b"1000600:alice", hashlib.sha1).digest()).decode()
    service = TurnService(("turn:h:3478?transport=udp", "turns:h:5349?transport=tcp"), "s3cret", 60)
    [entry] = service.ice_servers("bob")
    assert entry["urls"] == ["turn:h:3478?transport=udp", "turns:h:5349?transport=tcp"]
    assert entry["username"].endswith(":bob") and int(entry["username"].split(":")[0]) > time.time()
    links = service.link_headers("bob")
    assert len(links) == 2 and links[0].startswith('<turn:h:3478?transport=udp>; rel="ice-server"; username=')


def test_coturn_relays_to_the_nodes_media_addresses_only():
    config = coturn_config(listen=["10.0.0.5"], port=3478, tls_port=None, secret="x", realm="r",
                           relay_to=["10.0.0.5"])
    assert "denied-peer-ip=0.0.0.0-255.255.255.255" in config and "allowed-peer-ip=10.0.0.5" in config
    assert "allow-loopback-peers" not in config and "no-tls" in config and "use-auth-secret" in config


class _Sink:
    def connection_made(self, transport):
        pass

    def datagram_received(self, data, addr):
        pass


async def _allocate(port: int, username: str, password: str, transport: str) -> None:
    turn_transport, _ = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
        _Sink, ("127.0.0.1", port), username, password, transport=transport), 10)
    turn_transport.close()


async def test_a_coturn_beside_the_server_takes_the_credentials_it_hands_out(start_server):
    require_dependency(None if shutil.which("turnserver") else "coturn (apt-get install coturn)")
    port = free_port()
    srv = await start_server(rooms=("show",), turn_port=port)
    async with LiveClient(srv.ws_url, "show", srv.token("show", "amy")) as amy:
        [entry] = amy.joined["ice_servers"]
    assert entry["urls"] == [f"turn:127.0.0.1:{port}?transport=udp", f"turn:127.0.0.1:{port}?transport=tcp"]
    for transport in ("udp", "tcp"):  # an allocation with what the server minted
        await _allocate(port, entry["username"], entry["credential"], transport)
    expired_user, expired_password = turn_credentials(srv.relay.turn.secret, "amy", ttl=-60)
    for username, password in ((entry["username"], "forged"), (expired_user, expired_password),
                               (f"{int(time.time()) + 600}:amy", entry["credential"])):
        with pytest.raises(Exception) as refused:
            await _allocate(port, username, password, "udp")
        assert "401" in str(refused.value) or "Unauthorized" in str(refused.value), refused.value
    async with aiohttp.ClientSession() as http:  # WHEP/WHIP clients get them as RFC 9725 Link headers
        health = await (await http.get(srv.base + "/healthz")).json()
        assert health["media"]["turn"] == entry["urls"]
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
            from clients.media import MediaSession
            from clients.sources import CounterVideoTrack

            publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
            response = await http.post(srv.base + "/whep/show", data=pc.localDescription.sdp,
                                       headers={"Content-Type": "application/sdp"})
            assert response.status == 201
            links = response.headers.getall("Link")
            assert len(links) == 2 and all('rel="ice-server"' in link and "credential=" in link for link in links)
            await http.delete(srv.base + response.headers["Location"])
            await publisher.close()
        await pc.close()
