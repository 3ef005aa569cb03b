#!/bin/bash
# A/B chat benchmark: the server at git REF (A) against the server in this checkout (B), same load generator
# (this checkout's), alternating A B A B ..., RUNS times each (median of those is what to quote).
#   REF=577cca7 RUNS=3 VIEWERS=1000 RATE=100 DURATION=15 bash benchmarks/ab_chat.sh
# Prints one markdown row per run. Server and load generator share this machine: read the CPU columns.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REF=${REF:?give REF=<git ref> for the A side}
RUNS=${RUNS:-3}; VIEWERS=${VIEWERS:-1000}; RATE=${RATE:-100}; DURATION=${DURATION:-15}
S=benchmark-secret-of-at-least-32-bytes!!
WT=$(mktemp -d /tmp/lr-ab-XXXX)
git worktree add -q --detach "$WT" "$REF"
trap 'git worktree remove --force "$WT"' EXIT
# The A side's command module: cli.main since the layering change, clients.cli before it.
A_MOD=cli.main; [ -f "$WT/cli/main.py" ] || A_MOD=clients.cli
serve() {  # side port
  # The A side runs from its own worktree: the current directory comes first on sys.path, before this
  # checkout's editable install.
  if [ "$1" = A ]; then (cd "$WT" && exec "$ROOT/.venv/bin/python" -m $A_MOD --log-level WARNING serve --port "$2" \
      --secret "$S" --room bench --max-conns-per-ip 0 >/dev/null 2>&1) &
  else .venv/bin/python -m cli.main --log-level WARNING serve --port "$2" --secret "$S" --room bench \
      --max-conns-per-ip 0 >/dev/null 2>&1 &
  fi
  echo $!
}
echo "| run | side | comment p50/p99 ms | product p50/p99 ms | lost | deliveries/s | server CPU | generator CPU | load avg |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in $(seq 1 "$RUNS"); do
  for side in A B; do
    port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    pid=$(serve $side "$port")
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    out=/tmp/lr-ab-$side-$n.json
    load=$(cut -d' ' -f1 /proc/loadavg)
    timeout 300 .venv/bin/live-relay --log-level WARNING loadtest chat --url "ws://127.0.0.1:$port/ws" --room bench \
      --secret "$S" --viewers "$VIEWERS" --comment-rate "$RATE" --product-rate 2 --duration "$DURATION" \
      --json "$out" >/dev/null 2>&1 || true
    pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    SIDE=$side N=$n FILE=$out LOAD=$load .venv/bin/python - <<'PY'
import json, os
r = json.load(open(os.environ["FILE"])); c, p = r["comment"], r["product"]
print(f"| {os.environ['N']} | {os.environ['SIDE']} | {c['p50_ms']} / {c['p99_ms']} | {p['p50_ms']} / {p['p99_ms']} "
      f"| {c['lost'] + p['lost']} | {r['deliveries_per_s']:.0f} | {r['server_cpu_cores']} | {r['generator_cpu_cores']} "
      f"| {os.environ['LOAD']} |")
PY
  done
done
