"""Shared fixtures: a real server on a free loopback port, in the test's event loop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web

from protocol import Role, issue_token
from signaling.app import SERVER, RelayServer, create_app, serve
from signaling.config import ServerConfig

SECRET = "test-secret-of-at-least-thirty-two-bytes"

# A missing system dependency (redis-server, Chromium, root for network namespaces) fails the tests that
# need it: a suite that goes green by skipping is not passing. Opt out explicitly with this variable; the
# summary then says which tests were skipped and why.
SKIP_MISSING = "LIVE_RELAY_SKIP_MISSING"
_skipped_for_missing: list[str] = []


def require_dependency(missing: str | None) -> None:
    """Call with None when everything is there, or with what is missing (and how to get it)."""
    if missing is None:
        return
    if os.environ.get(SKIP_MISSING) == "1":
        _skipped_for_missing.append(missing)
        pytest.skip(f"{missing} ({SKIP_MISSING}=1)")
    pytest.fail(f"missing dependency: {missing}. README's test command installs it (tools/setup.sh); "
                f"set {SKIP_MISSING}=1 to skip these tests instead", pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _skipped_for_missing:
        terminalreporter.section("NOT A FULL RUN", sep="!", red=True, bold=True)
        terminalreporter.write_line(f"{SKIP_MISSING}=1: tests skipped for missing dependencies:")
        for reason in sorted(set(_skipped_for_missing)):
            terminalreporter.write_line(f"  - {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    config: ServerConfig
    task: asyncio.Task[None]
    stop: asyncio.Event
    app: web.Application

    @property
    def relay(self) -> RelayServer:
        """The server's own objects (tests may look inside what they started)."""
        return self.app[SERVER]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}/ws"

    def token(self, room: str, user: str, role: Role | str = Role.VIEWER, ttl: float = 600.0,
              name: str | None = None) -> str:
        return issue_token(self.config.secret, room, user, role, ttl, name)

    async def shutdown(self) -> None:
        self.stop.set()
        # Past the server's own bound (ServerConfig.shutdown_deadline, 20 s), where it says what it waited on.
        await asyncio.wait_for(self.task, self.config.shutdown_deadline + 5)


StartServer = Callable[..., "asyncio.Future[RunningServer]"]


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., object]]:
    servers: list[RunningServer] = []

    async def start(config: ServerConfig | None = None, **changes: object) -> RunningServer:
        config = (config or ServerConfig(secret=SECRET)).replace(**{"port": free_port(), **changes})
        ready, stop = asyncio.Event(), asyncio.Event()
        app = create_app(config)
        task = asyncio.create_task(serve(config, ready=ready, stop=stop, app=app))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()
        server = RunningServer(config, task, stop, app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if not server.task.done():
            await server.shutdown()


@pytest.fixture
async def model() -> AsyncIterator[tuple[object, str]]:
    """A stand-in model server (tests/stand_in_model.py) and its base URL."""
    from tests.stand_in_model import StandInModel, serve_stand_in

    stand_in = StandInModel()
    runner, url = await serve_stand_in(stand_in)
    yield stand_in, url
    await runner.cleanup()


@pytest.fixture
def redis():
    """A real redis-server of the test's own on a free loopback port."""
    from tests import redis_server

    require_dependency(None if redis_server.available() else "redis-server (apt-get install redis-server)")
    server = redis_server.RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nodes(redis, start_server):
    """Two nodes sharing rooms through that redis-server. (redis first: it is torn down last, after the nodes
    have stopped, as an operator stops them; the other order left a node shutting down against a dead broker,
    which once took longer than the fixture waits, and its leftover log hooks failed a later test.)"""
    return [await start_server(rooms=("show",), redis_url=redis.url) for _ in range(2)]


@pytest.fixture
async def server(start_server: Callable[..., object]) -> RunningServer:
    return await start_server(rooms=("show",))  # type: ignore[misc,operator]


async def eventually(check, timeout: float = 10.0, interval: float = 0.1) -> None:
    """Poll an async ``check()`` until it is true (bounded by ``timeout``): for state seen only over HTTP."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the state lives in another process; nothing to await
            await asyncio.sleep(interval)


async def assert_one_order(senders: list, viewers: list, rounds: int) -> None:
    """Every sender comments ``rounds`` times concurrently; every viewer must then see the same events,
    with consecutive sequence numbers (no gaps, no repeats), in the same order."""
    for client in senders + viewers:
        await client.connect()
    try:
        await asyncio.gather(*(s.comment(f"{i}-{n}") for n in range(rounds) for i, s in enumerate(senders)))
        expected = len(senders) * rounds
        seen = []
        for viewer in viewers:
            events = [await viewer.next_event("comment") for _ in range(expected)]
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(seqs[0], seqs[0] + expected))
            seen.append([(e["seq"], e["epoch"], e["text"]) for e in events])
        assert all(s == seen[0] for s in seen)
    finally:
        for client in senders + viewers:
            await client.close()
