#!/bin/bash
# Media load (a 640x480 30 fps publisher, N subscribers) against `serve --workers 1` and `--workers 2` on one
# port with one Redis: with 2 workers, subscribers land on either process and the cascade links them.
#   N=50 bash benchmarks/workers_media_bench.sh
cd "$(dirname "$0")/.."
S=benchmark-secret-of-at-least-32-bytes!!
N=${N:-50}
redis-server --port 6393 --save "" --appendonly no --daemonize yes >/dev/null; sleep 0.5
for W in 1 2; do
  redis-cli -p 6393 flushall >/dev/null
  .venv/bin/live-relay --log-level WARNING serve --workers $W --port 8140 --secret "$S" --max-conns-per-ip 0 --redis redis://127.0.0.1:6393/0 2>/dev/null & P=$!
  sleep 4
  timeout 300 .venv/bin/live-relay --log-level WARNING loadtest media --url ws://127.0.0.1:8140/ws --secret "$S" --subscribers $N --duration 15 --json /tmp/wm-$W.json >/dev/null 2>&1
  kill -TERM $P; wait $P; sleep 1
  W=$W python3 - <<'PY'
import json, os
w = os.environ["W"]; r = json.load(open(f"/tmp/wm-{w}.json"))
print(f"| --workers {w} | {r['subscribers_receiving']}/{r['subscribers']} | {r['frames_sent']} / {r['frames_received_min']} "
      f"| {r['first_frame_ms_p50']} / {r['first_frame_ms_p95']} | {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} "
      f"| {r['freezes']} | {r['relay_cpu_per_s']} | {r['relay_rss_mb']} |")
PY
done
redis-cli -p 6393 shutdown nosave >/dev/null 2>&1
