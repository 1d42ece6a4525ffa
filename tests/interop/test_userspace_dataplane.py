"""The user-space dataplane: the broker's own TCP/IP stack (smoltcp) over a
TAP device, and over DPDK's net_tap virtual device with --no-huge.

Each test creates a network namespace, starts the broker inside it, gives the
kernel side of the interface an address, runs kernel-side MQTT clients inside
the same namespace (netns_clients.py: QoS 0/1/2 x v3.1.1/v5, 250 concurrent
connections, mosquitto_pub/sub), stops the broker with SIGTERM (a connected
v5 client must get DISCONNECT 0x8B) and deletes the namespace. No packet
leaves the namespace.

Needs root (namespaces, /dev/net/tun). The DPDK test needs a binary built
with `--features dpdk` (scripts/test.sh builds one and sets
TACHYON_REQUIRE_DPDK=1, which turns a missing DPDK into a failure).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import TACHYON_BIN, IS_TACHYON, HERE

pytestmark = pytest.mark.tachyon_only("runs Tachyon's user-space drivers")

CLIENT_TIMEOUT = 180.0
STOP_TIMEOUT = 15.0


def _can_use_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP devices)"
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        return "needs iproute2 (`ip`)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (modprobe tun)"
    return None


def _has_dpdk() -> bool:
    out = subprocess.run([TACHYON_BIN, "--version"], capture_output=True, text=True).stdout
    return "dpdk" in out


def _require_dpdk() -> None:
    """Skips without DPDK in the binary, or fails when the run demands it (scripts/test.sh)."""
    if not _has_dpdk():
        if os.environ.get("TACHYON_REQUIRE_DPDK") == "1":
            pytest.fail(f"{TACHYON_BIN} was built without DPDK but TACHYON_REQUIRE_DPDK=1")
        pytest.skip("binary built without --features dpdk")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Namespace:
    """A network namespace this test owns; deleted at the end."""

    def __init__(self, name: str):
        self.name = name
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def delete(self) -> None:
        _ip("netns", "del", self.name, check=False)


@pytest.fixture
def netns(request):
    reason = _can_use_netns()
    if reason:
        pytest.skip(reason)
    tag = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-14:]
    ns = Namespace(f"tachyon-t{os.getpid() % 100000}-{tag}")
    yield ns
    ns.delete()


def _run(netns: Namespace, tmp_path: pathlib.Path, config: str, iface: str, kernel_cidr: str, broker_ip: str) -> str:
    cfg = tmp_path / "broker.toml"
    cfg.write_text(config)
    check = subprocess.run([TACHYON_BIN, "check-config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = tmp_path / "broker.log"
    log = open(log_path, "wb")
    # `ip netns exec` execs the broker: this pid is the broker's.
    broker = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, TACHYON_BIN, "serve", "--config", str(cfg), "--data-dir", str(tmp_path / "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    client = None
    try:
        deadline = time.monotonic() + 20
        while _ip("-n", netns.name, "link", "show", iface, check=False).returncode != 0:
            assert broker.poll() is None, f"broker exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"{iface} did not appear:\n{log_path.read_text()}"
            time.sleep(0.05)
        _ip("-n", netns.name, "addr", "add", kernel_cidr, "dev", iface)
        _ip("-n", netns.name, "link", "set", iface, "up")

        client = subprocess.Popen(
            ["ip", "netns", "exec", netns.name, sys.executable, str(HERE / "netns_clients.py"),
             "--host", broker_ip, "--await-shutdown"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=HERE,
            env={**os.environ, "TACHYON_HOST_NETNS": os.readlink("/proc/self/ns/net")},
        )
        lines: list[str] = []
        waiting = threading.Event()

        def reader():
            for line in client.stdout:
                lines.append(line.rstrip())
                if line.startswith("waiting-for-shutdown"):
                    waiting.set()
            waiting.set()  # the clients stopped early (a failure, reported below)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        waiting.wait(CLIENT_TIMEOUT)
        out = "\n".join(lines)
        assert any(line.startswith("waiting-for-shutdown") for line in lines), f"clients did not finish their exchanges:\n{out}\n--- broker ---\n{log_path.read_text()[-6000:]}"
        assert broker.poll() is None, f"broker died:\n{log_path.read_text()[-6000:]}"

        broker.send_signal(signal.SIGTERM)
        status = broker.wait(STOP_TIMEOUT)
        client_status = client.wait(30)
        t.join(5)
        out = "\n".join(lines)
        assert client_status == 0, f"clients failed:\n{out}\n--- broker ---\n{log_path.read_text()[-6000:]}"
        assert status == 0, f"broker exited with {status} after SIGTERM:\n{log_path.read_text()[-6000:]}"
        for want in ("ok v3.1.1-q0", "ok v3.1.1-q1", "ok v3.1.1-q2", "ok v5-q0", "ok v5-q1", "ok v5-q2",
                     "ok 250 concurrent connections", "ok mosquitto_pub", "ok DISCONNECT 0x8B"):
            assert any(line.startswith(want) for line in lines), f"missing {want!r} in:\n{out}"
        text = log_path.read_text()
        assert "shard stopped" in text and "tachyon stopped" in text, text[-4000:]
        assert "panicked" not in text, text[-4000:]
        return text
    finally:
        for p in (client, broker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.mark.parametrize("idle", ["sleep", "pause"])
def test_tap_driver_in_a_namespace(netns, tmp_path, idle):
    text = _run(
        netns,
        tmp_path,
        f"""
