"""Persistent sessions, clean start, session expiry, session takeover and
client identifiers (paho-mqtt and raw sockets)."""

from __future__ import annotations

import time

import pytest

import mqttraw
from helpers import assert_closed_silently, assert_disconnect_then_close
from pahoclient import PROTOCOLS, QUIET, V5, publish_props

PROTO = pytest.mark.parametrize("proto", ["v311", "v5"])


def _persistent(clients, client_id, proto, **kw):
    """A client with a session that outlives its connection: v3.1.1 clean
    session 0; v5 clean start 0 + session expiry 300 s."""
    p = PROTOCOLS[proto]
    if p == V5:
        return clients(client_id, protocol=p, clean=False, session_expiry=300, **kw)
    return clients(client_id, protocol=p, clean=False, **kw)


@PROTO
@pytest.mark.parametrize("qos", [1, 2])
def test_session_resume_delivers_offline_messages(clients, proto, qos):
    """Subscribe in a persistent session, disconnect, publish while the
    client is offline, reconnect: Session Present is 1 and the queued
    messages arrive in order with their QoS.
    v3.1.1 [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] [MQTT-3.2.2-3];
    v5 [MQTT-3.1.2-5] [MQTT-3.1.2-23] [MQTT-3.2.2-3] [MQTT-4.5.0-1]."""
    s = _persistent(clients, "persist", proto)
    assert s.session_present is False
    assert s.subscribe("sess/t", qos=qos) == [qos]
    s.disconnect()
    pub = clients("pub", protocol=PROTOCOLS[proto])
    payloads = [f"offline {i}".encode() for i in range(5)]
    for pl in payloads:
        pub.publish("sess/t", pl, qos=qos)
    s2 = _persistent(clients, "persist", proto)
    assert s2.session_present is True
    got = s2.expect(len(payloads))
    assert [m.payload for m in got] == payloads
    assert {m.qos for m in got} == {qos}
    # the subscription itself survived too
    pub.publish("sess/t", b"online again", qos=qos)
    assert s2.get().payload == b"online again"
    s2.assert_no_message(0.3)


@PROTO
def test_clean_start_discards_session(clients, proto):
    """Reconnecting with clean session / clean start = 1 discards the old
    session: Session Present 0, no queued messages, no subscriptions.
    v3.1.1 [MQTT-3.1.2-6] [MQTT-3.2.2-1]; v5 [MQTT-3.1.2-4] [MQTT-3.2.2-2]."""
    p = PROTOCOLS[proto]
    s = _persistent(clients, "cs", proto)
    assert s.subscribe("cs/t", qos=1) == [1]
    s.disconnect()
    pub = clients("pub", protocol=p)
    pub.publish("cs/t", b"queued while offline", qos=1)
    s2 = clients("cs", protocol=p, clean=True)
    assert s2.session_present is False
    assert s2.subscribe("cs/sentinel", qos=1) == [1]
    pub.publish("cs/t", b"after clean start", qos=1)
    pub.publish("cs/sentinel", b"sentinel", qos=1)
    got = s2.expect_until(lambda m: m.topic == "cs/sentinel") + s2.drain(QUIET)
    assert [m.payload for m in got] == [b"sentinel"]


def test_v5_session_expiry_zero_ends_session(clients):
    """v5: clean start 0 with Session Expiry Interval 0 (absent): the
    session ends with the connection, so a reconnect finds no session
    (Session Present 0, subscription gone). 3.1.2.11.2, v5 [MQTT-3.2.2-3]."""
    s = clients("ephemeral", protocol=V5, clean=False)
    assert s.subscribe("se/t", qos=1) == [1]
    s.disconnect()
    s2 = clients("ephemeral", protocol=V5, clean=False)
    assert s2.session_present is False
    pub = clients("pub", protocol=V5)
    assert s2.subscribe("se/sentinel", qos=1) == [1]
    pub.publish("se/t", b"nobody", qos=1)
    pub.publish("se/sentinel", b"sentinel", qos=1)
    got = s2.expect_until(lambda m: m.topic == "se/sentinel") + s2.drain(QUIET)
    assert [m.payload for m in got] == [b"sentinel"]


def test_v5_session_expires_after_interval(clients):
    """v5: a session with Session Expiry Interval 1 s is discarded once it
    has been disconnected for longer than that [MQTT-4.1.0-2]."""
    s = clients("short", protocol=V5, clean=False, session_expiry=1)
    assert s.subscribe("sx/t", qos=1) == [1]
    s.disconnect()
    time.sleep(2.5)
    s2 = clients("short", protocol=V5, clean=False, session_expiry=1)
    assert s2.session_present is False


def test_v5_message_expiry_in_offline_queue(clients):
    """v5: a message queued for an offline session whose Message Expiry
    Interval passes before delivery starts is not delivered
    [MQTT-3.3.2-5]; the others arrive with the interval reduced by the time
    spent waiting [MQTT-3.3.2-6]; one without expiry keeps none."""
    s = clients("mx", protocol=V5, clean=False, session_expiry=300)
    assert s.subscribe("mx/t", qos=1) == [1]
    s.disconnect()
    pub = clients("pub", protocol=V5)
    pub.publish("mx/t", b"expires", qos=1, props=publish_props(MessageExpiryInterval=1))
    pub.publish("mx/t", b"survives", qos=1, props=publish_props(MessageExpiryInterval=60))
    pub.publish("mx/t", b"no expiry", qos=1)
    time.sleep(2.5)
    s2 = clients("mx", protocol=V5, clean=False, session_expiry=300)
    assert s2.session_present is True
    got = s2.expect(2) + s2.drain(QUIET)
    assert [m.payload for m in got] == [b"survives", b"no expiry"]
    left = got[0].prop("MessageExpiryInterval")
    assert left is not None and 50 <= left <= 58, f"remaining expiry {left}"
    assert got[1].prop("MessageExpiryInterval") is None


