#!/usr/bin/env bash
# Tachyon beside Mosquitto and the machine's ceiling, the issue 3 method: each system in turn
# on the same core (broker on BROKER_CORE, the tachyon-bench generator on GEN_CORE, taskset),
# the same matrix for all, REPS repetitions of every run, then `tachyon-bench report` writes
# the medians, ratios, target checks and charts into docs/benchmarks.md (between its
# generated markers) and docs/bench/*.png.
#
#   scripts/bench-compare.sh            the full matrix (~25 minutes on the 2-core VM)
#   scripts/bench-compare.sh --quick    one repetition of a few scenarios (~3 minutes)
#
# Environment: REPS (3), DURATION (3 s window), WARMUP (1 s), BROKER_CORE (0), GEN_CORE (1),
# PORT (22001), OUT (a new directory under target/bench-compare/), SECTIONS (default
# "throughput latency conns allocs"; e.g. SECTIONS=latency with REPORT_TO=/tmp/lat.md repeats
# only the latency runs and reports them elsewhere).
# Everything runs on 127.0.0.1; every load is bounded in time. Only processes this script
# started are stopped, by pid.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
REPS=${REPS:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
LAT_DURATION=${LAT_DURATION:-5}
BROKER_CORE=${BROKER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
PORT=${PORT:-22001}
OUT=${OUT:-$ROOT/target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)}
SECTIONS=${SECTIONS:-throughput latency conns allocs}
REPORT_TO=${REPORT_TO:-docs/benchmarks.md}
CHARTS_TO=${CHARTS_TO:-docs/bench}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
BENCH="$ROOT/target/release/tachyon-bench"
TACHYON="$ROOT/target/release/tachyon"
TACHYON_ALLOCS="$ROOT/target/count-allocs/release/tachyon"

log() { echo "[bench-compare $(date -u +%H:%M:%S)] $*" >&2; }
# shellcheck source=scripts/lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"

# --- prerequisites ---------------------------------------------------------------------------
need_apt=()
command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    apt-get update -q && apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
# The commit measured: what is built now (later edits to the tree do not count).
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+uncommitted')"
log "building $COMMIT (release; and the count-allocs build for the allocation runs)"
cargo build --release -q -p tachyon -p tachyon-bench
cargo build --release -q --target-dir target/count-allocs -p tachyon --features count-allocs
mkdir -p "$OUT"
SPIN_CONFIG="$OUT/spin.toml"
sed 's/^\[shards\]$/[shards]\nidle = "spin"/' configs/bench-one-shard.toml > "$SPIN_CONFIG"

# --- systems ---------------------------------------------------------------------------------
PID=""
start() { # system
    # Each Tachyon run starts with an empty data directory (no state recovered from the last).
    DATA="$OUT/data-$1-$RANDOM"
    case "$1" in
    tachyon) taskset -c "$BROKER_CORE" "$TACHYON" serve -c configs/bench-one-shard.toml -p "$PORT" --data-dir "$DATA" 2>>"$OUT/broker.log" & ;;
    tachyon-spin) taskset -c "$BROKER_CORE" "$TACHYON" serve -c "$SPIN_CONFIG" -p "$PORT" --data-dir "$DATA" 2>>"$OUT/broker.log" & ;;
    tachyon-allocs) TACHYON_ALLOC_COUNT_FILE="$OUT/allocs.count" taskset -c "$BROKER_CORE" "$TACHYON_ALLOCS" serve -c configs/bench-one-shard.toml -p "$PORT" --data-dir "$DATA" 2>>"$OUT/broker.log" & ;;
    mosquitto) taskset -c "$BROKER_CORE" mosquitto -p "$PORT" >>"$OUT/broker.log" 2>&1 & ;;
    relay) taskset -c "$BROKER_CORE" "$BENCH" relay --listen "127.0.0.1:$PORT" >>"$OUT/broker.log" 2>&1 & ;;
    esac
    PID=$!
    if ! wait_port "$PORT"; then
        log "$1 did not start listening on $PORT"; return 1
    fi
    # Tachyon's shards run in the dataplane process, a child of `tachyon serve` (the
    # control plane): memory is measured there.
    BPID=$(dataplane_pid "$PID")
}
stop() {
    [[ -n "$PID" ]] || return 0
    stop_pid "$PID"
    PID=""
    sleep 0.3
    rm -rf "$OUT"/data-*  # preallocated WAL segments of the run
}
trap stop EXIT

gen() { taskset -c "$GEN_CORE" timeout 120 "$BENCH" "$@" --port "$PORT" >/dev/null 2>>"$OUT/generator.log" || log "run failed: $*"; }

# --- the matrix ------------------------------------------------------------------------------
# label|title|qos|tachyon-bench arguments
TP=()
for qos in 0 1 2; do
    for size in 64 1024; do
        [[ $QUICK == 1 && ( $size == 1024 || $qos == 2 ) ]] && continue
        TP+=("tp-q$qos-fanin8-$size|QoS $qos, fan-in 8→1, $size B|$qos|throughput --topology fan-in --publishers 8 --qos $qos --payload $size")
        TP+=("tp-q$qos-fanout8-$size|QoS $qos, fan-out 1→8, $size B|$qos|throughput --topology fan-out --subscribers 8 --qos $qos --payload $size")
        [[ $QUICK == 1 ]] || TP+=("tp-q$qos-fanout100-$size|QoS $qos, fan-out 1→100, $size B|$qos|throughput --topology fan-out --subscribers 100 --qos $qos --payload $size")
        TP+=("tp-q$qos-pairs50-$size|QoS $qos, 50 pairs, $size B|$qos|throughput --topology pairs --publishers 50 --qos $qos --payload $size")
    done