[dataplane]
driver = "tap"
[userspace]
idle = "{idle}"
[tap]
interface = "ttap0"
address = "10.77.0.2/24"
""",
        "ttap0",
        "10.77.0.1/24",
        "10.77.0.2",
    )
    assert "tap interface open" in text


def test_dpdk_net_tap_in_a_namespace(netns, tmp_path):
    _require_dpdk()
    lcore = 1 if (os.cpu_count() or 1) > 1 else 0
    prefix = f"tachyon-t{os.getpid()}"
    text = _run(
        netns,
        tmp_path,
        f"""
[dataplane]
driver = "dpdk"
[userspace]
idle = "spin"
[dpdk]
eal_args = ["--no-huge", "-m", "128", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", "{prefix}"]
[[dpdk.ports]]
device = "net_tap0,iface=tdpdk0"
address = "10.78.0.2/24"
[[dpdk.core_map]]
lcore = {lcore}
port = 0
queue = 0
""",
        "tdpdk0",
        "10.78.0.1/24",
        "10.78.0.2",
    )
    assert "DPDK port started" in text


def test_dpdk_two_queues_two_shards(netns, tmp_path):
    """RSS-like spreading: DPDK's net_tap with two queues (the kernel's TAP driver picks a
    queue per flow), one shard per queue. Connections land on both shards, messages cross
    between them, and the shard of queue 1 learns peers' MACs although ARP may arrive on
    queue 0 (synthetic ARP requests)."""
    _require_dpdk()
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPUs (one shard each)")
    prefix = f"tachyon-t{os.getpid()}-2q"
    text = _run(
        netns,
        tmp_path,
        f"""
[dataplane]
driver = "dpdk"
[userspace]
idle = "sleep"
[dpdk]
eal_args = ["--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", "{prefix}"]
[[dpdk.ports]]
device = "net_tap0,iface=tdpdk2"
mac = "02:00:00:00:aa:01"
address = "10.79.0.2/24"
rx_queues = 2
[[dpdk.core_map]]
lcore = 0
port = 0
queue = 0
[[dpdk.core_map]]
lcore = 1
port = 0
queue = 1
""",
        "tdpdk2",
        "10.79.0.1/24",
        "10.79.0.2",
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # log colours
    assert "queues=2 mac=02:00:00:00:aa:01" in text
    opened = [int(n) for n in re.findall(r"connections_opened: (\d+)", text)]
    assert len(opened) == 2 and all(n > 0 for n in opened), f"both shards take connections: {opened}"


def test_host_check_reports_every_driver():
    """scripts/host-check is read-only and always ends with a summary line per driver."""
    out = subprocess.run(
        [str(HERE.parent.parent / "scripts" / "host-check")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in ("DPDK with virtual devices", "DPDK on a physical NIC / SR-IOV VF",
                 "Core isolation for poll-mode shards", "TAP driver", "Kernel sockets driver: ready"):
        assert line in text, text
    # Every finding is "ok", "--" (with what to do) or information.
    for line in text.splitlines():
        if line.startswith("--"):
            assert len(line) > 20, line


def test_dpdk_without_the_feature_says_how_to_build(tmp_path):
    """A binary without DPDK refuses driver = "dpdk" with the build command."""
    if _has_dpdk():
        pytest.skip("this binary has DPDK")
    cfg = tmp_path / "d.toml"
    cfg.write_text('[dataplane]\ndriver = "dpdk"\n[[dpdk.ports]]\ndevice = "net_tap0"\naddress = "10.78.0.2/24"\n'
                   '[[dpdk.core_map]]\nlcore = 0\nport = 0\nqueue = 0\n')
    out = subprocess.run([TACHYON_BIN, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "--features dpdk" in out.stderr, out.stderr
