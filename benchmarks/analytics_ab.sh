#!/bin/bash
# Analytics off (A) against on (B) at the acceptance load, same server code, same load generator,
# alternating A B A B ..., RUNS times each (quote the medians). B writes to a fresh SQLite file, or to
# PostgreSQL with PG=postgresql://... ; viewers behave as shoppers (sources, clicks) on both sides, so
# the server does the same work apart from analytics.
#   RUNS=3 VIEWERS=1000 RATE=50 PRODUCTS=2 DURATION=20 bash benchmarks/analytics_ab.sh
# Prints one markdown row per run. Server and load generator share this machine: read the CPU columns.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; VIEWERS=${VIEWERS:-1000}; RATE=${RATE:-50}; PRODUCTS=${PRODUCTS:-2}; DURATION=${DURATION:-20}
S=benchmark-secret-of-at-least-32-bytes!!
O=benchmark-order-secret
TMP=$(mktemp -d /tmp/lr-analytics-ab-XXXX)
trap 'rm -rf "$TMP"' EXIT
echo "| run | analytics | comment p50/p99 ms | product p50/p99 ms | lost | server CPU (cores) | generator CPU | events written | dropped | load avg |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $(seq 1 "$RUNS"); do
  for side in off on; do
    port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    if [ "$side" = on ]; then db=${PG:-$TMP/run$n.sqlite3}; else db=off; fi
    .venv/bin/python -m cli.main --log-level WARNING serve --port "$port" --secret "$S" --room bench \
      --max-conns-per-ip 0 --analytics "$db" --order-secret "$O" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    out=$TMP/$side-$n.json
    load=$(cut -d' ' -f1 /proc/loadavg)
    timeout 300 .venv/bin/live-relay --log-level WARNING loadtest chat --url "ws://127.0.0.1:$port/ws" --room bench \
      --secret "$S" --viewers "$VIEWERS" --comment-rate "$RATE" --product-rate "$PRODUCTS" --duration "$DURATION" \
      --sources douyin=0.5,wechat=0.3,direct=0.2 --click-rate 0.02 --order-rate 0.3 --order-secret "$O" \
      --json "$out" >/dev/null 2>&1 || true
    metrics=$(curl -sf "http://127.0.0.1:$port/metrics" || true)
    written=$(echo "$metrics" | awk '/^live_relay_analytics_events_total/ {s+=$2} END {print s+0}')
    dropped=$(echo "$metrics" | awk '/^live_relay_analytics_dropped_total/ {s+=$2} END {print s+0}')
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    SIDE=$side N=$n FILE=$out LOAD=$load W=$written D=$dropped .venv/bin/python - <<'PY'
import json, os
r = json.load(open(os.environ["FILE"])); c, p = r["comment"], r["product"]
print(f"| {os.environ['N']} | {os.environ['SIDE']} | {c['p50_ms']} / {c['p99_ms']} | {p['p50_ms']} / {p['p99_ms']} "
      f"| {c['lost'] + p['lost']} | {r['server_cpu_cores']} | {r['generator_cpu_cores']} | {os.environ['W']} "
      f"| {os.environ['D']} | {os.environ['LOAD']} |")
PY
  done
done
