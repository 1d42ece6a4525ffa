"""Will messages with paho-mqtt: published on abrupt close, not on a normal
DISCONNECT, v5 'disconnect with will', v5 will delay interval."""

from __future__ import annotations

import time

import pytest

from pahoclient import PROTOCOLS, QUIET, V5, connect_props, will_props

PROTO = pytest.mark.parametrize("proto", ["v311", "v5"])


@PROTO
@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_on_abrupt_close(clients, proto, will_qos):
    """A will is published when the network connection closes without a
    DISCONNECT, at the will QoS, not retained (will retain 0).
    v3.1.1 [MQTT-3.1.2-8] [MQTT-3.1.2-16]; v5 [MQTT-3.1.2-8] [MQTT-3.1.2-14]."""
    p = PROTOCOLS[proto]
    watcher = clients("watcher", protocol=p)
    assert watcher.subscribe("will/#", qos=2) == [2]
    payload = b"gone \x00\xff" + bytes([will_qos])
    w = clients("w", protocol=p, will={"topic": "will/w", "payload": payload, "qos": will_qos})
    w.abort()
    m = watcher.get()
    assert (m.topic, m.payload, m.qos, m.retain) == ("will/w", payload, will_qos, False)
    watcher.assert_no_message()


@PROTO
def test_will_retained(clients, proto):
    """A will with Will Retain = 1 is published as a retained message: a
    later subscriber receives it with RETAIN=1. v3.1.1 [MQTT-3.1.2-17];
    v5 [MQTT-3.1.2-15]."""
    p = PROTOCOLS[proto]
    w = clients("w", protocol=p, will={"topic": "will/ret", "payload": b"last words", "qos": 1, "retain": True})
    w.abort()
    late = clients("late", protocol=p)
    # The will is published asynchronously after the close: poll briefly.
    deadline = time.monotonic() + 5
    while True:
        assert late.subscribe("will/ret", qos=1) == [1]
        got = late.drain(0.3)
        if got or time.monotonic() > deadline:
            break
        late.unsubscribe("will/ret")
    assert [(m.payload, m.retain) for m in got] == [(b"last words", True)]


@PROTO
def test_no_will_on_normal_disconnect(clients, proto):
    """A normal DISCONNECT discards the will: it is never published.
    v3.1.1 [MQTT-3.1.2-10]; v5 [MQTT-3.1.2-10] [MQTT-3.14.4-3]."""
    p = PROTOCOLS[proto]
    watcher = clients("watcher", protocol=p)
    assert watcher.subscribe("will/#", qos=1) == [1]
    w = clients("w", protocol=p, will={"topic": "will/w", "payload": b"should not appear", "qos": 1})
    w.disconnect()
    other = clients("other", protocol=p)
    other.publish("will/sentinel", b"sentinel", qos=1)
    got = watcher.expect_until(lambda m: m.topic == "will/sentinel")
    got += watcher.drain(1.0)
    assert [m.topic for m in got] == ["will/sentinel"]


def test_will_on_disconnect_with_will_message(clients):
    """v5: DISCONNECT with reason code 0x04 (Disconnect with Will Message)
    asks the server to publish the will (3.14.2.1) -- and 0x04 is not
    'normal disconnection', so [MQTT-3.1.2-10] does not discard it."""
    watcher = clients("watcher", protocol=V5)
    assert watcher.subscribe("will/#", qos=1) == [1]
    w = clients("w", protocol=V5, will={"topic": "will/w", "payload": b"by request", "qos": 1})
    w.disconnect(reasoncode=0x04)
    m = watcher.get()
    assert (m.topic, m.payload) == ("will/w", b"by request")


def test_will_properties_forwarded(clients):
    """v5: will properties (user properties, content type, response topic,
    correlation data, payload format) travel with the will message
    (3.1.3.2; [MQTT-3.3.2-4] [MQTT-3.3.2-15..18] [MQTT-3.3.2-20])."""
    watcher = clients("watcher", protocol=V5)
    assert watcher.subscribe("will/#", qos=1) == [1]
    wp = will_props(
        ContentType="text/plain",
        ResponseTopic="will/reply",
        CorrelationData=b"\x01\x02",
        PayloadFormatIndicator=1,
        UserProperty=[("a", "1"), ("b", "2"), ("a", "3")],
    )
    w = clients("w", protocol=V5, will={"topic": "will/props", "payload": b"text", "qos": 1, "props": wp})
    w.abort()
    m = watcher.get()
    assert m.payload == b"text"
    assert m.prop("ContentType") == "text/plain"
    assert m.prop("ResponseTopic") == "will/reply"
    assert m.prop("CorrelationData") == b"\x01\x02"
    assert m.prop("PayloadFormatIndicator") == 1
    assert m.prop("UserProperty") == [("a", "1"), ("b", "2"), ("a", "3")]


def test_will_delay_elapses(clients):
    """v5 Will Delay Interval: after an abrupt close the will is published
    only once the delay has passed (session expiry longer than the delay).
    v5 [MQTT-3.1.2-8], 3.1.3.2.2."""
    watcher = clients("watcher", protocol=V5)
    assert watcher.subscribe("will/#", qos=1) == [1]
    w = clients(
        "w",
        protocol=V5,
        clean=False,
        session_expiry=60,
        will={"topic": "will/delayed", "payload": b"late", "qos": 1, "props": will_props(WillDelayInterval=2)},
    )
    t0 = time.monotonic()
    w.abort()
    m = watcher.get(timeout=8)
    elapsed = m.received_at - t0
    assert m.payload == b"late"
    assert 1.8 <= elapsed <= 6.0, f"will published {elapsed:.2f}s after the close, delay was 2s"


def test_will_delay_suppressed_by_reconnect(clients):
    """v5: if a new connection to the session is made before the Will Delay
    Interval has passed, the will is not sent [MQTT-3.1.3-9]."""
    watcher = clients("watcher", protocol=V5)
    assert watcher.subscribe("will/#", qos=1) == [1]
    will = {"topic": "will/delayed", "payload": b"must not appear", "qos": 1, "props": will_props(WillDelayInterval=2)}
    w = clients("w", protocol=V5, clean=False, session_expiry=60, will=will)
    w.abort()
    time.sleep(0.3)
    w2 = clients("w", protocol=V5, clean=False, session_expiry=60)
    assert w2.session_present is True
    time.sleep(2.5)
    other = clients("other", protocol=V5)
    other.publish("will/sentinel", b"sentinel", qos=1)
    got = watcher.expect_until(lambda m: m.topic == "will/sentinel") + watcher.drain(QUIET)
    assert [m.topic for m in got] == ["will/sentinel"]
    w2.disconnect()


def test_will_sent_when_session_ends_before_delay(clients):
    """v5: the will is published when the will delay passes or the session
    ends, whichever is first (3.1.2.5): session expiry 1 s, will delay
    30 s -> the will arrives after about 1 s. v5 [MQTT-3.1.2-8]"""
    watcher = clients("watcher", protocol=V5)
    assert watcher.subscribe("will/#", qos=1) == [1]
    will = {"topic": "will/session-end", "payload": b"session over", "qos": 1, "props": will_props(WillDelayInterval=30)}
    w = clients("w", protocol=V5, clean=True, props=connect_props(SessionExpiryInterval=1), will=will)
    t0 = time.monotonic()
    w.abort()
    m = watcher.get(timeout=10)
    assert m.payload == b"session over"
    assert m.received_at - t0 <= 8.0
