#!/usr/bin/env bash
# Preliminary side-by-side run (one repetition each): Tachyon (1 shard), Mosquitto and the
# tachyon-bench relay pinned to core 0, the generator to core 1, all on 127.0.0.1:22001.
# Prints one line per scenario. The full matrix with medians and charts is issue 3's
# scripts/bench-compare.sh. Needs: cargo build --release -p tachyon -p tachyon-bench; mosquitto.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d)"
B="$ROOT"/target/release/tachyon-bench
out=/dev/stdout
start() { case $1 in
  tachyon) taskset -c 0 "$ROOT"/target/release/tachyon serve -c "$ROOT"/configs/bench-one-shard.toml -p 22001 2>/dev/null & ;;
  mosquitto) taskset -c 0 mosquitto -p 22001 >/dev/null 2>&1 & ;;
  relay) taskset -c 0 $B relay --listen 127.0.0.1:22001 >/dev/null 2>&1 & ;;
  esac; PID=$!; sleep 0.7; }
for sys in tachyon mosquitto relay; do
  start $sys
  for t in "fan-in --publishers 4 --qos 0" "fan-out --subscribers 4 --qos 0" "pairs --publishers 4 --qos 0" "pairs --publishers 4 --qos 1 --inflight 100"; do
    taskset -c 1 timeout 60 $B throughput --port 22001 --topology $t --payload 64 --duration 3 --warmup 1 --json "$TMP"/t.json >/dev/null 2>&1
    python3 -c "
import json; r=json.load(open('"$TMP"/t.json'))['results']
print('$sys', '$t', int(r['delivered_msgs_per_sec']), 'lost', r['lost'], 'dup', r['duplicates'])" >> $out
  done
  taskset -c 1 timeout 60 $B latency --port 22001 --rate 10000 --duration 5 --qos 1 --payload 64 --json "$TMP"/l.json >/dev/null 2>&1
  python3 -c "
import json; d=json.load(open('"$TMP"/l.json')); print('$sys latency qos1 10k', json.dumps(d['results'].get('latency_us', d['results']))[:300])" >> $out
  kill $PID; wait $PID 2>/dev/null
done
start tachyon; taskset -c 1 $B conns --port 22001 --count 10000 --broker-pid $PID --hold 1 2>&1 >/dev/null | tail -1 >> $out; kill $PID; wait $PID 2>/dev/null
start mosquitto; taskset -c 1 $B conns --port 22001 --count 10000 --broker-pid $PID --hold 1 2>&1 >/dev/null | tail -1 >> $out; kill $PID; wait $PID 2>/dev/null
