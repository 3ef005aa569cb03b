"""Side-by-side chat benchmark: live-relay vs the minimal aiohttp broadcast loop, same load, same machine.

    python -m benchmarks.chat_bench --viewers 1000 --rates 50,100,200 --duration 20 [--baseline]

For each comment rate it starts a fresh server process (ours, then the baseline if asked), runs
`live-relay loadtest chat` against it with JSON viewers (the baseline speaks JSON only), and prints one
markdown row per run. Server and load generator share this machine's cores: read the CPU columns.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request

from benchmarks.common import SECRET, free_port, run_loadtest, wait_ready


def start_server(kind: str, port: int) -> subprocess.Popen[bytes]:
    cli = [sys.executable, "-m", "cli.main", "--log-level", "WARNING"]
    if kind == "live-relay":
        args = [*cli, "serve", "--port", str(port), "--secret", SECRET, "--room", "bench",
                "--max-conns-per-ip", "0"]
    else:
        args = [*cli, "loadtest", "baseline-server", "--port", str(port)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_one(kind: str, viewers: int, rate: float, product_rate: float, duration: float, encoding: str) -> dict:
    port = free_port()
    server = start_server(kind, port)
    try:
        wait_ready(port)
        if kind == "live-relay":
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
        return run_loadtest(["chat", "--url", f"ws://127.0.0.1:{port}/ws", "--room", "bench", "--secret", SECRET,
                             "--viewers", str(viewers), "--comment-rate", str(rate), "--product-rate",
                             str(product_rate), "--duration", str(duration), "--encoding", encoding],
                            timeout=duration * 10 + 120)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--rates", default="50,100,200", help="comment rates per second, comma-separated")
    parser.add_argument("--product-rate", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--baseline", action="store_true", help="also run the minimal aiohttp loop")
    parser.add_argument("--encoding", choices=["json", "msgpack"], default="json",
                        help="what viewers speak (the baseline speaks JSON only)")
    args = parser.parse_args()
    kinds = ["live-relay", "aiohttp-loop"] if args.baseline else ["live-relay"]
    print(f"| server | viewers ({args.encoding}) | comments/s | deliveries/s | comment p50/p99 ms "
          "| product p50/p99 ms | lost | server CPU (cores) | generator CPU (cores) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        for kind in kinds:
            r = run_one(kind, args.viewers, rate, args.product_rate, args.duration, args.encoding)
            c, p = r["comment"], r["product"]
            print(f"| {kind} | {r['viewers_connected']} | {rate:g} | {r['deliveries_per_s']:.0f} "
                  f"| {c['p50_ms']} / {c['p99_ms']} | {p['p50_ms']} / {p['p99_ms']} "
                  f"| {c['lost'] + p['lost']} | {r['server_cpu_cores']} | {r['generator_cpu_cores']} |",
                  flush=True)


if __name__ == "__main__":
    main()
