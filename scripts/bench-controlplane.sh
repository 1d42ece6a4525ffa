#!/usr/bin/env bash
# What the control plane costs and how it behaves under load (issue 6), beside Mosquitto:
#
#   1. overhead: throughput and latency of the dataplane with the control plane, the stats
#      region and the broker-hop histogram, beside BASE_TACHYON (a binary of an earlier
#      commit, if given) and Mosquitto, same cores, same generator;
#   2. observed: the same runs while a scraper reads /metrics every 100 ms and lists the
#      clients every second;
#   3. restart: a dataplane holding an offline session with a queue is killed (SIGKILL);
#      time until the control plane has a new one ready (clients served again);
#   4. admin at scale: with 10,000 connected clients, how long /api/v1/clients, /metrics
#      and /api/v1/stats take.
#
#   scripts/bench-controlplane.sh                     (~6 minutes on the 2-core VM)
#   BASE_TACHYON=/path/to/old/tachyon scripts/bench-controlplane.sh
#
# Environment: REPS (3), DURATION (3 s), WARMUP (1 s), BROKER_CORE (0), GEN_CORE (1),
# PORT (22301), ADMIN_PORT (22302), OUT (target/bench-controlplane/<time>), SECTIONS
# ("overhead restart admin"), RUNS_MATCH (a grep pattern choosing among the overhead runs).
# Everything runs on 127.0.0.1, bounded in time; only processes this script started are
# stopped, by pid. Each run's data directory is deleted after it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REPS=${REPS:-3}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
BROKER_CORE=${BROKER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
PORT=${PORT:-22301}
ADMIN_PORT=${ADMIN_PORT:-22302}
OUT=${OUT:-$ROOT/target/bench-controlplane/$(date -u +%Y%m%dT%H%M%SZ)}
SECTIONS=${SECTIONS:-overhead restart admin}
RUNS_MATCH=${RUNS_MATCH:-.}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
BENCH="$ROOT/target/release/tachyon-bench"
TACHYON="$ROOT/target/release/tachyon"
BASE_TACHYON=${BASE_TACHYON:-}
TOKEN="bench-token-0123456789abcdef"

log() { echo "[bench-controlplane $(date -u +%H:%M:%S)] $*" >&2; }
# shellcheck source=scripts/lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"
command -v mosquitto >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends mosquitto; }
command -v curl >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends curl; }
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+uncommitted')"
log "building $COMMIT"
cargo build --release -q -p tachyon -p tachyon-bench
mkdir -p "$OUT"
CFG="$OUT/tachyon.toml"
{
    cat configs/bench-one-shard.toml
    printf '\n[admin]\nbind = "127.0.0.1:%s"\ntoken = "%s"\n' "$ADMIN_PORT" "$TOKEN"
} >"$CFG"
AUTH=(-H "Authorization: Bearer $TOKEN")
# The restart runs: a deep offline queue, the recovery line logged, and no backoff (what is
# measured is the restart itself; the default backoff adds 100 ms, doubling).
RCFG="$OUT/restart.toml"
{
    sed 's/^level = "warn"/level = "info"/' "$CFG"
    printf '\n[limits]\nmax_queued_messages = 1000000\nmax_queued_bytes = 1073741824\n[supervisor]\nbackoff_min_ms = 1\nbackoff_max_ms = 1\n'
} >"$RCFG"

PID=""
start() { # system
    DATA="$OUT/data-$1-$RANDOM"
    case "$1" in
    tachyon) taskset -c "$BROKER_CORE" "$TACHYON" serve -c "$CFG" -p "$PORT" --data-dir "$DATA" 2>>"$OUT/broker.log" & ;;
    tachyon-restart) taskset -c "$BROKER_CORE" "$TACHYON" serve -c "$RCFG" -p "$PORT" --data-dir "$DATA" 2>>"$OUT/restart.log" & ;;
    tachyon-base) taskset -c "$BROKER_CORE" "$BASE_TACHYON" serve -c configs/bench-one-shard.toml -p "$PORT" --data-dir "$DATA" 2>>"$OUT/broker.log" & ;;
    mosquitto) taskset -c "$BROKER_CORE" mosquitto -p "$PORT" >>"$OUT/broker.log" 2>&1 & ;;
    esac
    PID=$!
    wait_port "$PORT" 200 || { log "$1 did not start"; return 1; }
}
stop() {
    [[ -n "$PID" ]] || return 0
    stop_pid "$PID"
    PID=""
    sleep 0.3
    rm -rf "$OUT"/data-*
}
SCRAPER=""
stop_scraper() { [[ -n "$SCRAPER" ]] && kill "$SCRAPER" 2>/dev/null; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; }
trap 'stop_scraper; stop' EXIT

