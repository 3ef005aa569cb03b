"""An aiortc viewer (and optionally a WHIP publisher) run inside a client namespace of the reach lab:

    ip netns exec CLIENT_NS python -m tests.reach_client WS_URL BASE_URL [--turn udp|tcp] [--whip TOKEN]

Prints one JSON line: frames received and the time to the first one, the media path it used (the local
candidate type of the pair aioice chose), and, with ``--whip``, the WHIP POST's status and whether the
room then listed the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, read_frame
from rtc import adapter


def chosen_path(pc: RTCPeerConnection) -> str | None:
    """The local candidate type (host, srflx, prflx, relay) and transport of the pair ICE nominated."""
    for connection in adapter.ice_connections(pc):
        pair = connection._nominated.get(1)
        if pair is not None:
            return f"{pair.local_candidate.type}/{pair.local_candidate.transport}"
    return None


async def view(ws: str, turn: str | None, token: str | None, room: str = "show") -> dict[str, Any]:
    async with LiveClient(ws, room, token) as client:
        started = time.perf_counter()
        session = await MediaSession.subscribe(client, kinds=("video",), host_addresses=(), turn=turn)
        track = await session.wait_track("video", 30)
        first = await asyncio.wait_for(track.recv(), 30)
        ttff = time.perf_counter() - started
        frames = [first] + [await asyncio.wait_for(track.recv(), 10) for _ in range(9)]
        out = {"frames": len(frames), "first_frame_s": round(ttff, 3), "counter": read_frame(frames[-1])[0],
               "path": chosen_path(session.pc)}
        await session.close()
        return out


async def whip(base: str, token: str, ice: list[dict[str, Any]]) -> dict[str, Any]:
    servers = [RTCIceServer(urls=e["urls"][0], username=e.get("username"), credential=e.get("credential"))
               for e in ice]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    pc.addTransceiver(CounterVideoTrack(320, 240, start=800_000), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    auth = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        response = await http.post(base + "/whip/show", data=pc.localDescription.sdp,
                                   headers={"Content-Type": "application/sdp", **auth})
        out["whip_status"] = response.status
        if response.status == 201:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await response.text(), type="answer"))
            async with asyncio.timeout(20):
                while pc.connectionState != "connected":  # noqa: ASYNC110 - aiortc's own state
                    await asyncio.sleep(0.05)
            out["whip_connected"] = True
            out["whip_path"] = chosen_path(pc)
            await asyncio.sleep(2)  # frames flow; the scenario checks the room saw them
            out["whip_delete"] = (await http.delete(base + response.headers["Location"], headers=auth)).status
    await pc.close()
    return out


async def main(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {}
    try:
        result.update(await view(args.ws, args.turn, args.token, args.room))
        if args.whip:
            async with LiveClient(args.ws, "show", args.whip) as probe:
                ice = probe.joined.get("ice_servers") or []
            result.update(await whip(args.base, args.whip, ice))
        result["ok"] = True
    except Exception as exc:  # the scenario reports what failed
        result.update(ok=False, error=repr(exc))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("ws")
    parser.add_argument("base")
    parser.add_argument("--turn", choices=("udp", "tcp", "tls"))
    parser.add_argument("--token")
    parser.add_argument("--room", default="show")
    parser.add_argument("--whip", help="also publish over WHIP with this host token")
    asyncio.run(main(parser.parse_args()))
