"""`live-relay loadtest chat`: many WebSocket viewers in one room, senders at fixed rates, and the figures.

Viewers live in worker processes (the machine's cores are shared with the server, so the generator
must be cheap or it measures itself): each is a light sink (``loadtest/sink.py``) that decodes frames
with the protocol module, checks sequence numbers (delivered / duplicate / out of order, per kind) and records
end-to-end latency against the server clock. Senders run in the main process and count what the
server acknowledged: that is what every viewer is expected to receive.
"""

from __future__ import annotations

import array
import asyncio
import math
import multiprocessing as mp
import os
import random
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import click
import numpy as np
import psutil

from clients.client import LiveClient, ServerError
from loadtest.report import CpuMeter, find_server_processes, latency_summary, plot_latency, print_table, write_json
from loadtest.shoppers import Shopper, ShopperConfig, ShopperCounts
from loadtest.sink import SinkProtocol
from protocol import ClockEstimate, Encoding, Role, issue_token, now_ms

KINDS = ("comment", "product")
PRODUCT_TEMPLATE = {"title": "Load-test item", "price": "9.99", "currency": "USD",
                    "url": "https://shop.invalid/p", "image": "https://shop.invalid/p.jpg", "stock": 100}


# ----------------------------------------------------------------------------------------------------------
# Worker process: N light viewers


@dataclass
class ViewerStats:
    base_seq: int = 0
    last_seq: int = 0
    seen: bytearray = field(default_factory=bytearray)
    delivered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    duplicates: int = 0
    out_of_order: int = 0
    closed_code: int | None = None


