"""live-relay's media plane side by side with Janus 1.1.2 on the same stream (loopback only).

    python -m benchmarks.sfu_vs_janus --subs 10 25 50 --runs 3 --duration 20 [--out sfu_vs_janus.jsonl]
                                      [--servers janus live-relay baseline --baseline-ref REV]

For each run and each N, Janus and then live-relay (in turn, so each pair shares the machine's state) get
a fresh server (``baseline``: live-relay's server at git revision REV, from a worktree, with today's
clients), one publisher (../shared/janus-side-by-side's synthetic 640x480 30 fps VP8, encoder
pinned at 1.5 Mbit/s) and N non-decoding aiortc subscribers in ceil(N/5) processes. Once every subscriber
has its first frame and 3 s have passed, a window of --duration seconds measures:

- the server's CPU (utime+stime from /proc) per subscriber, the other load on the machine during the
  window (cores used by processes outside the benchmark), each subscriber's frame rate;
- the server's memory per subscriber: RSS with the publisher alone, then with the N subscribers;
- the server's CPU with the publisher alone (the last 5 s before the subscribers come), and so each
  subscriber's own cost: (CPU in the window - CPU alone) / N, beside core/sub (which carries the publisher);
- then a --capture-s second capture on lo (tcpdump, headers only) after the CPU window: every video
  packet the server receives from the publisher is matched with each subscriber's copy (the RTP header
  is clear text under SRTP; each copy's sequence number and timestamp are the original plus a constant
  per subscriber), giving the relay-added latency on the wire per packet and copy, and the spread
  between the first and the last subscriber's copy of a packet.

Needs `apt-get install -y janus tcpdump`, root for the capture, and `pip install dpkt` (the `bench`
extra). Prints a JSON line per window and, at the end, the markdown table of medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dpkt

from benchmarks.common import SECRET, free_port
from benchmarks.relay_client import JANUS_DIR

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def udp_ports(pid: int) -> set[int]:
    """The UDP ports the process holds (its ICE sockets)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


async def wait_quiet(max_wait: float = 60, threshold: float = 0.10) -> float:
    """Wait until the machine is idle (busy under ``threshold`` over 2 s); return the last busy fraction."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_busy()
        await asyncio.sleep(2)
        b1 = machine_busy()
        fraction = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if fraction < threshold or time.monotonic() > deadline:
            return round(fraction, 3)


class Child:
    """A process we started, reading its JSON lines: the first {"event": ...} line and the latest stats."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc, self.last = name, proc, None
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if "event" in data:
                if not self.ready.done():
                    self.ready.set_result(data)
            else:
                self.last = data
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"{self.name} exited"))


