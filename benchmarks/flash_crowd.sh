#!/bin/bash
# Flash crowd, side by side: N viewers connect and join at the same instant, twice (the second crowd joins a
# room already holding the first), against live-relay and against the minimal aiohttp WebSocket server
# (`loadtest baseline-server`: a bare accept and a `joined` reply), alternating, RUNS times each.
#   RUNS=3 VIEWERS=5000 bash benchmarks/flash_crowd.sh
# Prints one markdown row per crowd. Server and the crowd's 4 processes share this machine.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; VIEWERS=${VIEWERS:-5000}
S=benchmark-secret-of-at-least-32-bytes!!
free_port() { .venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
echo "| run | server | room before | joined | all joined s | join p50 / p95 ms | server CPU ms/join | load avg |"
echo "|---|---|---|---|---|---|---|---|"
for n in $(seq 1 "$RUNS"); do
  for side in live-relay baseline; do
    port=$(free_port)
    if [ $side = live-relay ]; then
      .venv/bin/live-relay --log-level WARNING serve --port "$port" --secret "$S" --room bench --max-conns-per-ip 0 \
        --no-media >/dev/null 2>&1 &
    else
      .venv/bin/live-relay --log-level WARNING loadtest baseline-server --port "$port" >/dev/null 2>&1 &
    fi
    pid=$!
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
    load=$(cut -d' ' -f1 /proc/loadavg)
    out=/tmp/lr-crowd-$side-$n.json
    timeout 300 .venv/bin/live-relay --log-level WARNING loadtest joins --url "ws://127.0.0.1:$port/ws" \
      --viewers "$VIEWERS" --waves 2 --processes 4 --json "$out" >/dev/null 2>&1 || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    SIDE=$side N=$n FILE=$out LOAD=$load .venv/bin/python - <<'PY'
import json, os
r = json.load(open(os.environ["FILE"]))
for w in r["waves"]:
    print(f"| {os.environ['N']} | {os.environ['SIDE']} | {w['room_before']} | {w['joined']}/{w['viewers']} "
          f"| {w['all_joined_s']} | {w['join_ms_p50']} / {w['join_ms_p95']} | {w['server_cpu_ms_per_join']} "
          f"| {os.environ['LOAD']} |")
PY
  done
done
