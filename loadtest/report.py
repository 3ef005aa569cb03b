"""Shared pieces of the load tests: latency summaries, process CPU, the printed table, JSON and plots."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def latency_summary(samples: np.ndarray) -> dict[str, float | None]:
    if samples.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
            "max_ms": round(float(samples.max()), 3), "mean_ms": round(float(samples.mean()), 3)}


def find_server_processes(url: str) -> list[psutil.Process]:
    """The local processes listening on the URL's port (several with `serve --workers N`)."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme in ("wss", "https") else 80)
    found: dict[int, psutil.Process] = {}
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                found[conn.pid] = psutil.Process(conn.pid)
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return []
    return list(found.values())


class CpuMeter:
    """CPU seconds used by a set of processes between ``start`` and ``stop``, in cores (s of CPU per s)."""

    def __init__(self, processes: Iterable[psutil.Process]) -> None:
        self.processes = [p for p in processes if p is not None]
        self._start: dict[int, float] = {}
        self._rss: dict[int, float] = {}
        self._t0 = 0.0
        self.cores: float | None = None
        self.rss_mb: float | None = None

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def start(self, now: float) -> None:
        self._t0 = now
        for p in self.processes:
            try:
                self._start[p.pid] = self._cpu(p)
            except psutil.Error:
                pass

    def stop(self, now: float) -> None:
        used = 0.0
        rss = 0.0
        for p in self.processes:
            try:
                used += self._cpu(p) - self._start.get(p.pid, 0.0)
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        elapsed = max(1e-9, now - self._t0)
        self.cores = round(used / elapsed, 3) if self.processes else None
        self.rss_mb = round(rss / 2**20, 1) if self.processes else None


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def write_json(path: str | Path, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def plot_latency(path: str | Path, series: dict[str, np.ndarray], title: str) -> None:
    """A latency CDF per series (log x axis), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, samples in series.items():
        if samples.size == 0:
            continue
        data = np.sort(samples)
        ax.plot(np.maximum(data, 1e-3), np.linspace(0, 1, data.size), label=f"{name} (n={data.size})")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
