"""Lighthouse on the viewer page (issue 27's targets: accessibility and best practices >= 95, performance >= 90
on the mobile preset), against a demo server on loopback.

    python -m benchmarks.lighthouse [--runs 3] [--page viewer|host|start] [--out lighthouse.jsonl]
    python -m benchmarks.lighthouse --first-frame 5     # the viewer page's first video frame after load

Starts ``live-relay serve --demo`` on a free loopback port (its synthetic host publishes at once), then runs
Lighthouse 12.2.3 (npm, installed on first use into ~/.cache/live-relay/lighthouse; pinned: later 12.x locks
are refused by npm ci, 13 wants Node 22) with Debian's Chromium, headless, on the page's address, --runs
times. Prints each run's category scores and the audits that did not pass, then the medians. Lighthouse's
mobile preset simulates a mid-range phone on slow 4G (its "simulate" throttling), so the figures do not
depend much on this machine's load; the machine's load is printed beside them anyway.

With --first-frame N it measures instead, N times, the viewer page's first video frame after load on
loopback: a fresh headless Chromium page (Playwright, the flags of the browser tests) opens the viewer's
address, and the page itself says (``performance.now()``, polled every 10 ms) when its stage video first has
a frame to show (readyState >= 2, a decoded frame), counted from the navigation's start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import free_port

VERSION = "12.2.3"
CACHE = Path.home() / ".cache" / "live-relay" / "lighthouse"
CHROME_FLAGS = ("--headless=new --no-sandbox --disable-gpu --no-first-run --disable-background-networking "
                "--disable-component-update --disable-sync --allow-loopback-in-peer-connection "
                "--host-resolver-rules='MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'")
CATEGORIES = ("performance", "accessibility", "best-practices")


def lighthouse() -> Path:
    binary = CACHE / "node_modules" / ".bin" / "lighthouse"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "i", "-E", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(CACHE),
                        f"lighthouse@{VERSION}"], check=True)
    return binary


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"the demo server did not listen on {port} within {timeout:g} s")


def one_run(binary: Path, url: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([str(binary), url, "--quiet", "--output=json", f"--output-path={report}",
                        f"--only-categories={','.join(CATEGORIES)}", f"--chrome-flags={CHROME_FLAGS}"],
                       check=True, env={**os.environ, "CHROME_PATH": "/usr/bin/chromium"}, timeout=300)
        data = json.loads(report.read_text())
    scores = {c: round(data["categories"][c]["score"] * 100) for c in CATEGORIES}
    failing = {}
    for category in CATEGORIES:
        for ref in data["categories"][category]["auditRefs"]:
            audit = data["audits"][ref["id"]]
            if ref["weight"] and audit["score"] is not None and audit["score"] < 0.9:
                failing[ref["id"]] = f"{audit['title']} ({audit.get('displayValue', audit['score'])})"
    metrics = {k: round(data["audits"][k]["numericValue"]) for k in
               ("first-contentful-paint", "largest-contentful-paint", "total-blocking-time", "speed-index")}
    metrics["cumulative-layout-shift"] = round(data["audits"]["cumulative-layout-shift"]["numericValue"], 3)
    return {"scores": scores, "metrics_ms": metrics, "failing": failing}


FIRST_FRAME = """() => new Promise((resolve) => {
    const look = () => {
        const v = document.querySelector('#stage video');
        if (v && v.readyState >= 2 && v.videoWidth > 0) resolve(performance.now()); else setTimeout(look, 10);
    };
    look(); })"""


async def first_frames(url: str, n: int) -> list[float]:
    from playwright.async_api import async_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--allow-loopback-in-peer-connection",
             "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--autoplay-policy=no-user-gesture-required"]
    out = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        try:
            for _ in range(n):
                context = await browser.new_context(viewport={"width": 390, "height": 844})
                page = await context.new_page()
                await page.goto(url, wait_until="commit")
                out.append(round(await page.evaluate(FIRST_FRAME), 1))
                await context.close()
        finally:
            await browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page", choices=("viewer", "host", "start"), default="viewer")
    parser.add_argument("--out", default="lighthouse.jsonl")
    parser.add_argument("--first-frame", type=int, default=0, metavar="N",
                        help="measure the viewer page's first video frame after load N times instead")
    a = parser.parse_args()
    binary = lighthouse() if not a.first_frame else None
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", "--demo",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_for_port(port)
        time.sleep(3)  # (the demo host's first keyframe)
        query = {"viewer": "?view=viewer&room=demo", "host": "?view=host&room=demo", "start": ""}[a.page]
        if a.first_frame:
            import asyncio

            load = round(os.getloadavg()[0], 2)
            times = asyncio.run(first_frames(f"http://127.0.0.1:{port}/?view=viewer&room=demo", a.first_frame))
            print(json.dumps({"first_frame_ms": times, "load_before": load}))
            print(f"first video frame after load: median {statistics.median(times)} ms "
                  f"({min(times)}-{max(times)}) over {len(times)} loads")
            return
        assert binary is not None
        for run in range(1, a.runs + 1):
            load = os.getloadavg()[0]
            row = {"run": run, "page": a.page, "load_before": round(load, 2), **one_run(binary, f"http://127.0.0.1:{port}/{query}")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait(10)
    with open(a.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for category in CATEGORIES:
        values = [r["scores"][category] for r in rows]
        print(f"{category}: median {statistics.median(values)} (runs {values})")


if __name__ == "__main__":
    main()
