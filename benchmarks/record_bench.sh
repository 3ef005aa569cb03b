#!/bin/bash
# What recording costs the relay: `loadtest media` (1 publisher, N subscribers) against `serve` without and
# with `--record`, alternating, RUNS times each. Prints one markdown row per run.
#   RUNS=3 N=10 DURATION=10 bash benchmarks/record_bench.sh
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; N=${N:-10}; DURATION=${DURATION:-10}
S=benchmark-secret-of-at-least-32-bytes!!
DIR=$(mktemp -d /tmp/lr-record-XXXX)
trap 'rm -rf "$DIR"' EXIT
free_port() { .venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
echo "| run | server | subscribers | relay CPU (cores) | latency p50 ms | freezes | recorded MB | load avg |"
echo "|---|---|---|---|---|---|---|---|"
for n in $(seq 1 "$RUNS"); do
  for side in plain record; do
    port=$(free_port); extra=(); [ $side = record ] && extra=(--record "$DIR/$n")
    .venv/bin/live-relay --log-level WARNING serve --port "$port" --secret "$S" --max-conns-per-ip 0 "${extra[@]}" \
      >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
    load=$(cut -d' ' -f1 /proc/loadavg)
    out=/tmp/lr-record-$side-$n.json
    timeout 300 .venv/bin/live-relay --log-level WARNING loadtest media --url "ws://127.0.0.1:$port/ws" --secret "$S" \
      --subscribers "$N" --duration "$DURATION" --json "$out" >/dev/null 2>&1 || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    mb=$(du -sm "$DIR/$n" 2>/dev/null | cut -f1); [ $side = record ] || mb=-
    SIDE=$side N=$n FILE=$out LOAD=$load MB=$mb .venv/bin/python - <<'PY'
import json, os
r = json.load(open(os.environ["FILE"]))
print(f"| {os.environ['N']} | {os.environ['SIDE']} | {r['subscribers']} | {r['relay_cpu_per_s']} | {r['latency_ms_p50']} "
      f"| {r['freezes']} | {os.environ['MB']} | {os.environ['LOAD']} |")
PY
  done
done