gen() { taskset -c "$GEN_CORE" timeout 120 "$BENCH" "$@" --port "$PORT" >/dev/null 2>>"$OUT/generator.log" || log "run failed: $*"; }

RUNS=(
    "tp-q0-fanout8|QoS 0, fan-out 1→8, 64 B|throughput --topology fan-out --subscribers 8 --qos 0 --payload 64"
    "tp-q0-fanin8|QoS 0, fan-in 8→1, 64 B|throughput --topology fan-in --publishers 8 --qos 0 --payload 64"
    "tp-q1-pairs4|QoS 1, 4 pairs, 64 B|throughput --topology pairs --publishers 4 --qos 1 --payload 64"
    "tp-q2-pairs4|QoS 2, 4 pairs, 64 B|throughput --topology pairs --publishers 4 --qos 2 --payload 64"
    "lat-q0-10k|QoS 0 at 10k msgs/s|latency --rate 10000 --qos 0 --payload 64"
    "lat-q1-10k|QoS 1 at 10k msgs/s|latency --rate 10000 --qos 1 --payload 64"
)
field() { echo "$1" | cut -d'|' -f"$2"; }

# A scraper as Prometheus and an operator would be: /metrics every 100 ms, the client list
# every second, for at most 60 s.
scraper() {
    local end=$((SECONDS + 60)) i=0
    while ((SECONDS < end)); do
        curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/metrics" || true
        if ((i % 10 == 0)); then
            curl -s -o /dev/null "${AUTH[@]}" "http://127.0.0.1:$ADMIN_PORT/api/v1/clients" || true
        fi
        i=$((i + 1))
        sleep 0.1
    done
}

systems=(tachyon tachyon-observed mosquitto)
[[ -n "$BASE_TACHYON" ]] && systems=(tachyon-base "${systems[@]}")
want overhead || systems=()
for sys in ${systems[@]+"${systems[@]}"}; do
    for e in "${RUNS[@]}"; do
        [[ $e =~ $RUNS_MATCH ]] || continue
        label=$(field "$e" 1); args=$(field "$e" 3)
        mkdir -p "$OUT/$sys/$label"
        start "${sys%-observed}"
        if [[ $sys == *-observed ]]; then
            taskset -c "$GEN_CORE" bash -c "$(declare -f scraper); ADMIN_PORT=$ADMIN_PORT; AUTH=(${AUTH[*]@Q}); scraper" &
            SCRAPER=$!
        fi
        for r in $(seq "$REPS"); do
            t=$DURATION
            [[ $label == lat-* ]] && t=5
            # shellcheck disable=SC2086
            gen $args --duration "$t" --warmup "$WARMUP" --json "$OUT/$sys/$label/r$r.json"
        done
        stop_scraper
        stop
        log "$sys $label done"
    done
done

# Restart: an offline persistent session collects QoS 1 messages; the dataplane is killed.
if want restart; then
log "restart: filling an offline session"
start tachyon-restart
timeout 10 mosquitto_sub -p "$PORT" -i offline-keeper -c -q 1 -t 'tachyon-bench/#' -W 1 >/dev/null 2>&1 || true
gen throughput --topology pairs --publishers 4 --qos 1 --payload 64 --duration 1 --warmup 0
python3 - "$ADMIN_PORT" "$TOKEN" "$OUT/restart.json" <<'EOF'
import json, sys, time, os, signal, urllib.request
port, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
def get(path, auth=True):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None
results = []
for attempt in range(3):
    _, info = get("/api/v1/info")
    _, sess = get("/api/v1/sessions/offline-keeper")
    pid = info["dataplane_pid"]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    deadline = t0 + 60
    while time.monotonic() < deadline:
        status, _ = get("/ready", auth=False)
        if status == 200:
            _, i2 = get("/api/v1/info")
            if i2 and i2["dataplane_pid"] not in (None, pid):
                break
        time.sleep(0.002)
    ms = (time.monotonic() - t0) * 1000
    results.append({"queued": (sess or {}).get("queued"), "kill_to_ready_ms": round(ms, 1)})
    time.sleep(1)
