#!/usr/bin/env bash
# Tachyon's full check: formatting, release build, Rust tests, and the
# Python interoperability suite (tests/interop) against the built broker.
#
# Runs from any directory, as root on a fresh Debian 12 machine; installs
# what is missing (Debian: mosquitto, mosquitto-clients, libdpdk-dev, dpdk,
# libclang-dev, pkg-config, iproute2; PyPI: paho-mqtt 2.x, pytest). The broker
# is built with the DPDK driver (--features dpdk), and the user-space dataplane
# tests (TAP, DPDK net_tap) run in network namespaces they create.
# Exits non-zero if any step fails.
#
# Environment:
#   INTEROP_TIMEOUT  seconds allowed for the pytest run (default 1200)
#   PYTEST_ARGS      extra arguments for pytest (e.g. "-k shared -x")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

STEP=0
FAILED=()
START_TIME=$(date +%s)

section() {
    STEP=$((STEP + 1))
    printf '\n==================== [%d] %s ====================\n' "$STEP" "$1"
}

fail() {
    echo "!!! FAILED: $1" >&2
    FAILED+=("$1")
}

# ---------------------------------------------------------------------------
section "dependencies"

need_apt=()
command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 \
    || need_apt+=(mosquitto-clients)
dpkg -s mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v stdbuf >/dev/null 2>&1 || need_apt+=(coreutils)
# The chart font of `tachyon-bench report` (its test draws a chart).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# The DPDK driver (ffi/ runs bindgen against libdpdk's headers) and its netns tests.
for pkg in libdpdk-dev dpdk libclang-dev pkg-config iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done

if ((${#need_apt[@]})); then
    echo "installing Debian packages: ${need_apt[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need_apt[@]}"
else
    echo "Debian packages present: mosquitto, mosquitto-clients, fonts-dejavu-core, libdpdk-dev, dpdk, libclang-dev, pkg-config, iproute2"
fi

need_pip=()
python3 - 2>/dev/null <<'EOF' || need_pip+=("paho-mqtt>=2,<3")
import sys
import paho.mqtt
sys.exit(0 if int(paho.mqtt.__version__.split(".")[0]) >= 2 else 1)
EOF
python3 -c 'import pytest' >/dev/null 2>&1 || need_pip+=(pytest)

if ((${#need_pip[@]})); then
    echo "installing from PyPI: ${need_pip[*]}"
    pip_flags=(--quiet --disable-pip-version-check)
    # Debian's own python3 is "externally managed" (PEP 668).
    if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        pip_flags+=(--break-system-packages)
    fi
    python3 -m pip install "${pip_flags[@]}" "${need_pip[@]}"
else
    echo "Python packages present: paho-mqtt 2.x, pytest"
fi
python3 -c 'import paho.mqtt, pytest; print("paho-mqtt", paho.mqtt.__version__, "/ pytest", pytest.__version__)'
mosquitto_pub --help 2>/dev/null | head -n 1 || true

# ---------------------------------------------------------------------------
section "cargo fmt --all -- --check"
if ! cargo fmt --all -- --check; then
    fail "cargo fmt (run 'cargo fmt --all')"
fi

# ---------------------------------------------------------------------------
# Every cargo step uses the same features, so the binary is built once.
FEATURES=(--features tachyon/dpdk)

section "cargo build --release --bin tachyon ${FEATURES[*]}"
if ! cargo build --release --bin tachyon "${FEATURES[@]}"; then
    fail "cargo build"
    echo "build failed: skipping the test steps" >&2
    printf '\nFAILED steps: %s\n' "${FAILED[*]}" >&2
    exit 1
fi

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
TACHYON_BIN="$TARGET_DIR/release/tachyon"
if [[ ! -x "$TACHYON_BIN" ]]; then
    fail "tachyon binary not found at $TACHYON_BIN"
    printf '\nFAILED steps: %s\n' "${FAILED[*]}" >&2
    exit 1
fi
echo "built $TACHYON_BIN"

# ---------------------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
    section "cargo nextest run --workspace --release ${FEATURES[*]}"
    nextest_flags=()
    # An empty workspace test set is not a failure of this script.
    nextest_help="$(cargo nextest run --help 2>/dev/null || true)"
    if [[ "$nextest_help" == *--no-tests* ]]; then
        nextest_flags+=(--no-tests=warn)
    fi
    if ! cargo nextest run --workspace --release "${FEATURES[@]}" "${nextest_flags[@]}"; then
        fail "cargo nextest"
    fi
else
    section "cargo test --workspace --release ${FEATURES[*]}"
    if ! cargo test --workspace --release "${FEATURES[@]}"; then
        fail "cargo test"
    fi
fi

# ---------------------------------------------------------------------------
section "conformance table: python3 scripts/conformance.py --check --strict"
# Regenerates docs/conformance.md; fails on a cited statement id the cited version lacks.
if ! python3 scripts/conformance.py --check --strict; then
    fail "conformance citations (see 'Citations of unknown ids' in docs/conformance.md)"
fi

# ---------------------------------------------------------------------------
section "interop tests: python3 -m pytest -q tests/interop"
export TACHYON_BIN
# The binary has the DPDK driver: its test must run, not skip.
export TACHYON_REQUIRE_DPDK=1
unset TACHYON_BROKER_CMD TACHYON_STRICT
# Every wait inside the suite is bounded; this is only a backstop. SIGINT
# lets pytest run its teardowns (which stop the brokers it started).
# shellcheck disable=SC2086
if ! timeout --signal=INT --kill-after=60 "${INTEROP_TIMEOUT:-1200}" \
    python3 -m pytest -q -rfEs tests/interop ${PYTEST_ARGS:-}; then
    fail "interop tests"
fi

# ---------------------------------------------------------------------------
ELAPSED=$(($(date +%s) - START_TIME))
if ((${#FAILED[@]})); then
    printf '\n==================== FAILED (%ds): %s ====================\n' "$ELAPSED" "${FAILED[*]}" >&2
    exit 1
fi
printf '\n==================== all steps passed (%ds) ====================\n' "$ELAPSED"
