"""The kernel driver's idle strategies (`shards.idle`): each serves clients, and "hybrid"
costs no CPU when nothing happens (it busy-polls only for `spin_us` after an event)."""

from __future__ import annotations

import os
import time

import pytest

import mqttraw
from conftest import HERE, start_broker

pytestmark = pytest.mark.tachyon_only("sets Tachyon's shards.idle")


def _config(tmp_path, idle: str):
    text = (HERE / "broker.toml").read_text().replace(
        "[shards]\n", f'[shards]\nidle = "{idle}"\nspin_us = 200\n'
    )
    path = tmp_path / f"broker-{idle}.toml"
    path.write_text(text)
    return path


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("idle", ["block", "spin", "hybrid"])
def test_each_idle_strategy_serves_qos0_1_2(tmp_path, idle):
    broker = start_broker(tmp_path, config=_config(tmp_path, idle))
    try:
        sub = broker.raw(mqttraw.V5)
        sub.connect(f"idle-sub-{idle}")
        sub.subscribe("idle/#", qos=2)
        pub = broker.raw(mqttraw.V311)
        pub.connect(f"idle-pub-{idle}")
        for qos in (0, 1, 2):
            pub.publish(f"idle/{qos}", f"m{qos}".encode(), qos)
            p = sub.recv_publish(timeout=5)
            assert (p.topic, p.payload, p.qos) == (f"idle/{qos}", f"m{qos}".encode(), qos)
        pub.disconnect()
        sub.disconnect()
    finally:
        assert broker.stop() == 0


def test_hybrid_blocks_when_idle(tmp_path):
    """After the last event and `spin_us`, a hybrid shard sleeps in epoll_wait: an idle
    broker uses (almost) no CPU, unlike "spin"."""
    broker = start_broker(tmp_path, config=_config(tmp_path, "hybrid"))
    try:
        time.sleep(0.5)
        before = _cpu_seconds(broker.proc.pid)
        time.sleep(2.0)
        used = _cpu_seconds(broker.proc.pid) - before
        assert used < 0.2, f"an idle hybrid broker used {used:.2f} s of CPU in 2 s"
    finally:
        assert broker.stop() == 0
