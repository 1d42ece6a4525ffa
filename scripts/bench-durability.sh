#!/usr/bin/env bash
# Durability (issue 5): QoS 1/2 throughput and publish-to-ack latency with persistent
# subscribers, Tachyon with `sync` (acknowledged = on disk) and `none` (acknowledged at
# once), beside Mosquitto with `persistence true` (its strongest: a snapshot every
# autosave_interval), in one run, the issue 3 method (broker on BROKER_CORE, generator on
# GEN_CORE, REPS repetitions, medians). Then Tachyon alone: recovery time and the longest
# snapshot stall with a large offline queue.
#
#   scripts/bench-durability.sh            (~6 minutes on the 2-core VM)
#   scripts/bench-durability.sh --quick    one repetition
#
# Prints a markdown table (also in $OUT/summary.md) for docs/benchmarks.md. Everything runs on
# 127.0.0.1; loads are bounded in time; only processes this script started are stopped.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
REPS=${REPS:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
BROKER_CORE=${BROKER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
PORT=${PORT:-22011}
OUT=${OUT:-$ROOT/target/bench-durability/$(date -u +%Y%m%dT%H%M%SZ)}
BENCH="$ROOT/target/release/tachyon-bench"
TACHYON="$ROOT/target/release/tachyon"
log() { echo "[bench-durability $(date -u +%H:%M:%S)] $*" >&2; }
# shellcheck source=scripts/lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"

command -v mosquitto >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients; }
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+uncommitted')"
log "building $COMMIT"
cargo build --release -q -p tachyon -p tachyon-bench
mkdir -p "$OUT"

# The data directory is on the file system of $OUT (the disk whose msync is measured).
cat >"$OUT/tachyon-sync.toml" <<EOF
[[listeners]]
bind = "127.0.0.1:1883"
[shards]
count = 1
cores = [$BROKER_CORE]
[limits]
max_queued_messages = 1000000
max_queued_bytes = 1073741824
[log]
level = "info"
[durability]
sync = "sync"
EOF
sed 's/^sync = "sync"/sync = "none"/' "$OUT/tachyon-sync.toml" >"$OUT/tachyon-none.toml"
# `sync` with group commits of up to 1 ms under load (more per msync).
printf 'group_commit_us = 1000\n' | cat "$OUT/tachyon-sync.toml" - >"$OUT/tachyon-sync-1ms.toml"
cat >"$OUT/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $OUT/mosquitto-data/
max_queued_messages 1000000
EOF
mkdir -p "$OUT/mosquitto-data"

PID=""
start() { # system
    local data="$OUT/data-$1-$RANDOM"
    case "$1" in
    tachyon-sync | tachyon-sync-1ms | tachyon-none)
        taskset -c "$BROKER_CORE" "$TACHYON" serve -c "$OUT/$1.toml" -p "$PORT" --data-dir "$data" 2>>"$OUT/$1.log" & ;;
    mosquitto)
        rm -f "$OUT/mosquitto-data/mosquitto.db"
        taskset -c "$BROKER_CORE" mosquitto -c "$OUT/mosquitto.conf" >>"$OUT/mosquitto.log" 2>&1 & ;;
    esac
    PID=$!
    wait_port "$PORT" || { log "$1 did not start"; return 1; }
}
stop() {
    [[ -n "$PID" ]] || return 0
    stop_pid "$PID"
    PID=""
    # Preallocated segments add up over dozens of runs: each run's data goes with it.
    rm -rf "$OUT"/data-tachyon-* "$OUT/mosquitto-data/mosquitto.db"
    sleep 0.3
}
trap stop EXIT
gen() { taskset -c "$GEN_CORE" timeout 120 "$BENCH" "$@" --port "$PORT" >/dev/null 2>>"$OUT/generator.log" || log "run failed: $*"; }