async def spawn(name: str, args: list[str], log: Any) -> Child:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=log,
                                                start_new_session=True, cwd=ROOT,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    return Child(name, proc)


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """SIGTERM a child we started (by its PID), SIGKILL after ``grace``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def baseline_tree(ref: str | None) -> Path:
    """A worktree of this repository at ``ref`` (made once, under the system's temporary directory)."""
    if not ref:
        raise SystemExit("--servers baseline needs --baseline-ref REV")
    rev = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"live-relay-baseline-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                       capture_output=True)
    return tree


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def analyse_capture(path: str, server_ports: set[int], publisher_ssrc: int) -> dict[str, Any]:
    """Match each video packet into the server with every subscriber's copy out of it."""
    inbound: dict[int, tuple[float, int]] = {}  # seq -> (time, timestamp), first sighting
    outbound: dict[tuple[int, int], list[tuple[float, int, int]]] = {}  # (dst port, ssrc) -> (t, seq, ts)
    with open(path, "rb") as f:
        for when, frame in dpkt.pcap.Reader(f):
            try:
                ip = dpkt.ethernet.Ethernet(frame).data
                udp = ip.data
            except (dpkt.UnpackError, AttributeError):
                continue
            if not isinstance(udp, dpkt.udp.UDP):
                continue
            rtp = bytes(udp.data)
            if len(rtp) < 12 or rtp[0] & 0xC0 != 0x80 or 72 <= rtp[1] & 0x7F <= 76:
                continue  # not RTP (STUN, DTLS, RTCP)
            seq, timestamp, ssrc = int.from_bytes(rtp[2:4], "big"), int.from_bytes(rtp[4:8], "big"), \
                int.from_bytes(rtp[8:12], "big")
            if udp.dport in server_ports and udp.sport not in server_ports:
                if ssrc == publisher_ssrc and seq not in inbound:
                    inbound[seq] = (when, timestamp)
            elif udp.sport in server_ports and udp.dport not in server_ports:
                outbound.setdefault((udp.dport, ssrc), []).append((when, seq, timestamp))
    latencies: list[float] = []
    copies: dict[int, list[float]] = {}  # inbound seq -> times its copies left
    matched_streams = 0
    for packets in outbound.values():
        # This copy's constant offsets, found from its packets against the inbound ones they can be.
        votes: dict[tuple[int, int], int] = {}
        for when, seq, timestamp in packets[:200]:
            for in_seq, (in_when, in_ts) in inbound.items():
                if 0 <= when - in_when < 0.5:
                    key = ((seq - in_seq) & 0xFFFF, (timestamp - in_ts) & 0xFFFFFFFF)
                    votes[key] = votes.get(key, 0) + 1
        if not votes:
            continue
        (seq_offset, ts_offset), count = max(votes.items(), key=lambda kv: kv[1])
        if count < 20:
            continue  # not a copy of the publisher's video (audio, RTX, another stream)
        matched_streams += 1
        for when, seq, timestamp in packets:
            origin = inbound.get((seq - seq_offset) & 0xFFFF)
            if origin is None or (origin[1] + ts_offset) & 0xFFFFFFFF != timestamp:
                continue
            delay = when - origin[0]
            if 0 <= delay < 5:
                latencies.append(delay * 1000)
                copies.setdefault((seq - seq_offset) & 0xFFFF, []).append(when)
    spreads = [(max(t) - min(t)) * 1000 for t in copies.values() if len(t) == matched_streams and len(t) > 1]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {"capture_streams": matched_streams, "capture_packets_in": len(inbound),
            "latency_ms_p50": rounded(percentile(latencies, 50)), "latency_ms_p95": rounded(percentile(latencies, 95)),
            "latency_ms_max": rounded(max(latencies) if latencies else None),
            "spread_ms_p50": rounded(percentile(spreads, 50)), "spread_ms_p95": rounded(percentile(spreads, 95))}


async def one_window(server_kind: str, n: int, a: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    quiet = await wait_quiet()
    log = open(logdir / f"{server_kind}_n{n}.log", "w")  # noqa: ASYNC230 (a log file, closed in finally)
    children: list[Child] = []
    server: asyncio.subprocess.Process | None = None
    py = sys.executable
    try:
        if server_kind == "janus":
            server = await asyncio.create_subprocess_exec(str(JANUS_DIR / "janus" / "run_janus.sh"), stdout=log,
                                                          stderr=log, start_new_session=True)
            await wait_port(8188)
            pub = await spawn("pub", [py, str(JANUS_DIR / "janus_client.py"), "pub", "--kbps", str(a.kbps)], log)
        else:
            port = free_port()
            tree = baseline_tree(a.baseline_ref) if server_kind == "baseline" else ROOT
            server = await asyncio.create_subprocess_exec(
                py, "-m", "cli.main", "--log-level", "WARNING", "serve", "--port", str(port), "--secret", SECRET,
                "--max-conns-per-ip", "0", "--analytics", "off", stdout=log, stderr=log, start_new_session=True,
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)})
            await wait_port(port)
            url = f"ws://127.0.0.1:{port}/ws"
            pub = await spawn("pub", [py, "-m", "benchmarks.relay_client", "pub", "--url", url, "--secret", SECRET,
                                      "--kbps", str(a.kbps)], log)
        children.append(pub)
        published = await asyncio.wait_for(pub.ready, 30)
        # The publisher's own buffers fill first (live-relay keeps its last GOP, ~1.5 MB at 1.5 Mbit/s, full
        # after ~8 s): measured after 2 s they were counted as the subscribers' memory.
        # The publisher alone, its last 5 s: what the server spends before anyone watches (its receive path,
        # estimates, kept GOP), against which each subscriber's own cost is read.
        await asyncio.sleep(max(a.alone_s - 5.0, 0.0))
        alone0, alone_t0 = cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(min(a.alone_s, 5.0))
        cpu_alone = (cpu_seconds(server.pid) - alone0) / (time.monotonic() - alone_t0)
        rss_alone = rss_mb(server.pid)
        for k in range(math.ceil(n / a.per_proc)):
            count = min(a.per_proc, n - k * a.per_proc)
            if server_kind == "janus":
                args = [py, str(JANUS_DIR / "janus_client.py"), "sub", "--feed", str(published["feed"]),
                        "--count", str(count), "--no-decode"]
            else:
                args = [py, "-m", "benchmarks.relay_client", "sub", "--url", url, "--count", str(count)]
            children.append(await spawn(f"sub{k}", args, log))
        subs = children[1:]
        for child in subs:
            await asyncio.wait_for(child.ready, 120)
        await asyncio.sleep(a.settle)
        pids = {"server": server.pid, **{c.name: c.proc.pid for c in children}}
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        busy0, _total0 = machine_busy()
        # Frame counts come once a second with the child's own clock: rates use those times, not ours.
        frames0 = [(c.last["t"], list(c.last["frames"])) for c in subs]  # type: ignore[index]
        pub0 = dict(pub.last or {})
        t0 = time.monotonic()
        await asyncio.sleep(a.duration)
        dt = time.monotonic() - t0
        cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
        busy1, _total1 = machine_busy()
        frames1 = [(c.last["t"], list(c.last["frames"])) for c in subs]  # type: ignore[index]
        pub1 = dict(pub.last or {})
        rss_all = rss_mb(server.pid)
        fps = [(y - x) / (tb - ta) for (ta, fa), (tb, fb) in zip(frames0, frames1, strict=True)
               for x, y in zip(fa, fb, strict=True)]
        pub_dt = pub1["t"] - pub0["t"] if pub1 and pub0 else 0
        used = {k: (cpu1[k] - cpu0[k]) / dt for k in pids}
        row: dict[str, Any] = {
            "server": server_kind, "subs": n, "window_s": round(dt, 1),
            "server_cpu": round(used["server"], 4),
            "server_cpu_per_sub": round(used["server"] / n, 5),
            "server_cpu_alone": round(cpu_alone, 4),  # the publisher alone, before the subscribers came
            "server_cpu_marginal_per_sub": round((used["server"] - cpu_alone) / n, 5),
            "pub_cpu": round(used["pub"], 3),
            "subs_cpu": round(sum(v for k, v in used.items() if k.startswith("sub")), 3),
            # Cores used by anything outside this benchmark during the window (above ~0.2: contaminated).
            "other_cpu": round((busy1 - busy0) / TICK / dt - sum(used.values()), 3),
            "idle_before": quiet,
            "pub_fps": round((pub1["frames_made"] - pub0["frames_made"]) / pub_dt, 1) if pub_dt else None,
            "pub_kbps": round((pub1["bytes_sent"] - pub0["bytes_sent"]) * 8 / pub_dt / 1000) if pub_dt else None,
            "sub_fps_mean": round(statistics.fmean(fps), 1), "sub_fps_min": round(min(fps), 1),
            "rss_mb_per_sub": round((rss_all - rss_alone) / n, 3),
        }
        if a.capture_s > 0:
            ports = udp_ports(server.pid)
            with tempfile.NamedTemporaryFile(suffix=".pcap", delete=False) as tmp:
                pcap = tmp.name
            dump = await asyncio.create_subprocess_exec(
                "tcpdump", "-i", "lo", "-s", "96", "-B", "16384", "-w", pcap, "-U", "udp",
                stdout=asyncio.subprocess.DEVNULL, stderr=log, start_new_session=True)
            await asyncio.sleep(a.capture_s)
            await stop(dump)
            row.update(analyse_capture(pcap, ports, published["ssrc"]))
            os.unlink(pcap)
        return row
    finally:
        for child in reversed(children):
            await stop(child.proc)
        if server is not None:
            await stop(server, grace=8)
        log.close()


