#!/bin/bash
# Chat load (1000 viewers, 100 comments/s, 2 products/s, 20 s) against `serve --workers 1` and `--workers 2`
# on one port with one Redis. Needs redis-server.
cd "$(dirname "$0")/.."
S=benchmark-secret-of-at-least-32-bytes!!
redis-server --port 6392 --save "" --appendonly no --daemonize yes >/dev/null; sleep 0.5
for W in 1 2; do
  redis-cli -p 6392 flushall >/dev/null
  .venv/bin/live-relay --log-level WARNING serve --workers $W --port 8120 --secret "$S" --room bench --max-conns-per-ip 0 --redis redis://127.0.0.1:6392/0 2>/dev/null & P=$!
  sleep 3
  timeout 300 .venv/bin/live-relay --log-level WARNING loadtest chat --url ws://127.0.0.1:8120/ws --room bench --secret "$S" --viewers 1000 --comment-rate 100 --product-rate 2 --duration 20 --json /tmp/workers-$W.json >/dev/null 2>&1
  kill -TERM $P; wait $P; sleep 1
  W=$W python3 - <<'PY'
import json, os
w = os.environ["W"]; r = json.load(open(f"/tmp/workers-{w}.json")); c, p = r["comment"], r["product"]
print(f"| --workers {w} | {r['viewers_connected']} | {r['deliveries_per_s']:.0f} | {c['p50_ms']} / {c['p99_ms']} | {p['p50_ms']} / {p['p99_ms']} | {c['lost'] + p['lost']} | {r['server_cpu_cores']} | {r['generator_cpu_cores']} |")
PY
done
redis-cli -p 6392 shutdown nosave >/dev/null 2>&1
