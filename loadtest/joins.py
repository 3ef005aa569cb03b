"""`live-relay loadtest joins`: a flash crowd. Thousands of viewers connect and join at the same instant.

Viewer processes (spawned) each prepare their share, then on one signal open every connection at once:
TCP connect, WebSocket upgrade, ``join``. Each viewer's time is from the signal to its ``joined``. The
server's CPU over the crowd is read from the process listening on the URL's port, so CPU per join can be
compared between crowds, room sizes (``--waves``: the room keeps the earlier waves' viewers) and servers
(`live-relay loadtest baseline-server` answers ``join`` with a bare ``joined``: the floor).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sys
import time
import urllib.parse
from multiprocessing.connection import Connection
from typing import Any

import click
import numpy as np
import psutil

from loadtest.report import find_server_processes, print_table, write_json
from loadtest.sink import SinkProtocol
from protocol import Encoding


async def _crowd(url: str, room: str, count: int, control: Connection) -> None:
    loop = asyncio.get_running_loop()
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    sinks: list[SinkProtocol] = []
    control.send("ready")
    await loop.run_in_executor(None, control.recv)  # go
    started = time.monotonic()

    async def one(index: int) -> float | str:
        joined: asyncio.Future[dict[str, Any]] = loop.create_future()

        def on_message(message: dict[str, Any]) -> None:
            if not joined.done():
                joined.set_result(message)

        sink = SinkProtocol(url, Encoding.JSON, on_message)
        try:
            await loop.create_connection(lambda: sink, host, port)
            await asyncio.wait_for(sink.handshake, 30)
            sink.send({"type": "join", "room": room})
            reply = await asyncio.wait_for(joined, 30)
        except (OSError, TimeoutError, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}"
        sinks.append(sink)
        if reply.get("type") != "joined":
            return f"{reply.get('code')}: {reply.get('message')}"
        return (time.monotonic() - started) * 1000

    results = await asyncio.gather(*(one(i) for i in range(count)))
    control.send(results)
    await loop.run_in_executor(None, control.recv)  # the whole crowd is measured: leave
    for sink in sinks:
        sink.close()


def _worker_main(url: str, room: str, count: int, control: Connection) -> None:
    import uvloop

    uvloop.run(_crowd(url, room, count, control))


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


async def run_joins(url: str, room: str, viewers: int, waves: int, processes: int) -> dict[str, Any]:
    """``waves`` crowds of ``viewers`` each, one after the other, into the same room (which keeps them)."""
    ctx = mp.get_context("spawn")
    server = find_server_processes(url)
    loop = asyncio.get_running_loop()
    rows: list[dict[str, Any]] = []
    held: list[tuple[mp.process.BaseProcess, Connection]] = []
    for wave in range(waves):
        per = [viewers // processes + (1 if i < viewers % processes else 0) for i in range(processes)]
        workers: list[tuple[mp.process.BaseProcess, Connection]] = []
        for count in per:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(url, room, count, child), daemon=True)
            proc.start()
            workers.append((proc, parent))
        for _, conn in workers:
            await loop.run_in_executor(None, conn.recv)  # ready
        cpu_before, t0 = _cpu_seconds(server), time.monotonic()
        for _, conn in workers:
            conn.send("go")
        results: list[float | str] = []
        for _, conn in workers:
            results += await loop.run_in_executor(None, conn.recv)
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(server) - cpu_before
        times = np.array([r for r in results if isinstance(r, float)])
        failures = [r for r in results if isinstance(r, str)]
        rows.append({
            "wave": wave + 1, "room_before": wave * viewers, "viewers": viewers, "joined": int(times.size),
            "failed": len(failures), "failures": sorted(set(failures))[:5],
            "all_joined_s": round(float(times.max()) / 1000, 3) if times.size else None,
            "join_ms_p50": round(float(np.percentile(times, 50)), 1) if times.size else None,
            "join_ms_p95": round(float(np.percentile(times, 95)), 1) if times.size else None,
            "server_cpu_s": round(cpu, 3), "server_cpu_ms_per_join": round(cpu * 1000 / max(1, times.size), 3),
            "window_s": round(elapsed, 3),
        })
        held += workers
    for _, conn in held:
        conn.send("leave")
    for worker, _ in held:
        worker.join(timeout=20)
    return {"url": url, "room": room, "processes": processes, "waves": rows,
            "server_processes": [p.pid for p in server],
            "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                        "note": "server and the crowd's processes share this machine"}}


@click.command("joins")
@click.option("--url", required=True, help="WebSocket URL, e.g. ws://127.0.0.1:8080/ws")
@click.option("--room", default="bench", show_default=True, help="An existing room (anonymous viewers join it).")
@click.option("--viewers", default=1000, show_default=True, help="Viewers per wave, all at once.")
@click.option("--waves", default=1, show_default=True, help="Crowds one after another; the room keeps them all.")
@click.option("--processes", default=4, show_default=True, help="Processes the crowd is spread over.")
@click.option("--json", "json_out", default=None, help="Write the figures here.")
def joins_command(url: str, room: str, viewers: int, waves: int, processes: int, json_out: str | None) -> None:
    """A flash crowd: N viewers connect and join at the same instant; time to all joined, CPU per join."""
    import uvloop

    result = uvloop.run(run_joins(url, room, viewers, waves, max(1, processes)))
    print_table(f"flash crowd against {url}", ["wave", "room before", "joined", "failed", "all joined s",
                                              "p50 ms", "p95 ms", "server CPU ms/join"],
                [[w["wave"], w["room_before"], w["joined"], w["failed"], w["all_joined_s"], w["join_ms_p50"],
                  w["join_ms_p95"], w["server_cpu_ms_per_join"]] for w in result["waves"]])
    if json_out:
        write_json(json_out, result)
    if any(w["failed"] for w in result["waves"]):
        print(f"failures: {[w['failures'] for w in result['waves']]}", file=sys.stderr)
        raise SystemExit(1)
