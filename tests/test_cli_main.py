"""The command line's own behaviour (the apps it runs are tested in test_cli_clients.py)."""

from __future__ import annotations

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
