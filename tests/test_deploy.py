"""What docs/deploy.md promises: the shipped systemd unit verifies, and the command line it runs starts a
server with media on its one UDP port and a coturn beside it (here on free loopback ports)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import free_port, require_dependency

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "live-relay.service"
CLI = str(Path(sys.executable).parent / "live-relay")


def _exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_unit_verifies(tmp_path):
    require_dependency(None if shutil.which("systemd-analyze") else "systemd-analyze (apt-get install systemd)")
    unit = tmp_path / "live-relay.service"
    unit.write_text(UNIT.read_text().replace("/opt/live-relay/bin/live-relay", CLI))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_the_units_command_line_serves_media_on_one_port_with_turn(tmp_path):
    require_dependency(None if shutil.which("turnserver") else "coturn (apt-get install coturn)")
    argv = _exec_start()
    assert argv[0] == "/opt/live-relay/bin/live-relay" and argv[1] == "serve"
    http, udp, turn = free_port(), free_port(), free_port()
    args = " ".join(argv[2:]).replace("${PUBLIC_IP}", "127.0.0.1")
    args = re.sub(r"--port \d+", f"--port {http}", args)
    args = re.sub(r"--udp-port \d+", f"--udp-port {udp}", args)
    args = re.sub(r"--turn \d+", f"--turn {turn}", args)
    proc = subprocess.Popen([CLI, "serve", *shlex.split(args), "--secret", "d" * 40, "--analytics", "off"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1) as response:
                    health = json.load(response)
                break
            except OSError:
                asyncio.run(asyncio.sleep(0.1))
        assert health is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert health["status"] == "ok" and health["media"]["udp_port"] == udp
        assert health["media"]["addresses"] == ["127.0.0.1"]
        assert health["media"]["turn"] == [f"turn:127.0.0.1:{turn}?transport=udp",
                                           f"turn:127.0.0.1:{turn}?transport=tcp"]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert shutil.which("turnserver") and not subprocess.run(["pgrep", "-f", "live-relay-turn-"], capture_output=True,
                                                             text=True).stdout.strip()  # coturn went with it