def table(rows: list[dict[str, Any]]) -> str:
    """Medians over the runs, a line per (subscribers, server), with the ratio to Janus's CPU."""

    def med(server: str, n: int, key: str) -> float | None:
        values = [r[key] for r in rows if r["server"] == server and r["subs"] == n and r.get(key) is not None]
        return round(statistics.median(values), 5) if values else None

    lines = ["| subs | server | runs | core/sub | vs Janus | publisher alone (cores) | each sub's own (core) "
             "| vs Janus | latency p50 / p95 ms | copy spread p50 / p95 ms | fps min | MB/sub | other load (cores) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sorted({r["subs"] for r in rows}):
        janus = med("janus", n, "server_cpu_per_sub")
        janus_own = med("janus", n, "server_cpu_marginal_per_sub")
        for server in ("janus", "live-relay", "baseline"):
            mine = [r for r in rows if r["subs"] == n and r["server"] == server]
            if not mine:
                continue
            cpu = med(server, n, "server_cpu_per_sub")
            ratio = f"{cpu / janus:.2f}x" if cpu and janus else "-"
            own = med(server, n, "server_cpu_marginal_per_sub")
            own_ratio = f"{own / janus_own:.2f}x" if own and janus_own else "-"
            other = sorted(r["other_cpu"] for r in mine)
            lines.append(
                f"| {n} | {server} | {len(mine)} | {cpu} | {ratio} | {med(server, n, 'server_cpu_alone')}"
                f" | {own} | {own_ratio}"
                f" | {med(server, n, 'latency_ms_p50')} / {med(server, n, 'latency_ms_p95')}"
                f" | {med(server, n, 'spread_ms_p50')} / {med(server, n, 'spread_ms_p95')}"
                f" | {med(server, n, 'sub_fps_min')} | {med(server, n, 'rss_mb_per_sub')} | {other[0]}..{other[-1]} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--settle", type=float, default=3)
    parser.add_argument("--capture-s", type=float, default=3)
    parser.add_argument("--per-proc", type=int, default=5)
    parser.add_argument("--alone-s", type=float, default=10.0,
                        help="seconds with the publisher alone before its memory is read (its CPU: the last 5)")
    parser.add_argument("--kbps", type=int, default=1500)
    parser.add_argument("--servers", nargs="+", default=["janus", "live-relay"],
                        choices=["janus", "live-relay", "baseline"])
    parser.add_argument("--baseline-ref", help="git revision whose server the 'baseline' rows run")
    parser.add_argument("--out", default="sfu_vs_janus.jsonl")
    a = parser.parse_args()
    logdir = Path(os.path.abspath(a.out)).parent / "sfu-vs-janus-logs"  # noqa: ASYNC240 (before any task)
    logdir.mkdir(exist_ok=True)
    rows = []
    for run in range(a.runs):
        for n in a.subs:
            for server in a.servers:
                row = await one_window(server, n, a, logdir)
                row["run"] = run + 1
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(a.out, "a") as f:  # noqa: ASYNC230 (between windows, nothing else runs)
                    f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