class WorkerViewers:
    def __init__(self, urls: list[str], room: str, count: int, encoding: Encoding, first_index: int,
                 shopper: ShopperConfig | None = None) -> None:
        self.urls = urls
        self.shopper = shopper
        self.shopper_counts = ShopperCounts()
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.room = room
        self.count = count
        self.encoding = encoding
        self.first_index = first_index
        self.clock = ClockEstimate()
        self.stats: list[ViewerStats] = []
        self.latency = {kind: array.array("d") for kind in KINDS}
        self.failed_joins: list[str] = []
        self.sinks: list[SinkProtocol] = []
        self.stop = asyncio.Event()

    def _on_event(self, stats: ViewerStats, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind != "comment" and kind != "product":
            return
        seq = event["seq"]
        idx = seq - stats.base_seq - 1
        if idx < 0:
            return
        seen = stats.seen
        if idx >= len(seen):
            seen.extend(bytes(idx - len(seen) + 4096))
        if seen[idx]:
            stats.duplicates += 1
            return
        seen[idx] = 1
        if seq < stats.last_seq:
            stats.out_of_order += 1
        else:
            stats.last_seq = seq
        stats.delivered[kind] += 1
        sent = event.get("ts")
        if sent is not None:
            self.latency[kind].append(now_ms() + self.clock.offset_ms - sent)

    async def _viewer(self, index: int) -> None:
        url = self.urls[index % len(self.urls)]
        parsed = urllib.parse.urlparse(url)
        stats = ViewerStats()
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sink = SinkProtocol(url, self.encoding, replies.put_nowait)
        try:
            await asyncio.get_running_loop().create_connection(lambda: sink, parsed.hostname or "127.0.0.1",
                                                             parsed.port or 80)
            await asyncio.wait_for(sink.handshake, 10)
        except (OSError, TimeoutError, ConnectionError) as exc:
            self.failed_joins.append(f"connect: {exc!r}")
            return
        shopper = None
        if self.shopper is not None:
            shopper = Shopper(self.shopper, index, f"http://{parsed.hostname}:{parsed.port or 80}", self.room,
                              self.shopper_counts)
        sink.send({"type": "join", "room": self.room, "name": f"lt{index}",
                   **(shopper.join_fields() if shopper is not None else {})})
        try:
            joined = await asyncio.wait_for(replies.get(), 10)
        except TimeoutError:
            joined = {"code": "timeout", "message": "no answer to join"}
        if joined.get("type") != "joined":
            self.failed_joins.append(f"{joined.get('code')}: {joined.get('message')}")
            sink.close()
            return
        stats.base_seq = stats.last_seq = joined["seq"]
        if shopper is not None:
            shopper.joined(joined)
        self.stats.append(stats)
        self.sinks.append(sink)
        if len(self.stats) == 1:  # one viewer per process measures the clock offset
            for _ in range(5):
                sent = now_ms()
                sink.send({"type": "ping", "id": "clock"})
                while (reply := await replies.get()).get("type") != "pong":
                    pass
                self.clock.add_sample(sent, reply["server_ts"], now_ms())
        while not replies.empty():
            self._on_event(stats, replies.get_nowait())
        if shopper is None:
            sink.on_message = lambda event: self._on_event(stats, event)
        else:
            sink.on_message = lambda event: self._on_shopper_event(stats, shopper, sink, event)
            if shopper.dwell is not None:
                asyncio.get_running_loop().call_later(shopper.dwell, self._leave, shopper, sink)
        sink.closed.add_done_callback(lambda f: setattr(stats, "closed_code", f.result() or -1))

    def _on_shopper_event(self, stats: ViewerStats, shopper: Shopper, sink: SinkProtocol,
                          event: dict[str, Any]) -> None:
        self._on_event(stats, event)
        product = event.get("product")
        if event.get("type") == "product" and isinstance(product, dict) and self.http is not None:
            task = asyncio.create_task(shopper.on_product(str(product.get("id")), sink.send, self.http))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _leave(self, shopper: Shopper, sink: SinkProtocol) -> None:
        if not self.stop.is_set():
            self.shopper_counts.left += 1
            sink.close()

    async def run(self, control: Connection) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(control.fileno(), self.stop.set)
        gate = asyncio.Semaphore(64)  # connect in waves, not all at once
        if self.shopper is not None:
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

        async def start(index: int) -> None:
            async with gate:
                await self._viewer(index)

        await asyncio.gather(*(start(self.first_index + i) for i in range(self.count)))
        control.send({"ready": len(self.stats), "failed": self.failed_joins[:5],
                      "failed_count": len(self.failed_joins)})
        await self.stop.wait()
        # The loop made the pipe non-blocking; the results are large, so send them blocking.
        loop.remove_reader(control.fileno())
        os.set_blocking(control.fileno(), True)
        control.recv()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        if self.http is not None:
            await self.http.close()
        for sink in self.sinks:
            sink.close()
        delivered = {kind: sum(s.delivered[kind] for s in self.stats) for kind in KINDS}
        control.send({
            "viewers": len(self.stats),
            "delivered": delivered,
            "duplicates": sum(s.duplicates for s in self.stats),
            "out_of_order": sum(s.out_of_order for s in self.stats),
            "closed": sum(1 for s in self.stats if s.closed_code is not None),
            "clock_rtt_ms": self.clock.rtt_ms,
            "latency": {kind: self.latency[kind].tobytes() for kind in KINDS},
            "shoppers": self.shopper_counts.as_dict(),
        })


def _worker_main(urls: list[str], room: str, count: int, encoding: str, first_index: int,
                 control: Connection, shopper: ShopperConfig | None = None) -> None:
    import uvloop

    viewers = WorkerViewers(urls, room, count, Encoding(encoding), first_index, shopper)
    uvloop.run(viewers.run(control))


# ----------------------------------------------------------------------------------------------------------
# Main process: senders, the clock, the report


@dataclass
class SendCounts:
    acked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


async def _paced(rate: float, duration: float, send: Any) -> None:
    """Call ``send(n)`` ``rate`` times a second for ``duration`` seconds, on a fixed schedule."""
    if rate <= 0:
        return
    start = time.monotonic()
    total = int(rate * duration)
    pending: set[asyncio.Task[None]] = set()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


Worker = tuple[mp.process.BaseProcess, Connection]


def _start_workers(urls: list[str], room: str, viewers: int, processes: int, encoding: str,
                   shopper: ShopperConfig | None = None) -> list[Worker]:
    """Viewer processes (spawned), each holding its share of the viewers."""
    ctx = mp.get_context("spawn")
    per = [viewers // processes + (1 if i < viewers % processes else 0) for i in range(processes)]
    workers: list[Worker] = []
    first = 0
    for count in per:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(urls, room, count, encoding, first, child, shopper),
                           daemon=True)
        proc.start()
        workers.append((proc, parent))
        first += count
    return workers


async def _gather_reports(workers: list[Worker]) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    return [await loop.run_in_executor(None, conn.recv) for _, conn in workers]


async def _stop_workers(workers: list[Worker]) -> list[dict[str, Any]]:
    for _, conn in workers:
        conn.send("stop")
    results = await _gather_reports(workers)
    for worker, _ in workers:
        worker.join(timeout=10)
    return results


class _Senders:
    """The host (product pushes) and enough commenting viewers to stay under the per-user comment limit."""

    def __init__(self, urls: list[str], room: str, secret: str, comment_rate: float, ack_timeout: float) -> None:
        needed = max(1, math.ceil(comment_rate / 1.5)) if comment_rate > 0 else 0
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # no cap on connections
        self.host = LiveClient(urls[0], room, issue_token(secret, room, "lt-host", Role.HOST, 3600), http=self.http)
        self.commenters = [LiveClient(urls[i % len(urls)], room,
                                      issue_token(secret, room, f"lt-sender-{i}", Role.VIEWER, 3600), http=self.http)
                           for i in range(needed)]
        self.counts = SendCounts()
        self.ack_timeout = ack_timeout

    async def connect(self) -> None:
        await self.host.connect()
        for c in self.commenters:
            await c.connect()

    async def close(self) -> None:
        for client in (self.host, *self.commenters):
            await client.close()
        await self.http.close()

    async def comment(self, n: int) -> None:
        await self._send("comment", self.commenters[n % len(self.commenters)],
                         {"type": "comment", "text": f"load {n} " + random.choice("abcdef") * 24})

    async def product(self, n: int) -> None:
        await self._send("product", self.host, {"type": "product", "product": {**PRODUCT_TEMPLATE, "id": f"lt-{n}"}})

    async def _send(self, kind: str, client: LiveClient, message: dict[str, Any]) -> None:
        try:
            await client.request(message, timeout=self.ack_timeout)
            self.counts.acked[kind] += 1
        except Exception:  # refused, timed out or disconnected: never acknowledged, counted as lost
            self.counts.refused[kind] += 1


async def _drive(senders: _Senders, comment_rate: float, product_rate: float, duration: float, ready: int,
                 progress: bool) -> None:
    """Send at the given rates for ``duration`` seconds, with a progress bar if asked."""
    t0 = time.monotonic()
    sending = asyncio.gather(_paced(comment_rate, duration, senders.comment),
                             _paced(product_rate, duration, senders.product))
    if progress:
        from tqdm import tqdm

        with tqdm(total=int(duration), unit="s", desc=f"{ready} viewers", file=sys.stderr) as bar:
            while not sending.done():
                await asyncio.wait([sending], timeout=1.0)
                bar.n = min(int(duration), int(time.monotonic() - t0))
                bar.set_postfix(comments=senders.counts.acked["comment"], products=senders.counts.acked["product"])
                bar.refresh()
    await sending


def _summarize(results: list[dict[str, Any]], counts: SendCounts, send_elapsed: float) -> dict[str, Any]:
    connected = sum(r["viewers"] for r in results)
    result: dict[str, Any] = {
        "viewers_connected": connected,
        "duplicates": sum(r["duplicates"] for r in results),
        "out_of_order": sum(r["out_of_order"] for r in results),
        "closed_during_run": sum(r["closed"] for r in results),
    }
    latencies: dict[str, np.ndarray] = {}
    total_delivered = 0
    for kind in KINDS:
        samples = np.concatenate([np.frombuffer(r["latency"][kind], dtype=np.float64) for r in results]) \
            if results else np.array([])
        latencies[kind] = samples
        delivered = sum(r["delivered"][kind] for r in results)
        total_delivered += delivered
        # Every attempted send should reach every viewer: one refused or never acknowledged is lost to all of
        # them, and counted so (it is also reported on its own as `refused`).
        attempted = counts.acked[kind] + counts.refused[kind]
        expected = attempted * connected
        result[kind] = {"attempted": attempted, "sent": counts.acked[kind], "refused": counts.refused[kind],
                        "expected": expected, "delivered": delivered, "lost": expected - delivered,
                        **latency_summary(samples)}
    result["deliveries_per_s"] = round(total_delivered / max(1e-9, send_elapsed), 1)
    result["_latency_samples"] = latencies
    return result


async def run_chat_load(urls: list[str], room: str, viewers: int, comment_rate: float, product_rate: float,
                        duration: float, secret: str, processes: int, encoding: str, drain: float,
                        progress: bool = True, shopper: ShopperConfig | None = None) -> dict[str, Any]:
    processes = max(1, min(processes, viewers or 1))
    workers = _start_workers(urls, room, viewers, processes, encoding, shopper)
    # Generous: an overloaded server acks late, and a late ack still means the event is expected.
    senders = _Senders(urls, room, secret, comment_rate, ack_timeout=duration + 60.0)
    click.echo(f"connecting 1 host and {len(senders.commenters)} commenters; {viewers} viewers in {processes} "
               "processes", err=True)
    try:
        await senders.connect()
    except (aiohttp.ClientError, OSError, ServerError) as exc:
        for worker, _ in workers:
            worker.kill()
        await senders.http.close()
        raise click.ClickException(f"could not connect to {urls[0]}: {exc}") from exc

    click.echo("senders connected; waiting for viewers", err=True)
    reports = await _gather_reports(workers)
    ready = sum(r["ready"] for r in reports)
    failed = [f for r in reports for f in r["failed"]]
    click.echo(f"{ready} viewers joined ({viewers - ready} failed)", err=True)
    if ready == 0 and viewers > 0:
        await senders.close()
        raise click.ClickException(f"no viewer could join: {failed[:3]}")

    server_procs = [p for u in urls for p in find_server_processes(u)]
    server_cpu = CpuMeter({p.pid: p for p in server_procs}.values())
    generator_cpu = CpuMeter([psutil.Process(), *(psutil.Process(p.pid) for p, _ in workers)])
    t0 = time.monotonic()
    server_cpu.start(t0)
    generator_cpu.start(t0)
    await _drive(senders, comment_rate, product_rate, duration, ready, progress)
    send_elapsed = time.monotonic() - t0
    await asyncio.sleep(drain)  # let the last events arrive
    t1 = time.monotonic()
    server_cpu.stop(t1)
    generator_cpu.stop(t1)
    results = await _stop_workers(workers)
    await senders.close()

    summary = _summarize(results, senders.counts, send_elapsed)
    return {
        "viewers": viewers, "viewers_connected": summary["viewers_connected"],
        "failed_joins": viewers - summary["viewers_connected"],
        "duration_s": round(send_elapsed, 2), "urls": urls, "processes": processes, "encoding": encoding,
        "comment_rate": comment_rate, "product_rate": product_rate,
        "duplicates": summary["duplicates"], "out_of_order": summary["out_of_order"],
        "closed_during_run": summary["closed_during_run"],
        "server_cpu_cores": server_cpu.cores, "server_rss_mb": server_cpu.rss_mb,
        "generator_cpu_cores": generator_cpu.cores,
        "machine": {"cpus": os.cpu_count(), "note": "server and load generator share this machine"},
        **{kind: summary[kind] for kind in KINDS},
        "deliveries_per_s": summary["deliveries_per_s"], "_latency_samples": summary["_latency_samples"],
        **({"shoppers": _shoppers(results, len(senders.commenters))} if shopper is not None else {}),
    }


def _shoppers(results: list[dict[str, Any]], commenters: int) -> dict[str, Any]:
    """What the simulated shoppers did, summed; the commenters are viewers too (joined with no source)."""
    merged = ShopperCounts.merge([r["shoppers"] for r in results])
    if commenters:
        merged["sources"]["direct"] = merged["sources"].get("direct", 0) + commenters
    return merged


def report(result: dict[str, Any]) -> None:
    rows = []
    for kind in KINDS:
        k = result[kind]
        rows.append([kind, k["attempted"], k["refused"], k["expected"], k["delivered"], k["lost"], k["p50_ms"],
                     k["p95_ms"], k["p99_ms"], k["max_ms"]])
    print_table(f"chat load: {result['viewers_connected']}/{result['viewers']} viewers, "
                f"{result['duration_s']} s", ["kind", "attempted", "refused/unacked", "expected", "delivered",
                                              "lost", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    print(f"\ndeliveries/s {result['deliveries_per_s']}   duplicates {result['duplicates']}   "
          f"out-of-order {result['out_of_order']}   closed during run {result['closed_during_run']}")
    if "shoppers" in result:
        s = result["shoppers"]
        print(f"shoppers: sources {s['sources']}  impressions {sum(s['impressions'].values())}  clicks "
              f"{sum(s['clicks'].values())}  orders {sum(s['orders'].values())} ({s['revenue']})  left {s['left']}"
              f"  failed {s['failed']}")
    print(f"server CPU {result['server_cpu_cores']} cores, RSS {result['server_rss_mb']} MB   "
          f"load generator CPU {result['generator_cpu_cores']} cores  (shared machine, "
          f"{result['machine']['cpus']} CPUs)")


@click.command("chat")
@click.option("--url", "urls", multiple=True, required=True, help="WebSocket URL (repeat to spread viewers).")
@click.option("--room", default="bench", help="Room name.")
@click.option("--viewers", default=100, type=int, help="Simulated viewers.")
@click.option("--comment-rate", default=10.0, type=float, help="Comments per second (all senders).")
@click.option("--product-rate", default=1.0, type=float, help="Product pushes per second.")
@click.option("--duration", default=10.0, type=float, help="Seconds of sending.")
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET", help="The server's token secret.")
@click.option("--processes", default=max(1, (os.cpu_count() or 2) - 1), type=int,
              help="Worker processes for the viewers.")
@click.option("--encoding", type=click.Choice(["msgpack", "json"]), default="msgpack",
              help="What the viewers speak.")
@click.option("--drain", default=2.0, type=float, help="Seconds to wait for late deliveries after sending.")
@click.option("--json", "json_out", default=None, help="Write the figures here as JSON.")
@click.option("--plot", "plot_out", default=None, help="Write a latency CDF plot here (PNG).")
@click.option("--sources", default=None,
              help="Shoppers: entry sources and weights, e.g. douyin=0.5,wechat=0.3,direct=0.2.")
@click.option("--dwell-mean", default=0.0, type=float,
              help="Shoppers: mean seconds a viewer stays (exponential; 0 stays to the end).")
@click.option("--click-rate", default=0.0, type=float, help="Shoppers: chance a viewer clicks a pushed product.")
@click.option("--order-rate", default=0.0, type=float, help="Shoppers: chance a click becomes an order.")
@click.option("--order-secret", default=None, envvar="LIVE_RELAY_ORDER_SECRET",
              help="The server's order webhook secret (orders are posted signed with it).")
@click.option("--seed", default=1, type=int, help="Shoppers: random seed (the same seed, the same choices).")
def chat_command(urls: tuple[str, ...], room: str, viewers: int, comment_rate: float, product_rate: float,
                 duration: float, secret: str, processes: int, encoding: str, drain: float,
                 json_out: str | None, plot_out: str | None, sources: str | None, dwell_mean: float,
                 click_rate: float, order_rate: float, order_secret: str | None, seed: int) -> None:
    """Many viewers in one room; comments and product pushes at fixed rates; latency and loss per kind.
    With any shopper option, viewers also behave like shoppers (loadtest/shoppers.py) and the figures say
    what they did, for comparison with the server's analytics report."""
    import uvloop

    shopper = None
    if sources or dwell_mean or click_rate or order_rate:
        if order_rate and not order_secret:
            raise click.UsageError("--order-rate needs --order-secret (the server's webhook secret)")
        try:
            parsed = ShopperConfig.parse_sources(sources) if sources else (("direct", 1.0),)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--sources") from None
        shopper = ShopperConfig(parsed, dwell_mean, click_rate, order_rate, order_secret, seed)
    result = uvloop.run(run_chat_load(list(urls), room, viewers, comment_rate, product_rate, duration, secret,
                                      processes, encoding, drain, shopper=shopper))
    samples = result.pop("_latency_samples")
    report(result)
    if json_out:
        write_json(json_out, result)
    if plot_out:
        plot_latency(plot_out, samples, f"chat E2E latency, {result['viewers_connected']} viewers")
