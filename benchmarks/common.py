"""What the benchmark scripts share: ports, waiting for a server, running a load test for its JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

SECRET = "benchmark-secret-of-at-least-32-bytes!!"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def run_loadtest(args: list[str], timeout: float) -> dict:
    """Run `live-relay loadtest ARGS --json FILE` quietly; return the JSON it wrote."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    try:
        subprocess.run([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "loadtest", *args,
                        "--json", path], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=timeout)
        with open(path) as f:
            return json.load(f)
    finally:
        os.unlink(path)
