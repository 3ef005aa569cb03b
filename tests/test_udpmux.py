"""The node's one UDP port (rtc/udpmux.py): the hook on its own with two aiortc peers, what it drops (garbage,
STUN for nobody, a forged integrity, a flood) without any of it reaching a session, and a real server whose
subscribers all share one socket."""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, read_frame
from protocol import Role
from rtc import adapter
from rtc.udpmux import UdpMux


async def _pair_through(mux: UdpMux) -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """An offerer on its own sockets and an answerer on the mux, connected (data channel open)."""
    offerer, answerer = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(
        RTCConfiguration(iceServers=[]))
    channel = offerer.createDataChannel("x")
    opened = asyncio.get_running_loop().create_future()
    channel.on("open", lambda: opened.done() or opened.set_result(True))
    adapter.restrict_host_addresses(offerer, ["127.0.0.1"])
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    for connection in adapter.ice_connections(answerer):
        mux.attach(connection)
    await answerer.setLocalDescription(await answerer.createAnswer())
    answer = answerer.localDescription.sdp
    assert f"127.0.0.1 {mux.port} typ host" in answer and answer.count("typ host") == 1
    await offerer.setRemoteDescription(answerer.localDescription)
    await asyncio.wait_for(opened, 10)
    return offerer, answerer


async def test_two_sessions_on_one_port_and_nothing_else_gets_in():
    mux = await UdpMux.open(["127.0.0.1"], 0)
    try:
        pairs = [await _pair_through(mux) for _ in range(2)]
        assert mux.stats.sessions == 2
        carried = mux.stats.datagrams
        # Garbage, STUN for a session that does not exist, a request with a forged integrity, a response
        # nobody asked for: each dropped and counted, from a socket no session knows.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", mux.port)
        session_ufrag = next(iter(mux._by_ufrag))
        forged = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        forged.attributes["USERNAME"] = f"{session_ufrag}:intruder"
        forged.add_message_integrity(b"not-the-password")
        unknown = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        unknown.attributes["USERNAME"] = "nobody:intruder"
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
        for data in ([b"\x17\xfe\xfd" + os.urandom(60)] * 50 + [os.urandom(200) for _ in range(50)] +
                     [bytes(unknown)] * 20 + [bytes(forged)] * 20 + [bytes(response)] * 10):
            probe.sendto(data, target)
        probe.close()
        async with asyncio.timeout(5):
            while mux.stats.datagrams < carried + 150:  # noqa: ASYNC110 - the mux's own counters
                await asyncio.sleep(0.05)
        stats = mux.stats
        assert stats.unknown_address >= 100 and stats.unknown_username == 20 and stats.bad_integrity == 20
        assert stats.not_a_request == 10
        # The two sessions still carry their data channels.
        for offerer, answerer in pairs:
            got = asyncio.get_running_loop().create_future()
            answerer.sctp.transport  # noqa: B018 - the association exists
            channel = offerer.createDataChannel("ping")
            answerer.on("datachannel", lambda ch, got=got: ch.on(
                "message", lambda m: got.done() or got.set_result(m)))
            channel.on("open", lambda channel=channel: channel.send("hello"))
            assert await asyncio.wait_for(got, 10) == "hello"
        for offerer, answerer in pairs:
            await offerer.close()
            await answerer.close()
        assert mux.stats.sessions == 0  # closing a session forgets it (and its addresses)
        assert not mux._by_address
    finally:
        mux.close()


async def test_a_server_on_one_port_holds_one_socket_for_many_subscribers(start_server):
    srv = await start_server(rooms=("show",))
    mux = srv.relay.media.router.mux
    assert mux is not None and mux.port > 0

    def udp_sockets() -> int:
        """UDP sockets this process holds (its fds whose socket inode /proc/net/udp lists)."""
        with open("/proc/self/net/udp") as table:
            inodes = {line.split()[9] for line in table.readlines()[1:]}
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        return count

    async with LiveClient(srv.ws_url, "show", srv.token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120, start=300_000)])
        before = udp_sockets()
        viewers = [LiveClient(srv.ws_url, "show") for _ in range(10)]
        subs = []
        for viewer in viewers:
            await viewer.connect()
            subs.append(await MediaSession.subscribe(viewer, kinds=("video",)))
        for sub in subs:
            frame = await asyncio.wait_for((await sub.wait_track("video", 20)).recv(), 20)
            assert read_frame(frame)[0] >= 300_000
        # Each client here (in this same process) has its own ICE socket; the server added none for its side
        # of the ten peer connections (a socket per connection would have added ten more).
        added = udp_sockets() - before
        assert added == len(viewers), added
        assert mux.stats.sessions == 11  # the publisher and ten subscribers
        async with aiohttp.ClientSession() as http:
            health = await (await http.get(srv.base + "/healthz")).json()
        assert health["media"]["udp_port"] == mux.port
        for sub in subs:
            await sub.close()
        for viewer in viewers:
            await viewer.close()
        await publisher.close()
