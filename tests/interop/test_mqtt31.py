"""MQTT 3.1 ("MQIsdp", protocol level 3) with real 3.1 clients: mosquitto_pub /
mosquitto_sub -V mqttv31 and paho-mqtt's MQTTv31, beside 3.1.1 and 5.0 clients; the
3.1 rules where they differ from 3.1.1 (MQTT V3.1 Protocol Specification, 3.1 and 3.2);
and a listener that turns 3.1 off (`listeners[].protocols`)."""

from __future__ import annotations

import subprocess

import pytest

import mqttraw as m
from conftest import CONFIG, start_broker
from helpers import assert_closed_silently
from pahoclient import V5, V31
from test_cli import HEX_RE, Sub, pub


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("sub_version", ["mqttv31", "mqttv5"])
def test_cli_mqttv31_publish(broker, tmp_path, sub_version, qos):
    """mosquitto_pub -V mqttv31 -> broker -> mosquitto_sub (3.1 or 5.0) at every
    QoS: accepted (Mosquitto, EMQX and VerneMQ accept 3.1 too), payloads byte-exact and
    in order."""
    sub = Sub(broker.port, sub_version, "v31/t", qos, 2)
    try:
        sub.wait_subscribed()
        for payload in (b"first from 3.1", bytes(range(256))):
            pub(broker.port, "mqttv31", "v31/t", payload, qos, tmp_path)
        out = sub.finish()
    finally:
        sub.kill()
    assert HEX_RE.findall(out) == [b"first from 3.1".hex(), bytes(range(256)).hex()], out


def test_paho_mqttv31_session(clients):
    """paho-mqtt's MQTTv31: a persistent session (Clean Session 0) subscribes at QoS 2,
    gets QoS 1/2 messages from a v5 publisher, keeps what is published while it is away,
    and gets it on reconnect."""
    sub = clients("paho-31", protocol=V31, clean=False)
    assert sub.subscribe("v31/s/#", qos=2) == [2]
    p = clients("paho-5", protocol=V5)
    p.publish("v31/s/a", b"one", qos=1)
    p.publish("v31/s/b", b"two", qos=2)
    got = sub.expect(2)
    assert [(x.topic, x.payload, x.qos) for x in got] == [("v31/s/a", b"one", 1), ("v31/s/b", b"two", 2)]
    sub.disconnect()
    p.publish("v31/s/c", b"while away", qos=1)
    back = clients.new("paho-31", protocol=V31, clean=False)
    back.connect()
    msg = back.get()
    assert (msg.topic, msg.payload) == ("v31/s/c", b"while away")
    back.publish("v31/s/d", b"from 3.1", qos=2)


def test_v31_connack_and_client_identifier(broker, raw):
    """MQTT 3.1 3.2: the CONNACK's first byte is reserved (no Session Present flag), so a
    resumed session still gets 20 02 00 00; 3.1 3.1: an empty client identifier gets
    CONNACK 2 (identifier rejected) and a close; a 40-byte one (over 3.1's 23) is accepted
    by default, as by Mosquitto."""
    c = raw(m.V31)
    c.connect("keep-31", clean=False)
    c.subscribe("v31/k", 1)
    c.disconnect()
    c = raw(m.V31)
    ack = c.connect("keep-31", clean=False)
    assert ack.body[:2] == b"\x00\x00", ack
    c.disconnect()
    c = raw(m.V31)
    c.send(m.connect(m.V31, ""))
    pkts = c.read_until_closed()
    assert [(p.type, p.body) for p in pkts] == [(m.CONNACK, b"\x00\x02")], pkts
    raw(m.V31).connect("x" * 40)


@pytest.mark.tachyon_only("listeners[].protocols")
def test_listener_without_mqtt31_refuses_it(tmp_path):
    """A listener with protocols = ["3.1.1", "5"] answers a 3.1 CONNECT with CONNACK 1
    (unacceptable protocol version) and closes; 3.1.1 is served. mosquitto_pub -V
    mqttv31 reports the refusal."""
    cfg = tmp_path / "no31.toml"
    cfg.write_text(
        CONFIG.read_text().replace(
            'bind = "127.0.0.1:1883"', 'bind = "127.0.0.1:1883"\nprotocols = ["3.1.1", "5"]', 1
        )
    )
    b = start_broker(tmp_path, config=cfg)
    try:
        c = m.RawClient(b.port, m.V31)
        c.send(m.connect(m.V31, "old"))
        pkts = c.read_until_closed()
        assert [(p.type, p.body) for p in pkts] == [(m.CONNACK, b"\x00\x01")], pkts
        c.close()
        r = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(b.port), "-V", "mqttv31", "-t", "t", "-m", "x"],
            capture_output=True,
            timeout=15,
        )
        assert r.returncode != 0
        assert b"protocol version" in (r.stdout + r.stderr).lower(), r
        with m.RawClient(b.port, m.V311) as ok:
            ok.connect("new")
            ok.ping()
        # A client that sends nothing after the refusal is not kept waiting.
        c = m.RawClient(b.port, m.V31)
        c.send(m.connect(m.V31, "old2"))
        assert c.read_until_closed()[0].type == m.CONNACK
        c.close()
    finally:
        assert b.stop() == 0, b.log()


def test_v31_malformed_filter_closes(broker, raw, witness):
    """A 3.1 SUBSCRIBE with a malformed Topic Filter closes the connection (as 3.1.1,
    [MQTT-4.8.0-1]); nothing is sent first."""
    c = raw(m.V31)
    c.connect("bad-31")
    c.send(m.subscribe(1, [("a/#/b", 0)], version=m.V31))
    assert_closed_silently(c)
    witness.check()
