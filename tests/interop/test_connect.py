"""Connection level behaviour: CONNACK contents, keep alive, ping, and the
broker's reaction to SIGTERM."""

from __future__ import annotations

import time

import pytest

import mqttraw
from helpers import assert_disconnect_then_close
from pahoclient import V5


@pytest.mark.parametrize("version", [mqttraw.V311, mqttraw.V5], ids=["v311", "v5"])
def test_connack_success(broker, raw, version):
    """A valid CONNECT gets CONNACK 0 with Session Present 0 for a clean
    start, reserved flag bits 0, and PINGREQ gets PINGRESP.
    v3.1.1 [MQTT-3.2.2-1] [MQTT-3.12.4-1]; v5 [MQTT-3.1.4-5] [MQTT-3.2.2-1]
    [MQTT-3.2.2-2] [MQTT-3.12.4-1]."""
    c = raw(version)
    ack = c.connect("hello", clean=True)
    assert ack.body[0] == 0
    if version == mqttraw.V311:
        assert len(ack.body) == 2
    c.ping()
    c.disconnect()


@pytest.mark.tachyon_only("Tachyon's CONNACK limits (topic alias max 16, max packet size 1 MiB)")
def test_tachyon_connack_properties(broker, raw):
    """Tachyon advertises its limits in the v5 CONNACK: Topic Alias Maximum
    16 and Maximum Packet Size 1048576 (from tests/interop/broker.toml);
    Receive Maximum, if present, is 1..65535. 3.2.2.3."""
    c = raw(mqttraw.V5)
    props = c.connect("props").props
    assert props.get(mqttraw.TOPIC_ALIAS_MAXIMUM) == 16, props
    assert props.get(mqttraw.MAXIMUM_PACKET_SIZE) == 1048576, props
    rm = props.get(mqttraw.RECEIVE_MAXIMUM)
    assert rm is None or 1 <= rm <= 65535, props
    assert mqttraw.ASSIGNED_CLIENT_IDENTIFIER not in props


@pytest.mark.parametrize("version", [mqttraw.V311, mqttraw.V5], ids=["v311", "v5"])
def test_keepalive_timeout_closes_and_publishes_will(broker, raw, witness, version):
    """A client silent for 1.5 x its Keep Alive (1 s, or the Server Keep
    Alive from CONNACK) is disconnected as if the network failed, so its
    will is published. v3.1.1 [MQTT-3.1.2-24] [MQTT-3.1.2-8];
    v5 [MQTT-3.1.2-22] [MQTT-3.2.2-22] [MQTT-3.1.2-8] (a v5 DISCONNECT 0x8D
    Keep Alive timeout before the close is allowed).
    Mosquitto 2.0.11 deviates: it checks keep alive only every few seconds
    and closes after about 5-6 s instead of 1.5 s."""
    c = raw(version)
    will = {"topic": "witness/will", "payload": b"timed out", "qos": 1}
    ack = c.connect("sleepy", keepalive=1, will=will)
    ka = ack.props.get(mqttraw.SERVER_KEEP_ALIVE, 1) if version == mqttraw.V5 else 1
    if ka == 0 or ka > 5:
        pytest.skip(f"server keep alive {ka}s overrides the 1 s requested")
    t0 = time.monotonic()
    pkts = c.read_until_closed(timeout=1.5 * ka + 5)
    elapsed = time.monotonic() - t0
    assert all(p.type == mqttraw.DISCONNECT and p.reason_code == mqttraw.RC_KEEP_ALIVE_TIMEOUT for p in pkts), pkts
    assert ka * 0.9 <= elapsed <= 1.5 * ka + 2.0, f"closed after {elapsed:.2f}s with keep alive {ka}s"
    w = witness.recv()
    assert (w.topic, w.payload) == ("witness/will", b"timed out")
    witness.check()


@pytest.mark.parametrize("version", [mqttraw.V311, mqttraw.V5], ids=["v311", "v5"])
def test_keepalive_pings_keep_connection(broker, raw, version):
    """A client that sends PINGREQ within its keep alive stays connected and
    gets a PINGRESP for each one. [MQTT-3.12.4-1], v3.1.1 [MQTT-3.1.2-24] /
    v5 [MQTT-3.1.2-22] (negative case)."""
    c = raw(version)
    c.connect("pinger", keepalive=1)
    for _ in range(6):
        time.sleep(0.5)
        c.ping()


def test_keepalive_zero_never_times_out(broker, raw):
    """Keep Alive 0 turns the keep alive mechanism off: a silent client
    stays connected (3.1.2.10)."""
    c = raw(mqttraw.V311)
    c.connect("no-ka", keepalive=0)
    c.assert_open(2.5)
    c.ping()


def test_sigterm_disconnects_v5_clients_with_0x8b(broker, raw, clients):
    """On SIGTERM the broker sends connected v5 clients DISCONNECT 0x8B
    (Server shutting down) and closes them, closes v3.1.1 clients without a
    packet, and exits with status 0 within 10 s. v5 3.14.2.1 / 4.13
    ([MQTT-3.14.0-1]: only after CONNACK). Checked with a raw v5 client,
    a raw v3.1.1 client and a paho v5 client.
    Mosquitto 2.0.11 just closes v5 connections without DISCONNECT 0x8B."""
    v5 = raw(mqttraw.V5)
    v5.connect("shut-v5")
    v3 = raw(mqttraw.V311)
    v3.connect("shut-v3")
    paho5 = clients("shut-paho", protocol=V5)
    broker.send_sigterm()
    pkts5 = assert_disconnect_then_close(broker, v5, mqttraw.RC_SERVER_SHUTTING_DOWN, timeout=10)
    pkts3 = v3.read_until_closed(timeout=10)
    assert pkts3 == [], pkts3
    rc, _ = paho5.wait_disconnected(timeout=10)
    if pkts5:
        assert rc.value == mqttraw.RC_SERVER_SHUTTING_DOWN, rc
    assert broker.wait(10) == 0
