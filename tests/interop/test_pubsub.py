"""Publish/subscribe with paho-mqtt 2.x: QoS levels, wildcards, $-topics,
unsubscribe. Every test runs for MQTT 3.1.1 and MQTT 5.0."""

from __future__ import annotations

import time

import pytest

from pahoclient import PROTOCOLS, QUIET

PROTO = pytest.mark.parametrize("proto", ["v311", "v5"])


@PROTO
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_qos_delivery(clients, proto, pub_qos, sub_qos):
    """Messages published at pub_qos reach a subscriber at
    min(pub_qos, granted QoS), payload byte-exact, in publish order.
    SUBACK grants the requested QoS. v5 [MQTT-3.8.4-7] [MQTT-3.8.4-8]
    [MQTT-4.6.0-5]; v3.1.1 section 3.8.4 and [MQTT-4.6.0-5]."""
    p = PROTOCOLS[proto]
    sub = clients("sub", protocol=p)
    assert sub.subscribe("q/t", qos=sub_qos) == [sub_qos]
    pub = clients("pub", protocol=p)
    payloads = [b"", b"\x00\x01\x02\xff", "\u00fcnic\u00f6de".encode(), bytes(range(256)) * 40, b"last"]
    for pl in payloads:
        pub.publish("q/t", pl, qos=pub_qos)
    got = sub.expect(len(payloads))
    assert [m.payload for m in got] == payloads
    assert all(m.topic == "q/t" for m in got)
    assert [m.qos for m in got] == [min(pub_qos, sub_qos)] * len(payloads)
    assert not any(m.retain for m in got)
    sub.assert_no_message()


# filter -> topics it must match, out of TOPICS (spec 4.7 examples).
TOPICS = [
    "sport",
    "sport/",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "sport/tennis/player2",
    "sport/golf",
    "/finance",
    "finance",
    "a//c",
]
MATCHES = {
    "sport/tennis/player1/#": {
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    },
    "sport/#": {t for t in TOPICS if t == "sport" or t.startswith("sport/")},
    "sport/tennis/+": {"sport/tennis/player1", "sport/tennis/player2"},
    "sport/+": {"sport/", "sport/tennis", "sport/golf"},
    "+": {"sport", "finance"},
    "+/+": {"sport/", "sport/tennis", "sport/golf", "/finance"},
    "/+": {"/finance"},
    "+/tennis/#": {
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
    },
    "a/+/c": {"a//c"},
    "#": set(TOPICS),
    "sport/tennis/player1": {"sport/tennis/player1"},
}


@PROTO
def test_wildcards(clients, proto):
    """'+' matches exactly one level (including an empty one), '#' matches
    any number of levels including the parent, exact filters match only
    themselves. One subscriber per filter, every topic published once at
    QoS 1; each subscriber gets exactly its matching set. v5
    [MQTT-4.7.1-1] [MQTT-4.7.1-2]; v3.1.1 [MQTT-4.7.1-2] [MQTT-4.7.1-3] (4.7.1.2 / 4.7.1.3 examples),
    [MQTT-3.3.2-3] (v5), [MQTT-4.7.3-4] (v5)."""
    p = PROTOCOLS[proto]
    subs = {}
    for i, flt in enumerate(MATCHES):
        c = clients(f"wild{i}", protocol=p)
        assert c.subscribe(flt, qos=1) == [1]
        subs[flt] = c
    pub = clients("pub", protocol=p)
    for t in TOPICS:
        pub.publish(t, t.encode(), qos=1)
    got = {flt: c.expect(len(MATCHES[flt])) for flt, c in subs.items()}
    time.sleep(QUIET)  # then nothing more may have arrived anywhere
    for flt, c in subs.items():
        got[flt] += c.drain(0.001)
        topics = [m.topic for m in got[flt]]
        assert sorted(topics) == sorted(MATCHES[flt]), f"filter {flt!r}"
        assert all(m.payload == m.topic.encode() for m in got[flt])


@PROTO
def test_dollar_topics_not_matched_by_leading_wildcards(clients, proto):
    """Filters starting with '#' or '+' do not match topic names starting
    with '$'; an explicit '$...' filter does. v5 and v3.1.1 [MQTT-4.7.2-1]."""
    p = PROTOCOLS[proto]
    hash_sub = clients("hash", protocol=p)
    plus_sub = clients("plus", protocol=p)
    dollar_sub = clients("dollar", protocol=p)
    assert hash_sub.subscribe("#", qos=1) == [1]
    assert plus_sub.subscribe("+/x", qos=1) == [1]
    assert dollar_sub.subscribe("$tachyon-test/#", qos=1) == [1]
    pub = clients("pub", protocol=p)
    pub.publish("$tachyon-test/x", b"dollar", qos=0)
    pub.publish("plain/x", b"plain", qos=1)
    # The '$' subscription is the control: if the broker does not route
    # client publishes to '$' topics at all, the negative check below says
    # nothing.
    try:
        control = dollar_sub.get(timeout=2.0)
    except AssertionError:
        pytest.skip("broker does not deliver client publishes to '$' topics (allowed by spec 4.7.2); "
                    "nothing to check")  # fmt: skip
    assert (control.topic, control.payload) == ("$tachyon-test/x", b"dollar")
    for c in (hash_sub, plus_sub):
        got = c.expect_until(lambda m: m.payload == b"plain")
        got += c.drain(QUIET)
        assert [m.topic for m in got] == ["plain/x"], f"{c.client_id} got {[m.topic for m in got]}"


@PROTO
def test_unsubscribe_stops_delivery(clients, proto):
    """After UNSUBACK no new message matching the removed filter is
    delivered; other subscriptions are unaffected. v5 [MQTT-3.10.4-2]
    [MQTT-3.10.4-4]; v3.1.1 [MQTT-3.10.4-2] [MQTT-3.10.4-4]."""
    p = PROTOCOLS[proto]
    sub = clients("sub", protocol=p)
    assert sub.subscribe("u/a", qos=1) == [1]
    assert sub.subscribe("u/b", qos=1) == [1]
    pub = clients("pub", protocol=p)
    pub.publish("u/a", b"1", qos=1)
    assert sub.get().payload == b"1"
    sub.unsubscribe("u/a")
    pub.publish("u/a", b"2", qos=1)
    pub.publish("u/b", b"3", qos=1)
    got = sub.expect_until(lambda m: m.payload == b"3")
    got += sub.drain(QUIET)
    assert [(m.topic, m.payload) for m in got] == [("u/b", b"3")]


@PROTO
def test_overlapping_subscriptions_max_qos(clients, proto):
    """A client whose subscriptions overlap receives the message at the
    maximum QoS of the matching subscriptions; further copies (one per
    matching subscription, each at its own QoS) are allowed.
    v5 [MQTT-3.3.4-2]; v3.1.1 [MQTT-3.3.5-1].
    Mosquitto 2.0.11 deviates for v3.1.1: it sends a single copy at the QoS
    of the first matching subscription (0 here)."""
    p = PROTOCOLS[proto]
    sub = clients("sub", protocol=p)
    assert sub.subscribe("ov/+", qos=0) == [0]
    assert sub.subscribe("ov/#", qos=2) == [2]
    pub = clients("pub", protocol=p)
    pub.publish("ov/x", b"overlap", qos=2)
    got = sub.expect(1) + sub.drain(QUIET)
    assert all(m.payload == b"overlap" for m in got)
    if proto == "v5":
        assert 1 <= len(got) <= 2
    assert max(m.qos for m in got) == 2