done
LAT=()
for qos in 0 1; do
    for rate in 10000 50000; do
        LAT+=("lat-q$qos-$rate|QoS $qos at $((rate / 1000))k msgs/s|$qos|latency --rate $rate --qos $qos --payload 64")
    done
done
CONNS=("conns-10000|10,000|0|10000")
[[ $QUICK == 1 ]] || CONNS+=("conns-19000|19,000|0|19000")
ALLOCS=(
    "alloc-fanout8|QoS 0, fan-out 1→8, 64 B|0|throughput --topology fan-out --subscribers 8 --qos 0 --payload 64"
    "alloc-fanin8|QoS 0, fan-in 8→1, 64 B|0|throughput --topology fan-in --publishers 8 --qos 0 --payload 64"
    "alloc-pairs50|QoS 0, 50 pairs, 64 B|0|throughput --topology pairs --publishers 50 --qos 0 --payload 64"
)

field() { echo "$1" | cut -d'|' -f"$2"; }

run_matrix() { # system, then entries
    local sys=$1; shift
    local e label args r
    for e in "$@"; do
        label=$(field "$e" 1); args=$(field "$e" 4)
        mkdir -p "$OUT/$sys/$label"
        start "$sys"
        for r in $(seq "$REPS"); do
            local t=$DURATION
            [[ $label == lat-* ]] && t=$LAT_DURATION
            # shellcheck disable=SC2086
            gen $args --duration "$t" --warmup "$WARMUP" --json "$OUT/$sys/$label/r$r.json"
        done
        stop
        log "$sys $label done"
    done
}

log "results in $OUT ($REPS repetitions; $SECTIONS)"
want throughput || TP=()
want latency || LAT=()
want conns || CONNS=()
want allocs || ALLOCS=()
for sys in tachyon mosquitto relay; do
    ((${#TP[@]})) && run_matrix "$sys" "${TP[@]}"
done
for sys in tachyon tachyon-spin mosquitto relay; do
    ((${#LAT[@]})) && run_matrix "$sys" "${LAT[@]}"
done
for sys in tachyon mosquitto; do
    for e in ${CONNS[@]+"${CONNS[@]}"}; do
        label=$(field "$e" 1); count=$(field "$e" 4)
        mkdir -p "$OUT/$sys/$label"
        for r in $(seq "$REPS"); do
            start "$sys" # a fresh broker for each: RSS growth is what is measured
            taskset -c "$GEN_CORE" "$BENCH" conns --port "$PORT" --count "$count" --broker-pid "$BPID" --hold 1 \
                --json "$OUT/$sys/$label/r$r.json" >/dev/null 2>>"$OUT/generator.log" || log "conns failed"
            stop
        done
        log "$sys $label done"
    done
done
for e in ${ALLOCS[@]+"${ALLOCS[@]}"}; do
    label=$(field "$e" 1); args=$(field "$e" 4)
    mkdir -p "$OUT/tachyon/$label"
    start tachyon-allocs
    for r in $(seq "$REPS"); do
        # shellcheck disable=SC2086
        gen $args --duration "$DURATION" --warmup "$WARMUP" --broker-pid "$BPID" \
            --broker-alloc-file "$OUT/allocs.count" --json "$OUT/tachyon/$label/r$r.json"
    done
    stop
    log "allocations $label done"
done
mkdir -p "$OUT/machine/pingpong"
taskset -c "$GEN_CORE" "$BENCH" pingpong --duration 5 --json "$OUT/machine/pingpong/r1.json" >/dev/null 2>>"$OUT/generator.log" || true

# --- meta.json and the report ----------------------------------------------------------------
to_json() { # name entries...
    local name=$1; shift
    python3 - "$name" "$@" <<'EOF'
import json, sys
name, entries = sys.argv[1], sys.argv[2:]
print(json.dumps({name: [dict(label=e.split("|")[0], title=e.split("|")[1], qos=int(e.split("|")[2])) for e in entries]}))
EOF
}
python3 - "$OUT/meta.json" <<EOF
import json, os, platform, subprocess, sys
meta = {}
for part in [$(to_json throughput ${TP[@]+"${TP[@]}"}), $(to_json latency ${LAT[@]+"${LAT[@]}"}), $(to_json conns ${CONNS[@]+"${CONNS[@]}"}), $(to_json allocs ${ALLOCS[@]+"${ALLOCS[@]}"})]:
    meta.update(part)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
meta.update({
    "date": subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip(),
    "commit": "$COMMIT",
    "command": "scripts/bench-compare.sh$([[ $QUICK == 1 ]] && echo ' --quick')",
    "cpu_model": cpu, "nproc": os.cpu_count(), "kernel": platform.release(),
    "placement": "broker pinned to core $BROKER_CORE, generator (tachyon-bench) to core $GEN_CORE (taskset); Tachyon with one shard (configs/bench-one-shard.toml)",
    "systems": "Tachyon (this tree, release); tachyon-spin = the same with shards.idle = \"spin\"; " + (mosq[0] if mosq else "Mosquitto") + " (Debian, default configuration); relay = tachyon-bench relay, which forwards PUBLISH frames byte for byte (the machine's ceiling)",
    "reps": $REPS, "duration_secs": $DURATION, "warmup_secs": $WARMUP,
})
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
"$BENCH" report --input "$OUT" --output "$REPORT_TO" --charts "$CHARTS_TO"
log "done: $REPORT_TO, $CHARTS_TO/*.png (runs in $OUT)"