json.dump(results, open(out, "w"), indent=1)
print(json.dumps(results))
EOF
grep -o 'recovered durable state.*' "$OUT/restart.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -3 >"$OUT/recovery-lines.txt" || true
stop
fi

# Admin at scale: 10,000 connected clients.
if want admin; then
log "admin at scale: 10,000 clients"
start tachyon
taskset -c "$GEN_CORE" "$BENCH" conns --port "$PORT" --count 10000 --broker-pid "$PID" --hold 20 \
    --json "$OUT/conns.json" >/dev/null 2>>"$OUT/generator.log" &
CONNS=$!
for _ in $(seq 300); do
    n=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^tachyon_clients_connected /{print $2}')
    [[ "${n:-0}" -ge 10000 ]] && break
    sleep 0.1
done
{
    for path in /api/v1/clients /api/v1/sessions /metrics /api/v1/stats; do
        for r in 1 2 3; do
            curl -s -o /dev/null -w "$path %{http_code} %{size_download} %{time_total}\n" "${AUTH[@]}" "http://127.0.0.1:$ADMIN_PORT$path"
        done
    done
} >"$OUT/admin-scale.txt"
wait "$CONNS" || true
stop
fi

# --- summary ---------------------------------------------------------------------------------
python3 - "$OUT" "$COMMIT" "${systems[@]}" <<'EOF'
import json, os, statistics, sys, subprocess
out, commit, systems = sys.argv[1], sys.argv[2], sys.argv[3:]
def med(sys_, label, f):
    vals = []
    d = os.path.join(out, sys_, label)
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        try:
            vals.append(f(json.load(open(os.path.join(d, n)))["results"]))
        except Exception:
            pass
    return statistics.median(vals) if vals else None
labels = sorted({l for s in systems if os.path.isdir(os.path.join(out, s)) for l in os.listdir(os.path.join(out, s))})
when = subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip()
lines = [f"commit {commit}, {when}", ""]
if systems:
    lines.append("| run | " + " | ".join(systems) + " |")
    lines.append("|---|" + "---|" * len(systems))
for l in labels:
    if l.startswith("tp-"):
        cells = [med(s, l, lambda r: r["delivered_msgs_per_sec"]) for s in systems]
        fmt = lambda v: "-" if v is None else f"{v/1000:.0f}k/s"
    else:
        cells = [(med(s, l, lambda r: r["latency_us"]["p50"]), med(s, l, lambda r: r["latency_us"]["p99"])) for s in systems]
        fmt = lambda v: "-" if v[0] is None else f"p50 {v[0]:.0f} / p99 {v[1]:.0f} µs"
    lines.append(f"| {l} | " + " | ".join(fmt(c) for c in cells) + " |")
lines.append("")
if os.path.exists(os.path.join(out, "restart.json")):
    lines.append("restart (kill -9 of the dataplane → /ready with a new one; backoff 1 ms): " + " ".join(open(os.path.join(out, "restart.json")).read().split()))
rec = os.path.join(out, "recovery-lines.txt")
if os.path.exists(rec):
    lines.append("recovery log: " + " | ".join(l.strip() for l in open(rec)))
lines.append("")
if os.path.exists(os.path.join(out, "admin-scale.txt")):
    lines.append("admin with 10,000 clients (path status bytes seconds):")
    lines += ["    " + l.rstrip() for l in open(os.path.join(out, "admin-scale.txt"))]
text = "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
EOF
log "done: $OUT/summary.md"
