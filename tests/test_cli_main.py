"""The command line's own behaviour (the apps it runs are tested in test_cli_clients.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from protocol import Role, verify_token

SECRET = "0123456789abcdef0123456789abcdef"


def test_token_loads_no_media_stack_and_signs_a_valid_grant():
    """`live-relay token` answers at once: the load-test commands (aiortc, av, numpy) load only when used."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import main\n"
        f"result = CliRunner().invoke(main, ['--no-log-json', 'token', '--room', 'shop', '--user', 'amy', "
        f"'--role', 'cohost', '--secret', '{SECRET}'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(result.output.strip())\n"
        "print(sorted(m for m in ('aiortc', 'av', 'numpy', 'aiohttp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    token, loaded = out.stdout.strip().splitlines()
    assert loaded == "[]"
    grant = verify_token(SECRET, token)
    assert (grant.room, grant.user, grant.role) == ("shop", "amy", Role.COHOST)


def test_loadtest_commands_are_listed_and_load_when_asked():
    out = subprocess.run([sys.executable, "-m", "cli.main", "loadtest", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert all(name in out for name in ("chat", "media", "call", "scenes", "baseline-server"))
    out = subprocess.run([sys.executable, "-m", "cli.main", "loadtest", "call", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "--calls" in out


# -- ordinary mistakes: one clear line, a non-zero exit, never a traceback ----------------------------------


async def _cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> tuple[int, str, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and "Unclosed" not in err, err
    assert lines and lines[-1].startswith("Error: "), err
    return lines[-1]


async def test_mistakes_get_one_clear_line(server):
    from tests.conftest import free_port

    viewer = server.token("show", "v", Role.VIEWER)
    base = f"http://127.0.0.1:{server.config.port}"
    cases = [
        (("token", "--room", "r", "--user", "u", "--secret", "short"), "at least 32 bytes"),
        (("view", "--url", f"ws://127.0.0.1:{free_port()}/ws", "--room", "show", "--duration", "1"),
         "cannot connect to"),
        (("view", "--url", base + "/wrong", "--room", "show", "--duration", "1"), "is the path /ws?"),
        (("view", "--url", server.ws_url, "--room", "nope", "--duration", "1"), "no room 'nope'"),
        (("host", "--url", server.ws_url, "--room", "show", "--token", viewer, "--duration", "1"),
         "use a host or co-host token"),
        (("call", "--url", server.ws_url, "--room", "show", "--token", "garbage", "--duration", "1"),
         "refused the token"),
        (("host", "--url", server.ws_url, "--room", "other", "--token", viewer, "--duration", "1"),
         "token is for another room"),
        (("host", "--url", server.ws_url, "--room", "show", "--token", viewer, "--products", "/no/such.yaml"),
         "does not exist"),
        (("serve", "--port", str(server.config.port), "--secret", SECRET, "--no-media"), "is in use"),
        (("serve", "--secret", SECRET, "--stun-discover", "stun server:99999"), "is not a STUN server like"),
        (("ingest", "--listen", "udp://0.0.0.0:9000", "--url", server.ws_url), "is not an rtmp:// or srt:// address"),
        (("ingest", "--listen", "srt://0.0.0.0", "--url", server.ws_url), "is not an srt://HOST:PORT address"),
        (("ingest", "--listen", "srt://0.0.0.0:9000?passphrase=short", "--url", server.ws_url), "10 to 79 characters"),
        (("ingest", "--listen", "rtmp://127.0.0.1:1935/live/stream", "--url", server.ws_url),
         "no stream key: each encoder's stream key is its own host token"),
        (("ingest", "--listen", f"rtmp://127.0.0.1:{free_port()}/live", "--url", "ws://127.0.0.1:1/ws"),
         "cannot connect to"),
        # A door that cannot open (the port is the server's own) is said in a line, the other door never opened.
        (("ingest", "--listen", f"rtmp://127.0.0.1:{server.config.port}/live", "--listen",
          f"srt://127.0.0.1:{free_port()}", "--url", server.ws_url), "nginx could not listen at rtmp://127.0.0.1"),
    ]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        typo, incomplete = Path(folder, "typo.yaml"), Path(folder, "incomplete.yaml")
        typo.write_text("products:\n  - {id: A, q: How long?, b: 1}\n")  # noqa: ASYNC240 - a test's file
        incomplete.write_text("products:\n  - {id: A, title: Silk scarf}\n")  # noqa: ASYNC240
        host = server.token("show", "h", Role.HOST)
        cases += [
            (("autohost", "--url", server.ws_url, "--room", "show", "--token", host, "--catalog", str(typo)),
             "typo.yaml: not YAML or JSON (line 2, column 24)"),
            (("autohost", "--url", server.ws_url, "--room", "show", "--token", host, "--catalog", str(incomplete)),
             "incomplete.yaml: missing field 'product.price'"),
        ]
        for args, expected in cases:
            code, _, err = await _cli(*args)
            assert code != 0, args
            assert expected in _one_clear_line(err), (args, err)


async def test_a_base_url_means_its_websocket(server):
    code, out, err = await _cli("view", "--url", f"http://127.0.0.1:{server.config.port}", "--room", "show",
                                "--duration", "1")
    assert code == 0, err
    assert "frames 0" in out and "Traceback" not in err


async def test_interactive_commands_log_plain_warnings_not_json(server):
    code, _, err = await _cli("view", "--url", server.ws_url, "--room", "show", "--duration", "1")
    assert code == 0, err
    assert not [line for line in err.splitlines() if line.startswith("{")]  # no JSON lines at a terminal
    _, help_text, _ = await _cli("serve", "--help")
    assert "LIVE_RELAY_SERVE_PORT" in help_text and "LIVE_RELAY_SECRET" in help_text


async def test_host_commands_help_and_failed_accept_and_view_comments(server):
    import asyncio

    host_token = server.token("show", "shop", Role.HOST)
    host = asyncio.create_task(_cli("host", "--url", server.ws_url, "--room", "show", "--token", host_token,
                                    "--duration", "4", stdin=b"help\naccept nobody\n"))
    await asyncio.sleep(2.0)
    from clients.client import LiveClient

    async with LiveClient(server.ws_url, "show") as watcher:
        code, _, err = await _cli("view", "--url", server.ws_url, "--room", "show", "--token",
                                  server.token("show", "ann", name="Ann"), "--duration", "2",
                                  stdin=b"hello from the terminal\n")
        assert code == 0, err
        comment = await watcher.next_event("comment", timeout=5)
        assert comment["text"] == "hello from the terminal" and comment["user"] == "ann"
        with contextlib.suppress(TimeoutError):  # "help" and "accept" are never posted as comments
            while True:
                extra = await watcher.next_event("comment", timeout=1)
                assert extra["text"] not in ("help", "accept nobody"), extra
    code, out, err = await host
    assert code == 0, err
    assert "'p' pushes the next product" in out and "could not seat nobody" in out


async def test_serve_demo_prints_the_pages_and_how_to_mint_tokens():
    import asyncio

    from tests.conftest import free_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "serve", "--demo", "--no-media", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any(line.strip().startswith("go live:") for line in lines):
                lines.append((await proc.stderr.readline()).decode())
    finally:
        proc.terminate()
        await proc.wait()
    text = "".join(lines)
    assert f"http://127.0.0.1:{port}/?view=host&room=demo&token=" in text
    secret = text.split("this run signs tokens with ", 1)[1].split()[0]
    assert f"live-relay token --secret {secret}" in text
    code, minted, err = await _cli("token", "--room", "demo", "--user", "x", "--secret", secret)
    assert code == 0, err
    assert verify_token(secret, minted.strip()).room == "demo"


def test_a_missing_dependency_fails_the_run_unless_skipping_is_asked_for(tmp_path):
    import os
    import shutil

    bin_dir = tmp_path / "bin"  # a PATH with python but no redis-server
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(shutil.which("python3") or sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("LIVE_RELAY_SKIP_MISSING", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_brokers.py", "-k", "lifecycle"]
    failed = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert failed.returncode != 0 and "missing dependency: redis-server" in failed.stdout
    skipped = subprocess.run(args, capture_output=True, text=True, timeout=120,
                             env={**env, "LIVE_RELAY_SKIP_MISSING": "1"})
    assert skipped.returncode == 0 and "NOT A FULL RUN" in skipped.stdout and "redis-server" in skipped.stdout


async def test_revoke_takes_a_leaked_token_back_and_says_so_in_one_line(server):
    import pytest

    from clients.client import LiveClient, ServerError
    from tests.conftest import free_port

    secret = server.config.secret

    leaked = server.token("show", "shop", Role.HOST, ttl=10 * 365 * 86400)
    base = f"http://127.0.0.1:{server.config.port}"
    code, out, err = await _cli("revoke", "--url", base, "--room", "show", "--token", leaked, "--secret", secret)
    assert code == 0, err
    assert out.strip().startswith("revoked jti:") and "on every node" in out
    with pytest.raises(ServerError) as refused:
        await LiveClient(server.ws_url, "show", leaked).connect()
    assert refused.value.code == "revoked"
    for args, expected in [
        (("revoke", "--url", base, "--room", "show", "--secret", secret), "say what to revoke"),
        (("revoke", "--url", base, "--room", "show", "--all", "--secret", "another-secret-of-32-bytes-or-more!"),
         "the server refused (401)"),
        (("revoke", "--url", base, "--room", "..", "--all", "--secret", secret), "not a room name"),
        (("revoke", "--url", f"http://127.0.0.1:{free_port()}", "--room", "show", "--all", "--secret", secret),
         "cannot reach"),
    ]:
        code, _, err = await _cli(*args)
        assert code != 0 and expected in _one_clear_line(err), (args, err)


def test_long_running_commands_set_a_steady_malloc_policy():
    """cli/memory.py: glibc's mallopt takes the fixed mmap threshold and the arena bound (on this Debian), and
    `serve`, `autohost` and `ingest` call it before their threads start."""
    import inspect

    from cli import main as cli_main
    from cli.memory import steady_memory

    assert steady_memory() is True
    assert 'in ("serve", "autohost", "ingest")' in inspect.getsource(cli_main.main.callback)
