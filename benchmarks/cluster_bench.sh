#!/bin/bash
# Chat load against 1 node (in-process broker), 1 node with Redis, and 2 nodes sharing a room through Redis.
#   RATE=50 bash benchmarks/cluster_bench.sh      (comments/s; 1000 viewers, 2 products/s, 20 s each)
# Needs redis-server; writes /tmp/cl-*.json and prints one markdown row per setup.
set -u
cd "$(dirname "$0")/.."
S=benchmark-secret-of-at-least-32-bytes!!
redis-server --port 6390 --save "" --appendonly no --daemonize yes >/dev/null
sleep 0.5
run() {
  name=$1; shift
  timeout 300 .venv/bin/live-relay --log-level WARNING loadtest chat "$@" --room bench --secret "$S" --viewers 1000 --comment-rate ${RATE:-50} --product-rate 2 --duration 20 --json "/tmp/cl-${name// /_}.json" >/dev/null 2>&1
  NAME="$name" FILE="/tmp/cl-${name// /_}.json" python3 - <<'PY'
import json, os
r = json.load(open(os.environ["FILE"])); c, p = r["comment"], r["product"]
print(f"| {os.environ['NAME']} | {r['viewers_connected']} | {r['deliveries_per_s']:.0f} | {c['p50_ms']} / {c['p99_ms']} "
      f"| {p['p50_ms']} / {p['p99_ms']} | {c['lost'] + p['lost']} | {r['server_cpu_cores']} | {r['generator_cpu_cores']} |")
PY
}
.venv/bin/live-relay --log-level WARNING serve --port 8101 --secret "$S" --room bench --max-conns-per-ip 0 2>/dev/null & P1=$!
sleep 2; run "1 node, memory broker" --url ws://127.0.0.1:8101/ws; kill $P1; sleep 1
.venv/bin/live-relay --log-level WARNING serve --port 8102 --secret "$S" --room bench --max-conns-per-ip 0 --redis redis://127.0.0.1:6390/0 2>/dev/null & P2=$!
sleep 2; run "1 node, Redis" --url ws://127.0.0.1:8102/ws; kill $P2; sleep 1
redis-cli -p 6390 flushall >/dev/null
.venv/bin/live-relay --log-level WARNING serve --port 8103 --secret "$S" --room bench --max-conns-per-ip 0 --redis redis://127.0.0.1:6390/0 2>/dev/null & P3=$!
.venv/bin/live-relay --log-level WARNING serve --port 8104 --secret "$S" --room bench --max-conns-per-ip 0 --redis redis://127.0.0.1:6390/0 2>/dev/null & P4=$!
sleep 2; run "2 nodes, Redis" --url ws://127.0.0.1:8103/ws --url ws://127.0.0.1:8104/ws; kill $P3 $P4
redis-cli -p 6390 shutdown nosave >/dev/null 2>&1