# label|tachyon-bench arguments (every subscriber keeps a persistent session)
MATRIX=(
    "q1-pairs4|throughput --topology pairs --publishers 4 --qos 1 --inflight 100"
    "q1-fanin8|throughput --topology fan-in --publishers 8 --qos 1 --inflight 100"
    "q1-pairs1-window1|throughput --topology pairs --publishers 1 --qos 1 --inflight 1"
    "q2-pairs4|throughput --topology pairs --publishers 4 --qos 2 --inflight 100"
    "q1-lat5k|latency --rate 5000 --qos 1"
    "q1-lat20k|latency --rate 20000 --qos 1"
)
SYSTEMS=(tachyon-sync tachyon-sync-1ms tachyon-none mosquitto)
log "results in $OUT ($REPS repetitions)"
for sys in "${SYSTEMS[@]}"; do
    for e in "${MATRIX[@]}"; do
        label=${e%%|*}; args=${e#*|}
        mkdir -p "$OUT/$sys/$label"
        for r in $(seq "$REPS"); do
            start "$sys"
            # shellcheck disable=SC2086
            gen $args --persistent --payload 64 --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/$sys/$label/r$r.json"
            stop
        done
        log "$sys $label done"
    done
done

# Recovery and snapshots: an offline persistent session collects QoS 1 messages, the broker
# is killed (SIGKILL) and started again on the same data directory.
log "recovery: filling an offline session"
DATA="$OUT/data-recovery"
cat "$OUT/tachyon-sync.toml" >"$OUT/tachyon-recovery.toml"
printf 'segment_mb = 64\nsnapshot_after_mb = 64\n' >>"$OUT/tachyon-recovery.toml"
serve_recovery() {
    taskset -c "$BROKER_CORE" "$TACHYON" serve -c "$OUT/tachyon-recovery.toml" -p "$PORT" --data-dir "$DATA" 2>>"$OUT/recovery.log" &
    PID=$!
    wait_port "$PORT" 600 || log "recovery: the broker did not listen within 30 s"
}
serve_recovery
timeout 10 mosquitto_sub -p "$PORT" -i offline-keeper -c -q 1 -t 'tachyon-bench/#' -W 1 >/dev/null 2>&1 || true
gen throughput --topology pairs --publishers 4 --qos 1 --inflight 100 --payload 64 --duration 5 --warmup 0
stop        # SIGTERM: the log line has the snapshot stalls of the run
serve_recovery
sleep 1
kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""
du -sh "$DATA" | tee "$OUT/recovery-disk.txt" >&2
serve_recovery   # recovery from the crash
sleep 1
stop
rm -rf "$DATA"

python3 - "$OUT" "$REPS" "$COMMIT" <<'EOF'
import json, pathlib, re, statistics, sys, platform, subprocess, datetime
out, reps, commit = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
systems = ["tachyon-sync", "tachyon-sync-1ms", "tachyon-none", "mosquitto"]
rows = [
    ("q1-pairs4", "QoS 1, 4 pairs, window 100"),
    ("q1-fanin8", "QoS 1, fan-in 8→1, window 100"),
    ("q1-pairs1-window1", "QoS 1, 1 pair, window 1"),
    ("q2-pairs4", "QoS 2, 4 pairs, window 100"),
    ("q1-lat5k", "QoS 1, open loop 5k msgs/s"),
    ("q1-lat20k", "QoS 1, open loop 20k msgs/s"),
]
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def load(sys_, label):
    res = []
    for f in sorted((out / sys_ / label).glob("r*.json")):
        try:
            res.append(json.loads(f.read_text())["results"])
        except Exception:
            pass
    return res
def fmt(v, unit=""):
    if v is None:
        return "—"
    if unit == "k":
        return f"{v/1000:.1f}k"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
lines = []
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
lines.append(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, {cpu}, {reps} repetitions (medians), "
             "64 B payloads, persistent subscribers; `scripts/bench-durability.sh`.\n")
lines.append("| scenario | system | delivered msgs/s | ack p50 µs | ack p99 µs | deliver p50 µs | deliver p99 µs | lost |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
for label, title in rows:
    for s in systems:
        rs = load(s, label)
        if not rs:
            continue
        d = med([r.get("delivered_msgs_per_sec") for r in rs])
        a50 = med([r.get("ack_latency_us", {}).get("p50") for r in rs])
        a99 = med([r.get("ack_latency_us", {}).get("p99") for r in rs])
        l50 = med([r.get("latency_us", {}).get("p50") for r in rs])
        l99 = med([r.get("latency_us", {}).get("p99") for r in rs])
        lost = sum(r.get("lost", 0) for r in rs)
        lines.append(f"| {title} | {s} | {fmt(d, 'k')} | {fmt(a50)} | {fmt(a99)} | {fmt(l50)} | {fmt(l99)} | {lost} |")
def strip(t):
    return re.sub(r"\x1b\[[0-9;]*m", "", t)
commits = []
for s in ["tachyon-sync", "tachyon-sync-1ms"]:
    t = strip((out / f"{s}.log").read_text(errors="replace")) if (out / f"{s}.log").exists() else ""
    for m in re.finditer(r"WAL closed commits=(\d+) commit_mean_us=([\d.]+) commit_max_us=([\d.]+)", t):
        commits.append((int(m[1]), float(m[2]), float(m[3])))
if commits:
    mean = sum(c[0] * c[1] for c in commits) / max(1, sum(c[0] for c in commits))
    lines.append(f"\nWAL commits (msync) under `sync`: {sum(c[0] for c in commits)} commits, mean {mean:.0f} µs, "
                 f"longest {max(c[2] for c in commits):.0f} µs.")
t = strip((out / "recovery.log").read_text(errors="replace"))
rec = re.findall(r"recovered durable state .*?sessions=(\d+) messages=(\d+) .*?segments=(\d+) records=(\d+) elapsed_ms=([\d.]+)", t)
snaps = re.findall(r"WAL closed .*?snapshots=(\d+) snapshot_max_us=(\d+)", t)[:1]
disk = (out / "recovery-disk.txt").read_text().split()[0] if (out / "recovery-disk.txt").exists() else "?"
if len(rec) >= 2:
    s, m, seg, r_, ms = rec[-1]
    lines.append(f"\nRecovery after SIGKILL: {m} queued messages in {s} sessions, {r_} records in {seg} segments ({disk} on disk): "
                 f"{float(ms):.0f} ms from reading the log to the new snapshot written and committed.")
if snaps:
    lines.append(f"Longest snapshot stall of a shard (writing its state into the log, 64 MiB threshold): "
                 f"{max(int(x[1]) for x in snaps)} µs over {sum(int(x[0]) for x in snaps)} snapshots.")
text = "\n".join(lines) + "\n"
(out / "summary.md").write_text(text)
print(text)
EOF
