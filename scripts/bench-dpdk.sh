#!/usr/bin/env bash
# Latency through Tachyon's DPDK path, beside its kernel path and Mosquitto, in one run.
#
#   floor      tachyon-bench dpdk-echo <-> dpdk-latency --mode echo   (bare smoltcp, net_memif)
#   dpdk       tachyon (driver dpdk, net_memif)  <-> dpdk-latency --mode mqtt
#              (and once more with 1000 idle connections held by the shard)
#   kernel     tachyon (kernel sockets, busy-polling shard) <-> tachyon-bench latency (loopback)
#   mosquitto  mosquitto                                    <-> tachyon-bench latency (loopback)
#
# Open loop at fixed rates, 64-byte payloads, QoS 0 and 1; the server side on core 1, the
# client side on core 0. Both DPDK ends spin; the kernel-path generator blocks in read().
# Every DPDK process runs in a network namespace this script creates and deletes; frames
# cross shared memory (net_memif) and nothing is sent to any network.
#
# Usage: scripts/bench-dpdk.sh [--quick]
# Environment: RATES ("10000 50000"), DURATION (10), WARMUP (2), REPS (3), OUT (run directory)
# Prints a markdown table of medians over the repetitions (paste into docs/benchmarks.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
RATES=${RATES:-10000 50000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPS=${REPS:-3}
if ((QUICK)); then RATES=${RATES%% *}; DURATION=3; WARMUP=1; REPS=1; fi
OUT=${OUT:-$ROOT/target/bench-dpdk/$(date -u +%Y%m%dT%H%M%SZ)}
SERVER_CORE=1
CLIENT_CORE=0
PORT=18830
NS="tachyon-bench-dpdk-$$"
SOCK="/tmp/tachyon-bench-memif-$$.sock"
TACHYON="$ROOT/target/release/tachyon"
BENCH="$ROOT/target/release/tachyon-bench"
EAL_CLIENT="--no-huge,-m,64,--no-pci,--no-shconf,--no-telemetry,--file-prefix,tb-client-$$"

log() { printf '[bench-dpdk %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
[[ $(id -u) == 0 ]] || { echo "needs root (network namespace, DPDK)" >&2; exit 1; }

need_apt=()
for pkg in libdpdk-dev dpdk libclang-dev pkg-config iproute2 mosquitto; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    apt-get update -q && apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+uncommitted')"
log "building $COMMIT (release, --features dpdk)"
cargo build --release -q -p tachyon -p tachyon-bench --features tachyon/dpdk,tachyon-bench/dpdk
mkdir -p "$OUT"
printf 'commit %s\ndate %s\nhost %s\n' "$COMMIT" "$(date -u +%FT%TZ)" "$(uname -r)" >"$OUT/meta.txt"

PID=""
cleanup() {
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -f "$SOCK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up

stop() {
    [[ -n "$PID" ]] || return 0
    stop_pid "$PID"
    PID=""
    rm -f "$SOCK"
    sleep 0.5
}

cat >"$OUT/broker-dpdk.toml" <<EOF
[dataplane]
driver = "dpdk"
[userspace]
idle = "spin"
[dpdk]
eal_args = ["--no-huge", "-m", "128", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", "tb-broker-$$"]
[[dpdk.ports]]
device = "net_memif0,role=server,id=0,socket-abstract=no,socket=$SOCK"
address = "10.79.0.2/24"
[[dpdk.core_map]]
lcore = $SERVER_CORE
port = 0
queue = 0
[log]
level = "warn"
EOF
cat >"$OUT/broker-kernel-spin.toml" <<EOF
[[listeners]]
bind = "127.0.0.1:$PORT"
[shards]
count = 1
cores = [$SERVER_CORE]
idle = "spin"
[log]
level = "warn"
EOF

client_dpdk() { # mode qos rate json [more arguments]
    ip netns exec "$NS" timeout 180 "$BENCH" dpdk-latency --mode "$1" --qos "$2" --rate "$3" "${@:5}" \
        --duration "$DURATION" --warmup "$WARMUP" --size 64 --lcore "$CLIENT_CORE" \
        --vdev "net_memif0,role=client,id=0,socket-abstract=no,socket=$SOCK" \
        --address 10.79.0.3/24 --server 10.79.0.2:1883 --eal "$EAL_CLIENT" \
        --json "$4" >/dev/null 2>>"$OUT/client.log" || log "run failed: $1 qos $2 rate $3"
}
client_kernel() { # qos rate json
    taskset -c "$CLIENT_CORE" timeout 120 "$BENCH" latency --port "$PORT" --qos "$1" --rate "$2" \
        --payload 64 --duration "$DURATION" --warmup "$WARMUP" --json "$3" >/dev/null 2>>"$OUT/client.log" \
        || log "run failed: kernel qos $1 rate $2"
}
# shellcheck source=scripts/lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
listening() { wait_port "$PORT" || { log "nothing listens on $PORT"; return 1; }; }

for core in "$CLIENT_CORE" "$SERVER_CORE"; do
    "$BENCH" jitter --core "$core" --duration 2 >"$OUT/jitter-core$core.json"
done
log "spin jitter: $(cat "$OUT"/jitter-core*.json | tr '\n' ' ')"

for rep in $(seq "$REPS"); do
    log "repetition $rep/$REPS: floor (bare smoltcp echo over memif)"
    ip netns exec "$NS" "$BENCH" dpdk-echo --vdev "net_memif0,role=server,id=0,socket-abstract=no,socket=$SOCK" \
        --address 10.79.0.2/24 --lcore "$SERVER_CORE" --max-seconds 600 \
        --eal "--no-huge,-m,64,--no-pci,--no-shconf,--no-telemetry,--file-prefix,tb-echo-$$" 2>>"$OUT/server.log" &
    PID=$!
    sleep 1.5
    for rate in $RATES; do client_dpdk echo 0 "$rate" "$OUT/floor-q0-$rate-r$rep.json"; done
    stop

    log "repetition $rep/$REPS: tachyon on DPDK (net_memif)"
    ip netns exec "$NS" "$TACHYON" serve -c "$OUT/broker-dpdk.toml" --data-dir "$OUT/data-dpdk-$rep" 2>>"$OUT/server.log" &
    PID=$!
    sleep 1.5
    for qos in 0 1; do
        for rate in $RATES; do client_dpdk mqtt "$qos" "$rate" "$OUT/dpdk-q$qos-$rate-r$rep.json"; done
    done
    # The cost of connections on a shard: 1000 idle ones held by the broker (last: they stay).
    rate=${RATES%% *}
    client_dpdk mqtt 0 "$rate" "$OUT/dpdk1000-q0-$rate-r$rep.json" --idle-connections 1000
    stop

    log "repetition $rep/$REPS: tachyon on kernel sockets (busy-polling shard, loopback)"
    "$TACHYON" serve -c "$OUT/broker-kernel-spin.toml" --data-dir "$OUT/data-kernel-$rep" 2>>"$OUT/server.log" &
    PID=$!
    listening
    for qos in 0 1; do
        for rate in $RATES; do client_kernel "$qos" "$rate" "$OUT/kernel-q$qos-$rate-r$rep.json"; done
    done
    stop

    log "repetition $rep/$REPS: mosquitto (loopback)"
    taskset -c "$SERVER_CORE" mosquitto -p "$PORT" >>"$OUT/server.log" 2>&1 &
    PID=$!
    listening
    for qos in 0 1; do
        for rate in $RATES; do client_kernel "$qos" "$rate" "$OUT/mosquitto-q$qos-$rate-r$rep.json"; done
    done
    stop
done

python3 - "$OUT" "$RATES" <<'EOF'
import glob, json, statistics, sys
out, rates = sys.argv[1], [int(r) for r in sys.argv[2].split()]
rows = [("floor", "bare smoltcp echo (DPDK, memif)", [0]),
        ("dpdk", "Tachyon, DPDK path (memif)", [0, 1]),
        ("dpdk1000", "Tachyon, DPDK path, 1000 idle connections on the shard", [0]),
        ("kernel", "Tachyon, kernel path (loopback, spinning shard)", [0, 1]),
        ("mosquitto", "Mosquitto 2.0 (loopback)", [0, 1])]
print("| path | QoS | rate | p50 µs | p99 µs | p99.9 µs | max µs | runs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for key, title, qoss in rows:
    for qos in qoss:
        for rate in rates:
            runs = []
            for f in sorted(glob.glob(f"{out}/{key}-q{qos}-{rate}-r*.json")):
                r = json.load(open(f))["results"]["latency_us"]
                if r.get("count"):
                    runs.append(r)
            if not runs:
                if key != "dpdk1000" or rate == rates[0]:  # that row runs at the first rate only
                    print(f"| {title} | {qos} | {rate // 1000}k | failed | | | | 0 |")
                continue
            med = lambda k: statistics.median(r[k] for r in runs)
            print(f"| {title} | {qos} | {rate // 1000}k | {med('p50'):.1f} | {med('p99'):.1f} | {med('p99_9'):.1f} | {med('max'):.0f} | {len(runs)} |")
EOF
log "runs in $OUT ($(head -1 "$OUT/meta.txt"))"