@PROTO
def test_session_takeover(broker, raw, clients, proto):
    """A second connection with the same client id takes the session over:
    the first connection is closed -- v5 with DISCONNECT 0x8E (Session
    taken over) first -- and the new one works. v3.1.1 [MQTT-3.1.4-2];
    v5 [MQTT-3.1.4-3].
    Mosquitto 2.0.11 deviates for v5: it closes the old connection without
    sending the DISCONNECT 0x8E."""
    version = mqttraw.V5 if proto == "v5" else mqttraw.V311
    first = raw(version)
    first.connect("same-id")
    second = raw(version)
    ack = second.connect("same-id")
    assert ack.session_present is False
    if version == mqttraw.V5:
        assert_disconnect_then_close(broker, first, mqttraw.RC_SESSION_TAKEN_OVER, ok_without=False)
    else:
        assert_closed_silently(first)
    # the new connection is fully functional
    assert second.subscribe("to/t", qos=1) == [1]
    pub = clients("pub", protocol=PROTOCOLS[proto])
    pub.publish("to/t", b"for the new connection", qos=1)
    assert second.recv_publish().payload == b"for the new connection"


@PROTO
def test_session_takeover_paho(broker, clients, proto):
    """Session takeover seen by paho clients: the first client's
    on_disconnect fires (v5: with reason code 0x8E, Session taken over) and
    the second client can publish and receive. v3.1.1 [MQTT-3.1.4-2];
    v5 [MQTT-3.1.4-3]."""
    p = PROTOCOLS[proto]
    first = clients("twin", protocol=p)
    second = clients("twin", protocol=p)
    rc, _ = first.wait_disconnected()
    if p == V5 and broker.strict:
        assert rc.value == mqttraw.RC_SESSION_TAKEN_OVER, rc
    assert second.subscribe("twin/t", qos=1) == [1]
    second.publish("twin/t", b"mine now", qos=1)
    assert second.get().payload == b"mine now"
    # paho 2.x keeps its state "connected" after a server DISCONNECT (it only changes it when
    # the socket is lost without one), so check the socket instead.
    assert first.c.socket() is None


@PROTO
def test_session_takeover_keeps_persistent_session(broker, raw, clients, proto):
    """Taking over a persistent session (clean start 0) resumes it: Session
    Present 1 and the subscriptions made on the old connection deliver to
    the new one. v3.1.1 [MQTT-3.1.4-2] [MQTT-3.2.2-2]; v5 [MQTT-3.1.4-3]
    [MQTT-3.1.2-5] [MQTT-3.2.2-3]."""
    version = mqttraw.V5 if proto == "v5" else mqttraw.V311
    props = [(mqttraw.SESSION_EXPIRY_INTERVAL, 300)] if version == mqttraw.V5 else None
    first = raw(version)
    first.connect("sticky", clean=False, props=props)
    assert first.subscribe("tk/t", qos=1) == [1]
    second = raw(version)
    ack = second.connect("sticky", clean=False, props=props)
    assert ack.session_present is True
    pkts = first.read_until_closed()
    assert all(p.type == mqttraw.DISCONNECT for p in pkts), pkts
    pub = clients("pub", protocol=PROTOCOLS[proto])
    pub.publish("tk/t", b"resumed", qos=1)
    assert second.recv_publish().payload == b"resumed"


def test_v311_empty_client_id_requires_clean_session(broker, raw, witness):
    """v3.1.1: a zero-byte client id with clean session 0 is rejected with
    CONNACK return code 2 (identifier rejected), then the connection is
    closed v3.1.1 [MQTT-3.1.3-8]."""
    c = raw(mqttraw.V311)
    c.send(mqttraw.connect(mqttraw.V311, "", clean=False))
    pkts = c.read_until_closed()
    assert [p.type for p in pkts] == [mqttraw.CONNACK], pkts
    assert pkts[0].reason_code == mqttraw.V3_IDENTIFIER_REJECTED
    assert pkts[0].session_present is False
    witness.check()


def test_v311_empty_client_id_clean_session(broker, raw):
    """v3.1.1: a zero-byte client id with clean session 1 is either
    accepted (the server assigns a unique id) or rejected with return code
    2 v3.1.1 [MQTT-3.1.3-6] [MQTT-3.1.3-9]. Two such clients may coexist."""
    a = raw(mqttraw.V311)
    ack = a.connect("", expect_rc=None)
    assert ack.reason_code in (mqttraw.V3_ACCEPTED, mqttraw.V3_IDENTIFIER_REJECTED)
    if ack.reason_code == mqttraw.V3_ACCEPTED:
        b = raw(mqttraw.V311)
        b.connect("")
        a.ping()  # a was not taken over by b
        b.ping()


def test_v5_empty_client_id_assigned(broker, raw):
    """v5: a zero-byte client id is accepted with an Assigned Client
    Identifier in CONNACK v5 [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16], or
    rejected with 0x85 v5 [MQTT-3.1.3-8]. Assigned ids are unique."""
    a = raw(mqttraw.V5)
    ack = a.connect("", expect_rc=None)
    if ack.reason_code == mqttraw.RC_CLIENT_ID_NOT_VALID:
        assert a.read_until_closed() == []
        return
    assert ack.reason_code == 0, ack
    ida = ack.props.get(mqttraw.ASSIGNED_CLIENT_IDENTIFIER)
    assert ida, f"no Assigned Client Identifier in {ack.props!r}"
    b = raw(mqttraw.V5)
    idb = b.connect("").props.get(mqttraw.ASSIGNED_CLIENT_IDENTIFIER)
    assert idb and idb != ida
    a.ping()
    b.ping()
