"""Operating limits: running out of file descriptors refuses new connections cleanly, and the
broker and its existing clients carry on."""

from __future__ import annotations

import socket
import time

import pytest

import mqttraw
from conftest import IS_TACHYON, start_broker

pytestmark = pytest.mark.tachyon_only("starts the broker with a small open-files limit")


def test_descriptor_exhaustion_refuses_new_connections_cleanly(tmp_path):
    """With `ulimit -n 48` the broker accepts what it can, refuses the rest (accept, close),
    logs it, keeps serving the connected clients, accepts again once descriptors are free,
    and still stops with status 0."""
    if not IS_TACHYON:
        pytest.skip("Tachyon only")
    broker = start_broker(tmp_path, nofile=48)
    try:
        sub = broker.raw(mqttraw.V5)
        sub.connect("fd-sub")
        assert sub.subscribe("fd/t", qos=1) == [1]
        pub = broker.raw(mqttraw.V311)
        pub.connect("fd-pub")

        # Far more connections than descriptors: bounded count, bounded time.
        flood = []
        for _ in range(120):
            try:
                flood.append(socket.create_connection(("127.0.0.1", broker.port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        assert broker.running(), "broker survived descriptor exhaustion"
        assert "out of file descriptors" in broker.log()

        # Connected clients are unaffected.
        pub.publish("fd/t", b"still here", qos=1)
        assert sub.recv_publish().payload == b"still here"

        for s in flood:
            s.close()
        time.sleep(0.5)
        late = broker.raw(mqttraw.V5)
        late.connect("fd-late")
        late.disconnect()
    finally:
        status = broker.stop()
    assert status == 0, broker.log()
