"""MQTT 5.0 features with paho-mqtt: shared subscriptions, subscription
identifiers, forwarded publish properties, topic aliases from the client."""

from __future__ import annotations

import time

import pytest

from pahoclient import QUIET, V5, publish_props, subscribe_props


def _collect(members, total, timeout=10.0):
    """Messages from several clients until `total` arrived overall, then a
    quiet period; returns {client_id: [payload, ...]}."""
    got = {m.client_id: [] for m in members}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < total:
        assert time.monotonic() < deadline, f"only {sum(len(v) for v in got.values())} of {total} arrived: {got}"
        for m in members:
            for msg in m.drain(0.01):
                got[m.client_id].append(msg.payload)
    time.sleep(QUIET)
    for m in members:
        got[m.client_id] += [msg.payload for msg in m.drain(0.001)]
    return got


def test_shared_subscription_distribution(clients):
    """Shared subscription $share/g/sh/t with two members: each message goes
    to exactly one member, both members get some (round robin), and a
    non-shared subscriber on the same topic still gets every message.
    Then one member disconnects and the other receives everything.
    v5 4.8.2, [MQTT-4.8.2-3]."""
    a = clients("member-a", protocol=V5)
    b = clients("member-b", protocol=V5)
    plain = clients("plain", protocol=V5)
    assert a.subscribe("$share/g/sh/t", qos=1) == [1]
    assert b.subscribe("$share/g/sh/t", qos=1) == [1]
    assert plain.subscribe("sh/t", qos=1) == [1]
    pub = clients("pub", protocol=V5)
    sent = [f"m{i:02d}".encode() for i in range(20)]
    for pl in sent:
        pub.publish("sh/t", pl, qos=1)
    got = _collect([a, b], len(sent))
    assert sorted(got["member-a"] + got["member-b"]) == sorted(sent), got
    assert got["member-a"] and got["member-b"], f"distribution not shared: {got}"
    assert [m.payload for m in plain.expect(len(sent))] == sent

    b.disconnect()
    more = [f"n{i:02d}".encode() for i in range(10)]
    for pl in more:
        pub.publish("sh/t", pl, qos=1)
    got = a.expect(len(more)) + a.drain(QUIET)
    assert [m.payload for m in got] == more


def test_shared_subscription_groups_are_independent(clients):
    """Two share groups on the same filter each get every message once.
    v5 4.8.2."""
    g1 = [clients(f"g1-{i}", protocol=V5) for i in range(2)]
    g2 = [clients(f"g2-{i}", protocol=V5) for i in range(2)]
    for c in g1:
        assert c.subscribe("$share/one/grp/#", qos=1) == [1]
    for c in g2:
        assert c.subscribe("$share/two/grp/#", qos=1) == [1]
    pub = clients("pub", protocol=V5)
    sent = [f"x{i}".encode() for i in range(10)]
    for pl in sent:
        pub.publish("grp/a", pl, qos=1)
    for group in (g1, g2):
        got = _collect(group, len(sent))
        assert sorted(sum(got.values(), [])) == sorted(sent), got


def test_subscription_identifiers(clients):
    """v5 Subscription Identifiers are returned with matching messages
    [MQTT-3.3.4-3]; overlapping subscriptions give either one copy with all
    identifiers [MQTT-3.3.4-4] or one copy per subscription with its own
    identifier (3.3.4); a subscription without identifier adds none."""
    s = clients("sid", protocol=V5)
    assert s.subscribe("si/+", qos=1, props=subscribe_props(SubscriptionIdentifier=5)) == [1]
    assert s.subscribe("si/a", qos=1, props=subscribe_props(SubscriptionIdentifier=268435455)) == [1]
    assert s.subscribe("plain/#", qos=1) == [1]
    pub = clients("pub", protocol=V5)

    pub.publish("si/c", b"single", qos=1)
    m = s.get()
    assert m.payload == b"single" and m.prop("SubscriptionIdentifier") == [5]

    pub.publish("si/a", b"both", qos=1)
    copies = s.expect(1) + s.drain(QUIET)
    assert all(c.payload == b"both" for c in copies)
    ids = [sorted(c.prop("SubscriptionIdentifier") or []) for c in copies]
    if len(copies) == 1:
        assert ids == [[5, 268435455]]
    else:
        assert sorted(ids) == [[5], [268435455]]

    pub.publish("plain/x", b"none", qos=1)
    m = s.get()
    assert m.payload == b"none" and m.prop("SubscriptionIdentifier") is None


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_properties_forwarded(clients, qos):
    """v5 publish properties reach the subscriber unaltered: Payload Format
    Indicator [MQTT-3.3.2-4], Response Topic [MQTT-3.3.2-15], Correlation
    Data [MQTT-3.3.2-16], User Properties with order and repeats
    [MQTT-3.3.2-17] [MQTT-3.3.2-18], Content Type [MQTT-3.3.2-20]; both for
    a live subscription and for the retained copy sent to a later one."""
    user = [("k", "v1"), ("k", "v2"), ("\u00fc-key", "\u2603 value"), ("empty", "")]
    props = publish_props(
        PayloadFormatIndicator=1,
        ContentType="application/json; charset=utf-8",
        ResponseTopic="reply/to/me",
        CorrelationData=b"\x00\x01corr\xff",
        UserProperty=user,
    )
    live = clients("live", protocol=V5)
    assert live.subscribe("props/t", qos=2) == [2]
    pub = clients("pub", protocol=V5)
    pub.publish("props/t", b'{"a": 1}', qos=qos, retain=True, props=props)
    late = clients("late", protocol=V5)
    assert late.subscribe("props/t", qos=2) == [2]
    for m in (live.get(), late.get()):
        assert m.payload == b'{"a": 1}'
        assert m.qos == qos
        assert m.prop("PayloadFormatIndicator") == 1
        assert m.prop("ContentType") == "application/json; charset=utf-8"
        assert m.prop("ResponseTopic") == "reply/to/me"
        assert m.prop("CorrelationData") == b"\x00\x01corr\xff"
        assert m.prop("UserProperty") == user


