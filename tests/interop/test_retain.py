"""Retained messages (3.1.1 and 5.0), retain handling, retain as published
and no local (5.0), with paho-mqtt."""

from __future__ import annotations

import time

import pytest

from pahoclient import PROTOCOLS, QUIET, V5, SubscribeOptions, publish_props

PROTO = pytest.mark.parametrize("proto", ["v311", "v5"])


def _pairs(msgs):
    return sorted((m.topic, m.payload, m.retain) for m in msgs)


@PROTO
def test_retained_lifecycle(clients, proto):
    """Set, replace, deliver and clear retained messages.
    - a retained message is stored and sent, RETAIN=1, to new subscribers
      (v3.1.1 [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8];
      v5 [MQTT-3.3.1-5] [MQTT-3.3.1-9]);
    - an existing subscription gets it with RETAIN=0 (v3.1.1
      [MQTT-3.3.1-9]; v5 [MQTT-3.3.1-12], Retain As Published = 0);
    - a newer retained message replaces the older one; RETAIN=0 publishes
      neither store nor remove (v3.1.1 [MQTT-3.3.1-12]; v5 [MQTT-3.3.1-8]);
    - an empty retained payload is forwarded normally and clears the topic
      (v3.1.1 [MQTT-3.3.1-10] [MQTT-3.3.1-11]; v5 [MQTT-3.3.1-6]
      [MQTT-3.3.1-7])."""
    p = PROTOCOLS[proto]
    pub = clients("pub", protocol=p)
    pub.publish("r/a", b"one", qos=1, retain=True)
    pub.publish("r/b", b"two", qos=1, retain=True)

    s1 = clients("s1", protocol=p)
    assert s1.subscribe("r/#", qos=1) == [1]
    assert _pairs(s1.expect(2)) == [("r/a", b"one", True), ("r/b", b"two", True)]

    pub.publish("r/a", b"uno", qos=1, retain=True)  # replace
    pub.publish("r/a", b"live only", qos=1, retain=False)  # must not replace
    pub.publish("r/b", b"", qos=1, retain=True)  # clear
    got = s1.expect(3)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        ("r/a", b"uno", False),
        ("r/a", b"live only", False),
        ("r/b", b"", False),
    ]

    s2 = clients("s2", protocol=p)
    assert s2.subscribe("r/#", qos=1) == [1]
    got = s2.expect(1) + s2.drain(QUIET)
    assert _pairs(got) == [("r/a", b"uno", True)]


@PROTO
def test_retained_qos_is_min_of_message_and_subscription(clients, proto):
    """A retained message is delivered at min(its QoS, the subscription's
    granted QoS). v5 [MQTT-3.8.4-8]; v3.1.1 section 3.8.4."""
    p = PROTOCOLS[proto]
    pub = clients("pub", protocol=p)
    pub.publish("rq/two", b"q2", qos=2, retain=True)
    pub.publish("rq/one", b"q1", qos=1, retain=True)
    s = clients("s", protocol=p)
    assert s.subscribe("rq/+", qos=1) == [1]
    got = {m.topic: m for m in s.expect(2)}
    assert got["rq/two"].qos == 1 and got["rq/one"].qos == 1
    s0 = clients("s0", protocol=p)
    assert s0.subscribe("rq/+", qos=0) == [0]
    assert {m.qos for m in s0.expect(2)} == {0}


def _resubscribe_and_probe(sub, pub, flt, rh):
    """Subscribe with retain handling rh; publish a live (non-retained)
    sentinel and return everything received up to it."""
    assert sub.subscribe(flt, options=SubscribeOptions(qos=1, retainHandling=rh)) == [1]
    pub.publish("rh/t", b"sentinel", qos=1)
    got = sub.expect_until(lambda m: m.payload == b"sentinel")
    return got + sub.drain(0.2)


@pytest.mark.parametrize("rh", [0, 1, 2])
def test_retain_handling(clients, rh):
    """v5 Retain Handling on a first subscribe and on a re-subscribe to the
    same filter: 0 sends retained messages both times (v5 [MQTT-3.3.1-9]
    [MQTT-3.8.4-3] [MQTT-3.8.4-4]); 1 only when the subscription did not
    exist (v5 [MQTT-3.3.1-10]); 2 never (v5 [MQTT-3.3.1-11])."""
    pub = clients("pub", protocol=V5)
    pub.publish("rh/t", b"kept", qos=1, retain=True)
    sub = clients("sub", protocol=V5)
    first = _resubscribe_and_probe(sub, pub, "rh/t", rh)
    second = _resubscribe_and_probe(sub, pub, "rh/t", rh)
    retained = ("rh/t", b"kept", True)
    live = ("rh/t", b"sentinel", False)

    def view(msgs):
        return [(m.topic, m.payload, m.retain) for m in msgs]

    expect_first = [retained, live] if rh in (0, 1) else [live]
    expect_second = [retained, live] if rh == 0 else [live]
    assert view(first) == expect_first
    assert view(second) == expect_second


def test_retain_as_published(clients):
    """v5 Retain As Published: with RAP=0 a live retained message is
    forwarded with RETAIN=0 ([MQTT-3.3.1-12]); with RAP=1 the RETAIN flag is
    kept as published ([MQTT-3.3.1-13])."""
    rap0 = clients("rap0", protocol=V5)
    rap1 = clients("rap1", protocol=V5)
    assert rap0.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=False)) == [1]
    assert rap1.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True)) == [1]
    pub = clients("pub", protocol=V5)
    pub.publish("rap/t", b"r", qos=1, retain=True)
    pub.publish("rap/t", b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap0.expect(2)] == [(b"r", False), (b"n", False)]
    assert [(m.payload, m.retain) for m in rap1.expect(2)] == [(b"r", True), (b"n", False)]


def test_no_local(clients):
    """v5 No Local: a client's own publications are not forwarded to it on
    a No Local subscription, others' are ([MQTT-3.8.3-3]); without No Local
    they are."""
    nl = clients("nl", protocol=V5)
    assert nl.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True)) == [1]
    loc = clients("loc", protocol=V5)
    assert loc.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=False)) == [1]
    other = clients("other", protocol=V5)
    nl.publish("nl/t", b"from nl", qos=1)
    loc.publish("nl/t", b"from loc", qos=1)
    other.publish("nl/t", b"from other", qos=1)
    got = nl.expect_until(lambda m: m.payload == b"from other") + nl.drain(QUIET)
    assert [m.payload for m in got] == [b"from loc", b"from other"]
    got = loc.expect(3) + loc.drain(0.1)
    assert [m.payload for m in got] == [b"from nl", b"from loc", b"from other"]


def test_retained_message_expiry(clients):
    """v5: a retained message whose Message Expiry Interval has passed is
    no longer sent to new subscribers ([MQTT-3.3.2-5]); one still valid is
    sent with its remaining interval ([MQTT-3.3.2-6])."""
    pub = clients("pub", protocol=V5)
    pub.publish("rx/short", b"short", qos=1, retain=True, props=publish_props(MessageExpiryInterval=1))
    pub.publish("rx/long", b"long", qos=1, retain=True, props=publish_props(MessageExpiryInterval=600))
    time.sleep(2.2)
    sub = clients("sub", protocol=V5)
    assert sub.subscribe("rx/#", qos=1) == [1]
    got = sub.expect(1) + sub.drain(QUIET)
    assert [(m.topic, m.payload) for m in got] == [("rx/long", b"long")]
    left = got[0].prop("MessageExpiryInterval")
    assert left is not None and 590 <= left <= 598, left
