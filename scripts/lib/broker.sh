# Helpers shared by the benchmark scripts (sourced, not run): waiting for a broker to
# listen, stopping a process the script started, and finding Tachyon's dataplane process.
# Every wait is bounded; processes are only ever signalled by the pid the script got.

# wait_port PORT [TRIES]: true once 127.0.0.1:PORT accepts a connection (TRIES tries 50 ms
# apart, 100 by default).
wait_port() {
    local port=$1 tries=${2:-100}
    for _ in $(seq "$tries"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# stop_pid PID: SIGTERM to a process this script started, then wait for it.
stop_pid() {
    [[ -n "${1:-}" ]] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# dataplane_pid PID: the dataplane process of `tachyon serve` PID (its child, where the
# shards run), or PID itself for other brokers.
dataplane_pid() {
    local child
    child=$(pgrep -P "$1" | head -n 1)
    echo "${child:-$1}"
}
