"""Many LL-HLS players on one node, with and without a cache in front (issue 24: part delivery and CPU per HLS
viewer beside a WebRTC viewer's).

    python -m benchmarks.hls_load --viewers 100 300 [--cache] [--duration 20] [--procs 4] [--out hls_load.jsonl]
    python -m benchmarks.hls_load --viewers 5000 --cache --wrk      # players in C: wrk, benchmarks/hls_player.lua

Each size gets a fresh ``live-relay serve`` on loopback and a publisher process (aiortc, the test pattern as
H.264, 640x480). ``--cache`` puts nginx from Debian in front with docs/deploy.md's configuration
(``proxy_cache_lock``). The players run in ``--procs`` processes, each an asyncio loop of cheap LL-HLS players
(aiohttp): the blocking playlist reload for the next part, then that part, again and again (what hls.js does
at the live edge, without decoding). For every part, the first player to have it marks when it existed; each
player's *delivery lag* is how much later it had it (CLOCK_MONOTONIC is one clock for every process). The
window: ``--duration`` seconds after 5 s of warm-up. Printed per size: parts fetched, delivery lag p50/p99,
the origin's CPU (utime+stime from /proc) per player, the origin's requests per part (its own counter, from
/metrics), nginx's CPU with ``--cache``, and the machine's other load.

``--wrk``: the players are wrk's connections (Debian's ``wrk``, ``--procs`` threads) running
benchmarks/hls_player.lua, the same fetches at a fraction of the CPU, for counts the Python players cannot
make on a small machine. wrk's script cannot tell its connections apart, so a thread's players share what the
playlists hint at; the figures are wrk's: parts answered per player, the distinct parts the stream made
meanwhile, request latency (a blocking request waits for its part: up to a part's duration, plus the cache
lock's timer behind nginx), timeouts. No per-part lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import SECRET, free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.(\d+)\.m4s"')
NGINX = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=hls:10m max_size=200m inactive=2m use_temp_path=off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /hls/ {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_http_version 1.1;
            proxy_cache hls;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 15s;
            proxy_cache_lock_age 15s;
            proxy_read_timeout 20s;
        }}
    }}
}}
"""


