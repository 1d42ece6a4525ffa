"""Takeovers under load on several shards: persistent subscribers are taken over again and
again (each reconnect lands on whichever shard the kernel picks) while publishers send QoS 1
messages. Every message the broker acknowledged must reach every subscriber's session
(v5 [MQTT-4.4.0-1], [MQTT-3.1.2-5]; acknowledged data is never lost across the cross-shard
hand-over). Bounded: 1,200 messages, 60 takeovers, a few seconds."""

from __future__ import annotations

import queue
import random
import threading
import time

import pytest

from pahoclient import V5

N_SUBS = 6
N_PUBS = 3
PER_PUB = 400
TAKEOVERS = 60


def drain(c, into: set) -> None:
    while True:
        try:
            m = c.messages.get_nowait()
        except queue.Empty:
            return
        into.add(m.payload)


def test_takeovers_under_load_lose_nothing(broker, clients):
    rng = random.Random(20261127)
    expiry = 300
    subs = []
    for i in range(N_SUBS):
        c = clients(f"chaos-sub-{i}", protocol=V5, clean=False, session_expiry=expiry)
        assert c.subscribe("chaos/#", qos=1) == [1]
        subs.append(c)
    got = [set() for _ in range(N_SUBS)]
    pubs = [clients(f"chaos-pub-{j}", protocol=V5) for j in range(N_PUBS)]
    expected = {f"{j}:{s}".encode() for j in range(N_PUBS) for s in range(PER_PUB)}

    errors: list[str] = []

    def publish(j: int) -> None:
        try:
            infos = []
            for s in range(PER_PUB):
                infos.append(pubs[j].publish_nowait(f"chaos/p{j}", f"{j}:{s}".encode(), qos=1))
                if s % 10 == 0:
                    time.sleep(0.005)
            for info in infos:
                info.wait_for_publish(10)
                if not info.is_published():
                    errors.append(f"publisher {j}: message not acknowledged")
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"publisher {j}: {e!r}")

    threads = [threading.Thread(target=publish, args=(j,)) for j in range(N_PUBS)]
    for t in threads:
        t.start()
    for _ in range(TAKEOVERS):
        i = rng.randrange(N_SUBS)
        new = clients.new(f"chaos-sub-{i}", protocol=V5, clean=False, session_expiry=expiry)
        new.connect()
        drain(subs[i], got[i])
        subs[i] = new
        time.sleep(rng.uniform(0, 0.03))
    for t in threads:
        t.join(30)
    assert not errors, errors

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for i, c in enumerate(subs):
            drain(c, got[i])
        if all(expected <= g for g in got):
            break
        time.sleep(0.05)
    for i, g in enumerate(got):
        missing = sorted(expected - g)
        assert not missing, f"subscriber {i} is missing {len(missing)} acknowledged messages, e.g. {missing[:5]}"
