"""Reachability scenarios, run inside the server namespace of a ``tests.netlab.ReachLab``:

    ip netns exec SERVER_NS python -m tests.reach_scenarios SCENARIO OUT_DIR CLIENT_NS [--tries N]

A live-relay server on the lab's address (media on its one UDP port, coturn beside it), a host publishing
from Python on loopback, and in the client namespace a Chromium viewer page and an aiortc viewer (a
``tests.reach_client`` process), ``--tries`` times each. The test (tests/test_reach.py) has already put the
lab's firewall, UDP block or NAT in place; this only watches what gets through. Writes
OUT_DIR/SCENARIO.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack
from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import CHROMIUM_ARGS, SECRET, WEB_ROOT, running, token, wait_for
from tests.netlab import SERVER_ADDRESS

HTTP_PORT, UDP_PORT, TURN_PORT = 8080, 7882, 3478
# What each scenario expects to be given to viewers, and what the aiortc viewer asks aioice to use.
SCENARIOS: dict[str, dict[str, Any]] = {
    "firewall": {"turn": None, "whip": True},
    "udp_blocked": {"turn": "tcp", "whip": False},
    "nat": {"turn": None, "whip": False},
}


async def browser_viewer(browser: Any, base: str, user: str) -> dict[str, Any]:
    page = await browser.new_page()
    started = time.monotonic()
    try:
        await page.goto(f"{base}/?view=viewer&room=show&token={token('show', user, Role.VIEWER, user)}")
        await wait_for(page, "window.liveRelay.framesDecoded > 0", timeout=40)
        first = time.monotonic() - started
        path = await wait_for(page, "window.liveRelay.mediaPath", timeout=10)
        shown = await page.text_content("#stat-path")
        return {"ok": True, "first_frame_s": round(first, 3), "path": path, "shown": shown}
    except Exception as exc:
        return {"ok": False, "error": repr(exc)[:300]}
    finally:
        await page.close()


async def python_viewer(client_ns: str, base: str, ws: str, turn: str | None, whip: bool, user: str) -> dict:
    argv = ["ip", "netns", "exec", client_ns, sys.executable, "-m", "tests.reach_client", ws, base,
            "--token", token("show", user, Role.VIEWER, user)]
    if turn:
        argv += ["--turn", turn]
    if whip:
        argv += ["--whip", token("show", "studio", Role.COHOST, "Studio")]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    lines = out.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {"ok": False, "error": err.decode()[-500:]}


async def _publisher_joined(client: LiveClient, user: str) -> bool:
    """Whether a ``media`` publisher_joined of ``user`` is among the events ``client`` has queued."""
    try:
        while True:
            event = await client.next_event("media", timeout=0.5)
            if event.get("event") == "publisher_joined" and event.get("user") == user:
                return True
    except TimeoutError:
        return False


async def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    wrapper = out / f"chromium-in-{args.client_ns}.sh"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {args.client_ns} /usr/bin/chromium "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    scenario = SCENARIOS[args.scenario]
    config = ServerConfig(secret=SECRET, host="0.0.0.0", port=HTTP_PORT, rooms=("show",), web_root=WEB_ROOT,
                          ice_addresses=("127.0.0.1", SERVER_ADDRESS), udp_port=UDP_PORT, turn_port=TURN_PORT,
                          turn_host=SERVER_ADDRESS)
    base, ws = f"http://{SERVER_ADDRESS}:{HTTP_PORT}", f"ws://{SERVER_ADDRESS}:{HTTP_PORT}/ws"
    result: dict[str, Any] = {"scenario": args.scenario, "browser": [], "python": []}
    try:
        async with running(config) as relay, async_playwright() as pw, \
                LiveClient(f"ws://127.0.0.1:{HTTP_PORT}/ws", "show", token("show", "host", Role.HOST)) as host:
            publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240, start=100_000)])
            browser = await pw.chromium.launch(executable_path=str(wrapper), args=[
                *CHROMIUM_ARGS[:-3], f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {SERVER_ADDRESS}",
                f"--unsafely-treat-insecure-origin-as-secure={base}", "--autoplay-policy=no-user-gesture-required"])
            try:
                for n in range(args.tries):
                    result["browser"].append(await browser_viewer(browser, base, f"page{n}"))
                    result["python"].append(await python_viewer(args.client_ns, base, ws, scenario["turn"],
                                                                scenario["whip"] and n == 0, f"py{n}"))
                    if scenario["whip"] and n == 0:  # the room heard of the WHIP stream from the client namespace
                        result["whip_seen_by_room"] = await _publisher_joined(host, "studio")
            finally:
                await browser.close()
                await publisher.close()
            result["mux"] = {k: getattr(relay.media.router.mux.stats, k) for k in
                             ("datagrams", "unknown_address", "unknown_username", "bad_integrity", "not_a_request")}
            result["ok"] = True
    except Exception as exc:
        result.update(ok=False, error=repr(exc))
    result["load"] = os.getloadavg()
    (out / f"{args.scenario}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("out")
    parser.add_argument("client_ns")
    parser.add_argument("--tries", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