def test_topic_alias_from_client(clients):
    """v5: the server accepts Topic Aliases from 1 to the Topic Alias
    Maximum it sent in CONNACK [MQTT-3.3.2-12]: a PUBLISH with topic + alias
    sets the mapping, a PUBLISH with an empty topic + alias uses it, and a
    later topic + same alias remaps it (3.3.2.3.4). Subscribers see the full
    topic names."""
    sub = clients("sub", protocol=V5)
    assert sub.subscribe("ta/#", qos=1) == [1]
    pub = clients("pub", protocol=V5)
    tam = pub.connack_props.get("TopicAliasMaximum", 0)
    if tam < 1:
        pytest.skip("broker advertises no Topic Alias Maximum: client topic aliases not allowed [MQTT-3.2.2-18]")
    hi = tam
    pub.publish("ta/one", b"1", qos=1, props=publish_props(TopicAlias=1))
    pub.publish("", b"2", qos=1, props=publish_props(TopicAlias=1))
    pub.publish("ta/max", b"3", qos=0, props=publish_props(TopicAlias=hi))
    pub.publish("", b"4", qos=1, props=publish_props(TopicAlias=hi))
    pub.publish("ta/two", b"5", qos=1, props=publish_props(TopicAlias=1))  # remap
    pub.publish("", b"6", qos=2, props=publish_props(TopicAlias=1))
    got = sub.expect(6)
    assert [(m.topic, m.payload) for m in got] == [
        ("ta/one", b"1"),
        ("ta/one", b"2"),
        ("ta/max", b"3"),
        ("ta/max", b"4"),
        ("ta/two", b"5"),
        ("ta/two", b"6"),
    ]
    # no alias was requested by the subscriber (its CONNECT had no Topic
    # Alias Maximum), so none may be sent to it [MQTT-3.1.2-27]
    assert all(m.prop("TopicAlias") is None for m in got)


def test_no_matching_subscribers_reason_code(broker, raw):
    """v5 3.4.2.1, 3.5.2.1: a QoS 1/2 PUBLISH that no subscription on any shard matches gets
    PUBACK / PUBREC 0x10 (No matching subscribers), as from Mosquitto and EMQX; a retained
    one is stored all the same; once a subscriber exists (here on whatever shard the
    kernel gave it), 0x00. v3.1.1 has no reason codes."""
    import mqttraw as m

    p = raw(m.V5)
    p.connect("nobody-listens")
    p.send(m.publish("lonely/t", b"1", qos=1, pid=1))
    assert p.expect(m.PUBACK).reason_code == 0x10
    p.send(m.publish("lonely/r", b"kept", qos=2, pid=2, retain=True))
    rec = p.expect(m.PUBREC)
    # Mosquitto routes QoS 2 at PUBREL, so its PUBREC cannot know (0x00).
    assert rec.pid == 2 and rec.reason_code in ((0x10,) if broker.strict else (0x10, 0)), rec
    p.send(m.pubrel(2))
    assert p.expect(m.PUBCOMP).reason_code == 0
    s = raw(m.V5)
    s.connect("late-listener")
    assert s.subscribe("lonely/#", qos=1) == [1]
    got = s.recv_publish()
    assert got.topic == "lonely/r" and got.payload == b"kept" and got.retain
    p.send(m.publish("lonely/t", b"2", qos=1, pid=3))
    assert p.expect(m.PUBACK).reason_code == 0
    q = raw(m.V311)
    q.connect("nobody-listens-311")
    q.send(m.publish("nobody/t", b"3", qos=1, pid=4, version=m.V311))
    assert q.expect(m.PUBACK).body == b"\x00\x04"
