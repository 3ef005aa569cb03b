"""HTTP endpoints, the CLI, and graceful shutdown of a real `live-relay serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp

from clients.client import LiveClient
from protocol import CloseCode, Role, verify_token
from tests.conftest import free_port
from tests.test_bad_input import _metric


async def test_healthz_and_metrics(server):
    async with LiveClient(server.ws_url, "show", server.token("show", "h", Role.HOST)) as host:
        await host.comment("counted")
        await host.next_event("comment")
        async with aiohttp.ClientSession() as http:
            health = await (await http.get(server.base + "/healthz")).json()
            response = await http.get(server.base + "/metrics")
            metrics = await response.text()
    assert health["status"] == "ok" and health["connections"] == 1 and health["broker_ok"] is True
    assert response.headers["Content-Type"].startswith("text/plain")
    assert _metric(metrics, "live_relay_connections") == 1
    assert _metric(metrics, "live_relay_messages_in_total", type="comment") == 1
    assert _metric(metrics, "live_relay_messages_out_total", type="comment") == 1
    assert _metric(metrics, "live_relay_fanout_latency_seconds_count", type="comment") == 1
    assert _metric(metrics, "live_relay_uplink_latency_seconds_count", type="comment") == 1


async def _cli(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_token_command_reads_the_secret_from_the_environment():
    secret = "from-the-environment-and-thirty-two-bytes"
    code, out, _ = await _cli("token", "--room", "r1", "--user", "alice", "--role", "cohost",
                              env={"LIVE_RELAY_SECRET": secret})
    assert code == 0
    grant = verify_token(secret, out.strip())
    assert (grant.room, grant.user, grant.role) == ("r1", "alice", Role.COHOST)


async def test_sigterm_closes_clients_with_going_away_and_exits_zero():
    port = free_port()
    secret = "graceful-shutdown-secret-thirty-two-bytes"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--secret", secret, "--room", "show",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        async with asyncio.timeout(20):
            while True:
                try:
                    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_json({"type": "join", "room": "show"})
            assert (await ws.receive_json())["type"] == "joined"
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while (await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                    pass
            assert ws.close_code == CloseCode.GOING_AWAY
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        _, err = await proc.communicate()
        log_lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
        assert any(line["message"] == "listening" for line in log_lines)  # structured logs
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_shutdown_that_cannot_finish_ends_within_its_deadline_and_says_on_what(caplog):
    """A stop must stop: a part of the server whose close never returns (here a cleanup hook waiting on an
    event nobody sets, a stand-in for the worker a CI run once saw idle after SIGTERM) does not keep the
    process up past ``shutdown_deadline``; the log names what was still waiting."""
    import logging

    from signaling.app import create_app, serve
    from signaling.config import ServerConfig

    config = ServerConfig(secret="deadline-secret-of-at-least-32-bytes!!", port=free_port(), shutdown_deadline=1.0)
    app = create_app(config)
    never = asyncio.Event()

    async def close_that_never_ends(_app) -> None:
        await never.wait()

    app.on_cleanup.append(close_that_never_ends)
    ready, stop = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(serve(config, ready=ready, stop=stop, app=app))
    await asyncio.wait_for(ready.wait(), 20)
    stop.set()
    with caplog.at_level(logging.ERROR, logger="signaling.app"):
        await asyncio.wait_for(running, 15)  # (the deadline is 1 s; without it this waits forever)
    records = [r for r in caplog.records if r.getMessage() == "shutdown unfinished: giving up"]
    assert records and any("close_that_never_ends" in line for line in records[0].waiting_on), records[0].waiting_on
