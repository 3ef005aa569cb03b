"""OBS's WHIP stack, session after session (issue 26): libdatachannel (npm node-datachannel, what OBS's WHIP
output is built on) publishes over WHIP and plays over WHEP against a server in this process, SESSIONS in a
row per run, with two busy loops keeping the 2 cores loaded as a busy server's would (the failures it once
had, ~1 in 10 DTLS handshakes, showed only under load).

    python -m benchmarks.libdatachannel_handshakes --runs 3 --sessions 100

Prints, per mode and run, how many sessions connected and what the others ended in.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os

import aiohttp

from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import SECRET, running, token
from tests.conftest import free_port
from tests.test_interop import busy_loops, datachannel_sessions
from tests.test_whip import WhipClient


async def one_run(mode: str, sessions: int) -> collections.Counter[str]:
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",))
    async with running(config), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{config.port}"
        publisher = None
        if mode == "whep":  # something to play: an aiortc publisher over WHIP
            publisher = WhipClient(http, base)
            response = await publisher.start("/whip/show", token("show", "studio", Role.HOST), send=True)
            assert response.status == 201
        loops = await busy_loops(2)
        try:
            result = await datachannel_sessions(mode, f"{base}/{mode}/show",
                                                token("show", "obs", Role.HOST if mode == "whip" else Role.VIEWER),
                                                sessions)
        finally:
            for loop in loops:
                loop.kill()
                await loop.wait()
            if publisher is not None:
                await publisher.pc.close()
    return collections.Counter(r["outcome"] for r in result["results"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (then two busy loops during each run)")
    for mode in ("whip", "whep"):
        for n in range(args.runs):
            outcomes = asyncio.run(one_run(mode, args.sessions))
            print(f"{mode} run {n + 1}: {outcomes['connected']}/{args.sessions} connected"
                  + (f"; others: {dict((k, v) for k, v in outcomes.items() if k != 'connected')}"
                     if len(outcomes) > 1 or "connected" not in outcomes else ""), flush=True)


if __name__ == "__main__":
    main()
