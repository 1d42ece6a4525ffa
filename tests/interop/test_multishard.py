"""Cross-shard behaviour. tests/interop/broker.toml runs Tachyon with 2
shards; each shard has its own SO_REUSEPORT listener, so the kernel spreads
these many connections over both shards by hashing their 4-tuples. The
tests cannot see which shard a connection landed on; with 16+ connections
per test the probability that all of them hash to one shard is negligible
(2 * 2^-32). They also pass on a single-threaded broker, where they are
plain fan-in/fan-out tests."""

from __future__ import annotations

import threading
import time

import pytest

import mqttraw
from pahoclient import QUIET, V5, V311

N_SUBS = 16
N_PUBS = 16
PER_PUB = 25


@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
def test_fan_in_fan_out_qos1_across_shards(clients, proto):
    """16 subscribers on 'ms/#' and 16 concurrent publishers, each sending
    25 QoS 1 messages on its own topic: every subscriber receives every
    message exactly once, in order per publisher, at QoS 1.
    v5 [MQTT-4.5.0-1] [MQTT-4.6.0-5] [MQTT-4.6.0-6];
    v3.1.1 [MQTT-4.6.0-5] [MQTT-4.6.0-6], section 4.5."""
    subs = [clients(f"ms-sub-{i:02d}", protocol=proto) for i in range(N_SUBS)]
    for s in subs:
        assert s.subscribe("ms/#", qos=1) == [1]
    pubs = [clients(f"ms-pub-{i:02d}", protocol=proto) for i in range(N_PUBS)]
    errors = []

    def run(i, pub):
        try:
            infos = [pub.publish_nowait(f"ms/{i:02d}", f"{i:02d}:{n:04d}".encode(), qos=1) for n in range(PER_PUB)]
            for info in infos:
                info.wait_for_publish(30)
                assert info.is_published()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    total = N_PUBS * PER_PUB
    expected = {f"ms/{i:02d}": [f"{i:02d}:{n:04d}".encode() for n in range(PER_PUB)] for i in range(N_PUBS)}
    for s in subs:
        msgs = s.expect(total, timeout=30)
        per_topic: dict[str, list[bytes]] = {}
        for m in msgs:
            assert m.qos == 1
            per_topic.setdefault(m.topic, []).append(m.payload)
        assert per_topic == expected, f"{s.client_id}: wrong set or order"
    time.sleep(QUIET)
    for s in subs:
        s.assert_no_message(0.001)


def test_retained_visible_from_every_connection(broker, raw):
    """A retained message stored via one connection is delivered to new
    subscribers on 16 other connections (whichever shard they land on).
    v5 [MQTT-3.3.1-5] [MQTT-3.3.1-9]."""
    p = raw(mqttraw.V5)
    p.connect("rv-pub")
    p.publish("rv/t", b"everywhere", qos=1, retain=True)
    for i in range(16):
        c = raw(mqttraw.V5)
        c.connect(f"rv-{i}")
        assert c.subscribe("rv/#", qos=1) == [1]
        m = c.recv_publish()
        assert (m.topic, m.payload, m.retain) == ("rv/t", b"everywhere", True)
        c.disconnect()


def test_takeover_chain_across_connections(broker, raw, witness):
    """Eight successive connections with the same client id (spread over
    the shards): each one takes the persistent session over from the
    previous connection, which is closed (v5: after DISCONNECT 0x8E), and
    the session's subscription keeps delivering. [MQTT-3.1.4-3]
    [MQTT-3.2.2-3]."""
    props = [(mqttraw.SESSION_EXPIRY_INTERVAL, 300)]
    prev = raw(mqttraw.V5)
    prev.connect("roamer", clean=True, props=props)
    assert prev.subscribe("roam/t", qos=1) == [1]
    pub = raw(mqttraw.V311)
    pub.connect("roam-pub")
    for i in range(8):
        cur = raw(mqttraw.V5)
        ack = cur.connect("roamer", clean=False, props=props)
        assert ack.session_present is True
        pkts = prev.read_until_closed()
        assert [p.type for p in pkts] in ([], [mqttraw.DISCONNECT]), pkts
        if broker.strict:
            assert [p.reason_code for p in pkts] == [mqttraw.RC_SESSION_TAKEN_OVER], pkts
        payload = f"hop {i}".encode()
        pub.publish("roam/t", payload, qos=1)
        assert cur.recv_publish().payload == payload
        prev = cur
    witness.check()


def test_shared_subscription_members_across_shards(broker, raw):
    """Eight members of one share group, one publisher: each of 40 QoS 1
    messages is delivered to exactly one member. v5 4.8.2."""
    members = []
    for i in range(8):
        c = raw(mqttraw.V5)
        c.connect(f"sm-{i}")
        assert c.subscribe("$share/grp/sm/t", qos=1) == [1]
        members.append(c)
    pub = raw(mqttraw.V5)
    pub.connect("sm-pub")
    sent = [f"s{i:02d}".encode() for i in range(40)]
    for pl in sent:
        pub.publish("sm/t", pl, qos=1)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < len(sent) and time.monotonic() < deadline:
        for c in members:
            m = c.poll_publish(0.02)
            if m is not None:
                got.append(m.payload)
    time.sleep(QUIET)
    for c in members:
        while (m := c.poll_publish(0.01)) is not None:
            got.append(m.payload)
    assert sorted(got) == sorted(sent)