VARNISH = """vcl 4.1;
backend origin {{ .host = "127.0.0.1"; .port = "{origin}"; .first_byte_timeout = 20s; }}
sub vcl_recv {{ if (req.url !~ "^/hls/") {{ return (pass); }} return (hash); }}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# -- a process of players -------------------------------------------------------------------------------------

async def players(url: str, count: int, until: float) -> list[tuple[str, float]]:
    """``count`` players until ``until`` (monotonic); returns every fetch of a part: ("msn.part", when done)."""
    done: list[tuple[str, float]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def one() -> None:
            async with http.get(f"{url}/video.m3u8") as response:
                hint = HINT.search(await response.text())
            if hint is None:
                return
            epoch, msn, index = int(hint[1]), int(hint[2]), int(hint[3])
            while time.monotonic() < until:
                async with http.get(f"{url}/{epoch}.{msn}.{index}.m4s") as response:
                    if response.status == 404:  # the segment ended before that part: the next one's first
                        msn, index = msn + 1, 0
                        continue
                    await response.read()
                done.append((f"{msn}.{index}", time.monotonic()))
                params = {"_HLS_msn": str(msn), "_HLS_part": str(index + 1)}
                async with http.get(f"{url}/video.m3u8", params=params) as response:
                    text = await response.text()
                nxt = HINT.search(text)
                if nxt is not None and (int(nxt[2]), int(nxt[3])) > (msn, index + 1):
                    msn, index = int(nxt[2]), int(nxt[3]) - 1  # (fell behind: back to the live edge)
                index += 1

        await asyncio.gather(*[one() for _ in range(count)], return_exceptions=True)
    return done


def player_process(url: str, count: int, until_in: float, out: str) -> None:
    until = time.monotonic() + until_in
    Path(out).write_text(json.dumps({"done": asyncio.run(players(url, count, until))}))


# -- one size -------------------------------------------------------------------------------------------------

async def publisher(port: int) -> None:
    from clients.client import LiveClient
    from clients.media import MediaSession
    from clients.sources import CounterVideoTrack
    from protocol import Role, issue_token

    token = issue_token(SECRET, "show", "host", Role.HOST, 3600)
    async with LiveClient(f"ws://127.0.0.1:{port}/ws", "show", token) as host:
        await MediaSession.publish(host, [CounterVideoTrack(640, 480)], video_codec="H264")
        await asyncio.sleep(3600)


async def one_size(n: int, a: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = asyncio.subprocess.DEVNULL
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port), "--secret", SECRET,
        "--analytics", "off", "--max-conns-per-ip", "0", cwd=ROOT, env=env, stdout=quiet, stderr=quiet)
    procs: list[asyncio.subprocess.Process] = [server]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await asyncio.to_thread(wait_ready, port)
            pub = await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.hls_load", "--publish",
                                                       str(port), cwd=ROOT, env=env, stdout=quiet, stderr=quiet)
            procs.append(pub)
            base = f"http://127.0.0.1:{port}"
            nginx_pid = None
            if a.cache == "nginx":
                cache_port = free_port()
                conf = Path(tmp) / "nginx.conf"
                conf.write_text(NGINX.format(dir=tmp, port=cache_port, origin=port))
                nginx = await asyncio.create_subprocess_exec("nginx", "-c", str(conf), "-e", "stderr", stderr=quiet)
                procs.append(nginx)
                nginx_pid = nginx.pid
                await asyncio.to_thread(wait_ready, cache_port)
                base = f"http://127.0.0.1:{cache_port}"
            elif a.cache == "varnish":  # (its worker process's CPU is counted as the cache's, below)
                cache_port = free_port()
                vcl = Path(tmp) / "hls.vcl"
                vcl.write_text(VARNISH.format(origin=port))
                varnish = await asyncio.create_subprocess_exec(
                    "varnishd", "-F", "-j", "none", "-n", str(Path(tmp) / "varnish"), "-a", f"127.0.0.1:{cache_port}",
                    "-f", str(vcl), "-s", "malloc,256m", "-p", "thread_pool_min=500", "-p", "thread_queue_limit=5000",
                    stdout=quiet, stderr=quiet)  # (threads ready and a queue long enough for thousands at once)
                procs.append(varnish)
                await asyncio.to_thread(wait_ready, cache_port)
                nginx_pid = _child_of(varnish.pid) or varnish.pid
                base = f"http://127.0.0.1:{cache_port}"
            url = f"{base}/hls/show"
            async with aiohttp.ClientSession() as http:  # the stream started (its first whole segment)
                for _ in range(60):
                    async with http.get(f"{url}/video.m3u8") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.5)
            per = [n // a.procs + (1 if i < n % a.procs else 0) for i in range(a.procs)]
            outs = [str(Path(tmp) / f"p{i}.json") for i in range(a.procs)]
            total = 5 + a.duration
            if a.wrk:
                players_ = [await asyncio.create_subprocess_exec(
                    "wrk", f"-t{a.procs}", f"-c{n}", f"-d{int(total)}s", "--timeout", "25s", "-s",
                    str(ROOT / "benchmarks" / "hls_player.lua"), base, "--", "/hls/show/",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)]
            else:
                players_ = [await asyncio.create_subprocess_exec(
                    sys.executable, "-c", "import sys; from benchmarks.hls_load import player_process as p; "
                    f"p({url!r}, {count}, {total}, {out!r})", cwd=ROOT, env=env)
                    for count, out in zip(per, outs, strict=True)]
            procs += players_
            await asyncio.sleep(5)
            cpu0, nginx0, busy0, t0 = cpu_seconds(server.pid), cpu_seconds(nginx_pid) if nginx_pid else 0.0, \
                machine_busy(), time.monotonic()
            others0 = sum(cpu_seconds(p.pid) for p in procs if p.pid != server.pid)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    requests0 = _metric(await response.text(), "live_relay_hls_requests")
            await asyncio.sleep(a.duration)
            dt = time.monotonic() - t0
            cpu = (cpu_seconds(server.pid) - cpu0) / dt
            nginx_cpu = ((cpu_seconds(nginx_pid) - nginx0) / dt) if nginx_pid else None
            others = (sum(cpu_seconds(p.pid) for p in procs if p.pid != server.pid) - others0) / dt
            apart = nginx_cpu if nginx_pid not in {p.pid for p in procs} and nginx_cpu else 0.0  # (varnish's child)
            other_load = (machine_busy() - busy0) / dt - cpu - others - apart
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    requests = _metric(await response.text(), "live_relay_hls_requests") - requests0
            if a.wrk:
                said = (await players_[0].communicate())[0].decode(errors="replace")
                found = re.search(r"^WRK (\{.*\})$", said, re.M)
                if found is None:
                    raise SystemExit(f"wrk said: {said[-2000:]}")
                wrk = json.loads(found[1])
                done = []
            else:
                for p in players_:
                    await p.wait()
                done = [(str(part), float(at)) for out in outs
                        for part, at in json.loads(await asyncio.to_thread(Path(out).read_text))["done"]]
        finally:
            for p in procs:
                if p.returncode is None:
                    p.terminate()
            for p in procs:
                await p.wait()
    common = {"viewers": n, "cache": a.cache, "window_s": round(dt, 1), "origin_cpu": round(cpu, 3),
              "origin_cpu_per_viewer": round(cpu / n, 5),
              "cache_cpu": round(nginx_cpu, 3) if nginx_cpu is not None else None,
              "load_generator_cpu": round(others, 2), "other_load": round(other_load, 3)}
    if a.wrk:  # wrk's own figures, over its whole run (warm-up included)
        distinct = max(1, wrk["distinct_parts"])
        return {**common, "generator": "wrk", "run_s": total, "distinct_parts": wrk["distinct_parts"],
                "parts_per_viewer": round(wrk["parts"] / n, 1), "parts_answered": wrk["parts"],
                "playlists_answered": wrk["playlists"], "not_200": wrk["failed"], "timeouts": wrk["errors_timeout"],
                "request_ms_p50": wrk["latency_ms_p50"], "request_ms_p99": wrk["latency_ms_p99"],
                "origin_requests_per_part": round(requests / max(1, distinct * dt / total), 1)}
    window = [(part, at) for part, at in done if at >= t0]
    first: dict[str, float] = {}
    for part, at in window:
        first[part] = min(at, first.get(part, at))
    lags = sorted((at - first[part]) * 1000 for part, at in window)
    parts = len(first)
    return {"viewers": n, "cache": a.cache, "window_s": round(dt, 1), "parts": parts, "fetches": len(window),
            "fetches_per_part": round(len(window) / max(1, parts), 1),
            "lag_ms_p50": round(statistics.median(lags), 1) if lags else None,
            "lag_ms_p99": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 1) if lags else None,
            "origin_cpu": round(cpu, 3), "origin_cpu_per_viewer": round(cpu / n, 5),
            "origin_requests_per_part": round(requests / max(1, parts), 1),
            "cache_cpu": round(nginx_cpu, 3) if nginx_cpu is not None else None,
            "load_generator_cpu": round(others, 2), "other_load": round(other_load, 3)}


def _child_of(pid: int) -> int | None:
    """A process's first child (varnishd's worker, which serves the requests)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([\d.e+]+)$", text, re.M)
    return float(match[1]) if match else 0.0


def main() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of players: as many sockets (nginx too)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, nargs="+", default=[100])
    parser.add_argument("--cache", nargs="?", const="nginx", choices=["nginx", "varnish"],
                        help="a cache in front: nginx (proxy_cache_lock, docs/deploy.md) or varnish")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--wrk", action="store_true", help="players as wrk connections (Debian's wrk)")
    parser.add_argument("--publish", type=int, help=argparse.SUPPRESS)  # (the publisher's own process)
    parser.add_argument("--out")
    a = parser.parse_args()
    if a.publish:
        asyncio.run(publisher(a.publish))
        return
    for n in a.viewers:
        row = asyncio.run(one_size(n, a))
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
