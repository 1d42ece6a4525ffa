"""Bad input over raw sockets. Each test asserts the broker's exact
reaction and that a client connected beforehand (the `witness`) is still
served afterwards.

Reactions (spec 4.13 / v3.1.1 4.8):
- v5, after CONNACK: DISCONNECT with the reason code the spec names, then
  close. The spec lets a server close without the DISCONNECT; Tachyon
  promises it, so it is required unless TACHYON_BROKER_CMD is set.
- v5, bad CONNECT: CONNACK with a reason code >= 0x80, then close.
- v3.1.1: the connection is closed without any packet.
"""

from __future__ import annotations

import threading

import pytest

import mqttraw as m
from helpers import (
    assert_closed_silently,
    assert_connect_rejected,
    assert_disconnect_then_close,
    assert_reaction,
)

VERSIONS = pytest.mark.parametrize("version", [m.V311, m.V5], ids=["v311", "v5"])


def connected(raw, version, client_id="bad", **kw) -> m.RawClient:
    c = raw(version)
    c.connect(client_id, **kw)
    return c


def connect_packet(version, flags=0x02, payload=b"", level=None, name=b"MQTT", props=b"\x00", keepalive=60):
    """A CONNECT assembled field by field (so fields can be wrong)."""
    body = m.mqtt_str(name) + bytes([version if level is None else level, flags]) + m.u16(keepalive)
    if version == m.V5:
        body += props
    return m.packet(m.CONNECT, 0, body + payload)


# ---------------------------------------------------------------------------
# CONNECT problems
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        m.publish("t", b"x", version=m.V311),
        m.pingreq(),
        m.subscribe(1, [("t", 0)], version=m.V311),
        m.disconnect(m.V311),
    ],
    ids=["publish", "pingreq", "subscribe", "disconnect"],
)
def test_packet_before_connect(broker, raw, witness, first):
    """A first packet other than CONNECT: the connection is closed without
    a reply (no DISCONNECT before a CONNACK). v3.1.1 [MQTT-3.1.0-1]
    [MQTT-4.8.0-1]; v5 [MQTT-3.1.0-1] [MQTT-3.14.0-1]."""
    c = raw(m.V5)
    c.send(first)
    assert_closed_silently(c)
    witness.check()


@VERSIONS
def test_second_connect(broker, raw, witness, version):
    """A second CONNECT on a connection is a protocol error: v5 DISCONNECT
    0x82 then close; v3.1.1 close. [MQTT-3.1.0-2] (both versions)."""
    c = connected(raw, version)
    c.send(m.connect(version, "bad"))
    assert_reaction(broker, c, version, m.RC_PROTOCOL_ERROR)
    witness.check()


@VERSIONS
@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQIsdp"], ids=["MQTX", "lowercase", "MQIsdp"])
def test_wrong_protocol_name(broker, raw, witness, version, name):
    """A CONNECT whose protocol name is not "MQTT" is not accepted as MQTT
    3.1.1/5.0: the connection is closed, after at most a CONNACK refusing it
    (v5 0x84, v3.1.1 return code 1). v5 [MQTT-3.1.2-1]; v3.1.1
    [MQTT-3.1.2-1]. (MQIsdp is the 3.1 name, paired here with level 4/5.)"""
    c = raw(version)
    c.send(m.connect(version, "bad", protocol_name=name))
    pkts = c.read_until_closed()
    assert len(pkts) <= 1, pkts
    if pkts:
        assert pkts[0].type == m.CONNACK, pkts
        assert pkts[0].reason_code in (m.V3_UNACCEPTABLE_PROTOCOL_VERSION, m.RC_UNSUPPORTED_PROTOCOL_VERSION), pkts
    witness.check()


@pytest.mark.parametrize(
    "level,v5_layout",
    [(3, False), (6, True), (7, False), (0, False), (255, True)],
    ids=["level3-named-MQTT", "level6", "level7", "level0", "level255"],
)
def test_unsupported_protocol_level(broker, raw, witness, level, v5_layout):
    """An unsupported protocol level gets CONNACK 'unacceptable protocol
    version' -- return code 1 (v3.1.1 format) or reason code 0x84 (v5
    format) -- and the connection is closed. v3.1.1 [MQTT-3.1.2-2];
    v5 [MQTT-3.1.2-2]."""
    c = raw(m.V5 if v5_layout else m.V311)
    c.send(m.connect(m.V5 if v5_layout else m.V311, "bad", level=level))
    pkts = c.read_until_closed()
    assert [p.type for p in pkts] == [m.CONNACK], pkts
    assert pkts[0].reason_code in (m.V3_UNACCEPTABLE_PROTOCOL_VERSION, m.RC_UNSUPPORTED_PROTOCOL_VERSION), pkts
    assert pkts[0].body[0] == 0, "Session Present must be 0"
    witness.check()


@VERSIONS
def test_connect_reserved_flag(broker, raw, witness, version):
    """CONNECT flags bit 0 (reserved) set: malformed. v5 CONNACK 0x81 then
    close; v3.1.1 close. v5 [MQTT-3.1.2-3] [MQTT-3.1.4-1]; v3.1.1
    [MQTT-3.1.2-3]."""
    c = raw(version)
    c.send(m.connect(version, "bad", reserved_flag=True))
    assert_connect_rejected(broker, c, version, m.RC_MALFORMED)
    witness.check()


MALFORMED_CONNECTS = {
    # client id length says 100 bytes, 3 follow
    "client-id-overruns": (lambda v: connect_packet(v, payload=m.u16(100) + b"abc"), m.RC_MALFORMED),
    # variable header cut after the protocol level
    "truncated-variable-header": (lambda v: m.packet(m.CONNECT, 0, m.mqtt_str("MQTT") + bytes([v])), m.RC_MALFORMED),
    # will flag set, will topic and payload missing [MQTT-3.1.2-9]
    "will-fields-missing": (
        lambda v: connect_packet(v, flags=0x06, payload=m.mqtt_str("bad")),
        m.RC_MALFORMED,
    ),
    # will QoS 3: "A value of 3 (0x03) is a Malformed Packet" (v5 3.1.2.6),
    # v3.1.1 [MQTT-3.1.2-14]
    "will-qos-3": (
        lambda v: connect_packet(
            v,
            flags=0x02 | 0x04 | 0x18,
            payload=m.mqtt_str("bad") + (b"\x00" if v == m.V5 else b"") + m.mqtt_str("w/t") + m.mqtt_bin(b"x"),
        ),
        m.RC_MALFORMED,
    ),
    # will QoS 1 with will flag 0: v5 [MQTT-3.1.2-11], v3.1.1 [MQTT-3.1.2-13];
    # the spec does not say malformed or protocol error, both accepted
    "will-qos-without-will": (
        lambda v: connect_packet(v, flags=0x02 | 0x08, payload=m.mqtt_str("bad")),
        (m.RC_MALFORMED, m.RC_PROTOCOL_ERROR),
    ),
    # v5 property length larger than the rest of the packet
    "property-length-overruns": (lambda v: connect_packet(v, props=b"\x20", payload=m.mqtt_str("bad")), m.RC_MALFORMED),
    # client id with ill-formed UTF-8 [MQTT-1.5.4-1] / v3.1.1 [MQTT-1.5.3-1]
    "client-id-invalid-utf8": (lambda v: connect_packet(v, payload=m.mqtt_str(b"bad\xc3\x28")), m.RC_MALFORMED),
    # client id with U+0000 [MQTT-1.5.4-2] / v3.1.1 [MQTT-1.5.3-2]
    "client-id-nul": (lambda v: connect_packet(v, payload=m.mqtt_str(b"bad\x00id")), m.RC_MALFORMED),
}


def _cases(table, v5_only=()):
    """(version, variant) pairs, v5-only variants only for v5."""
    return [
        pytest.param(v, name, id=f"{name}-{'v5' if v == m.V5 else 'v311'}")
        for name in table
        for v in (m.V311, m.V5)
        if v == m.V5 or name not in v5_only
    ]


@pytest.mark.parametrize("version,variant", _cases(MALFORMED_CONNECTS, v5_only={"property-length-overruns"}))
def test_malformed_connect(broker, raw, witness, version, variant):
    """Malformed CONNECT packets: v5 CONNACK with the reason code (0x81
    malformed) then close, v3.1.1 close. v5 [MQTT-3.1.4-1]; v3.1.1
    [MQTT-3.1.4-1] [MQTT-4.8.0-1]; field-specific ids in the variant
    comments."""
    build, rc = MALFORMED_CONNECTS[variant]
    c = raw(version)
    c.send(build(version))
    assert_connect_rejected(broker, c, version, rc)
    witness.check()


def test_v311_password_without_username(broker, raw, witness):
    """v3.1.1: Password Flag 1 with User Name Flag 0 is invalid: the
    connection is closed [MQTT-3.1.2-22]. (v5 allows it.)"""
    c = raw(m.V311)
    c.send(connect_packet(m.V311, flags=0x02 | 0x40, payload=m.mqtt_str("bad") + m.mqtt_bin(b"pw")))
    assert_closed_silently(c)
    witness.check()


# ---------------------------------------------------------------------------
# Framing problems
# ---------------------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize("stage", ["before-connect", "after-connect"])
def test_bad_remaining_length_varint(broker, raw, witness, version, stage):
    """A Remaining Length with 5 bytes (4 continuation bits set) is
    malformed (1.5.5: at most four bytes). After CONNACK: v5 DISCONNECT 0x81
    then close, v3.1.1 close. As the first packet: close (v5 may send
    CONNACK 0x81 first [MQTT-3.1.4-1]). v5 [MQTT-4.13.1-1]; v3.1.1
    [MQTT-4.8.0-1], section 2.2.3."""
    bad = b"\xff\xff\xff\xff\x01"
    if stage == "before-connect":
        c = raw(version)
        c.send(b"\x10" + bad)
        pkts = c.read_until_closed()
        assert pkts == [] or (
            [p.type for p in pkts] == [m.CONNACK] and pkts[0].reason_code == m.RC_MALFORMED
        ), pkts
    else:
        c = connected(raw, version)
        c.send(b"\x30" + bad + b"\x00\x01t")
        assert_reaction(broker, c, version, m.RC_MALFORMED)
    witness.check()


@VERSIONS
def test_truncated_packet_then_eof(broker, raw, witness, version):
    """A PUBLISH cut short (Remaining Length says 100 bytes, 10 arrive) and
    then the client half-closes: the broker closes the connection and, as
    the connection ended without DISCONNECT, publishes the will.
    v3.1.1 [MQTT-3.1.2-8]; v5 [MQTT-3.1.2-8]."""
    will = {"topic": "witness/will", "payload": b"truncated", "qos": 1}
    c = connected(raw, version, will=will)
    full = m.publish("t/x", b"p" * 200, version=version)
    c.send(full[:10])
    c.shutdown_write()
    pkts = c.read_until_closed()
    assert pkts == [] or (
        version == m.V5 and [p.type for p in pkts] == [m.DISCONNECT] and pkts[0].reason_code == m.RC_MALFORMED
    ), pkts
    w = witness.recv()
    assert (w.topic, w.payload) == ("witness/will", b"truncated")
    witness.check()


def _pub(version, topic, *, flags=None, pid=None, props=None, payload=b"x", qos=0):
    return m.publish(topic, payload, qos=qos, pid=pid, props=props, version=version, flags=flags)


MALFORMED_PUBLISH = {
    # topic length says 16, 2 bytes follow
    "topic-overruns": (lambda v: m.packet(m.PUBLISH, 0, m.u16(16) + b"ab"), m.RC_MALFORMED, None),
    # QoS 1 but the packet ends before the packet identifier
    "missing-packet-id": (lambda v: m.packet(m.PUBLISH, 0x02, m.mqtt_str("t") + b"\x00"), m.RC_MALFORMED, None),
    # QoS 1 with packet identifier 0 [MQTT-2.2.1-3]; reason not named
    "packet-id-zero": (lambda v: _pub(v, "t", qos=1, pid=0), (m.RC_MALFORMED, m.RC_PROTOCOL_ERROR), None),
    # property length past the end of the packet
    "property-length-overruns": (lambda v: m.packet(m.PUBLISH, 0, m.mqtt_str("t") + b"\x0a\x01\x01"), m.RC_MALFORMED, m.V5),
    # Session Expiry Interval is not a PUBLISH property (2.2.2.2: malformed)
    "property-not-for-publish": (
        lambda v: _pub(v, "t", props=[(m.SESSION_EXPIRY_INTERVAL, 10)]),
        m.RC_MALFORMED,
        m.V5,
    ),
    # Payload Format Indicator twice: protocol error (3.3.2.3.2)
    "duplicate-property": (
        lambda v: _pub(v, "t", props=[(m.PAYLOAD_FORMAT_INDICATOR, 0), (m.PAYLOAD_FORMAT_INDICATOR, 0)]),
        m.RC_PROTOCOL_ERROR,
        m.V5,
    ),
    # zero-length topic without Topic Alias: v5 protocol error
    # (3.3.2.3.4), v3.1.1 [MQTT-4.7.3-1]
    "empty-topic": (lambda v: _pub(v, ""), m.RC_PROTOCOL_ERROR, None),
}


@pytest.mark.parametrize(
    "version,variant", _cases(MALFORMED_PUBLISH, v5_only={k for k, v in MALFORMED_PUBLISH.items() if v[2] == m.V5})
)
def test_malformed_publish(broker, raw, witness, version, variant):
    """Invalid PUBLISH packets after a successful CONNECT: v5 DISCONNECT
    with the reason code named for the case, then close; v3.1.1 close.
    v5 [MQTT-4.13.1-1], v3.1.1 [MQTT-4.8.0-1]; see the variant comments."""
    build, rc, _ = MALFORMED_PUBLISH[variant]
    c = connected(raw, version)
    c.send(build(version))
    assert_reaction(broker, c, version, rc)
    witness.check()


# ---------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------

INVALID_UTF8 = {
    "bad-continuation": b"bad/\xc3\x28",
    "surrogate-d800": b"bad/\xed\xa0\x80",
    "overlong-slash": b"bad\xc0\xafx",
    "byte-ff": b"bad/\xff",
}


@VERSIONS
@pytest.mark.parametrize("variant", list(INVALID_UTF8))
def test_invalid_utf8_topic_name(broker, raw, witness, version, variant):
    """Ill-formed UTF-8 in a PUBLISH topic name is a malformed packet: v5
    DISCONNECT 0x81, v3.1.1 close. v5 [MQTT-1.5.4-1]; v3.1.1
    [MQTT-1.5.3-1]."""
    c = connected(raw, version)
    c.send(m.publish(INVALID_UTF8[variant], b"x", version=version))
    assert_reaction(broker, c, version, m.RC_MALFORMED)
    witness.check()


@VERSIONS
def test_invalid_utf8_topic_filter(broker, raw, witness, version):
    """Ill-formed UTF-8 in a SUBSCRIBE topic filter: v5 DISCONNECT 0x81,
    v3.1.1 close. v5 [MQTT-1.5.4-1] [MQTT-3.8.3-1]; v3.1.1 [MQTT-1.5.3-1]."""
    c = connected(raw, version)
    c.send(m.subscribe(1, [(b"bad/\xc3\x28/#", 0)], version=version))
    assert_reaction(broker, c, version, m.RC_MALFORMED)
    witness.check()


@pytest.mark.parametrize(
    "version,where",
    _cases(["publish-topic", "subscribe-filter", "user-property"], v5_only={"user-property"}),
)
def test_null_character(broker, raw, witness, version, where):
    """U+0000 in a UTF-8 string is malformed: v5 DISCONNECT 0x81, v3.1.1
    close. v5 [MQTT-1.5.4-2] [MQTT-4.7.3-2]; v3.1.1 [MQTT-1.5.3-2]
    [MQTT-4.7.3-2]."""
    c = connected(raw, version)
    if where == "publish-topic":
        c.send(m.publish(b"a\x00b", b"x", version=version))
    elif where == "subscribe-filter":
        c.send(m.subscribe(1, [(b"a\x00/#", 0)], version=version))
    else:
        c.send(m.publish("t", b"x", props=[(m.USER_PROPERTY, ("k\x00", "v"))], version=version))
    assert_reaction(broker, c, version, m.RC_MALFORMED)
    witness.check()


# ---------------------------------------------------------------------------
# Fixed header flags and reserved bits
# ---------------------------------------------------------------------------

BAD_FLAGS = {
    # [MQTT-3.8.1-1]
    "subscribe-flags-0": (lambda v: m.subscribe(1, [("t", 0)], version=v, flags=0x0), m.RC_MALFORMED),
    # [MQTT-3.10.1-1]
    "unsubscribe-flags-0": (lambda v: m.unsubscribe(1, ["t"], version=v, flags=0x0), m.RC_MALFORMED),
    # [MQTT-3.6.1-1]
    "pubrel-flags-0": (lambda v: m.pubrel(1, flags=0x0), m.RC_MALFORMED),
    # v5 [MQTT-2.1.3-1]; v3.1.1 [MQTT-2.2.2-1] [MQTT-2.2.2-2]
    "pingreq-flags-1": (lambda v: m.pingreq(flags=0x1), m.RC_MALFORMED),
    # [MQTT-3.3.1-4]
    "publish-qos-3": (lambda v: m.publish("t", b"x", pid=1, version=v, flags=0x06), m.RC_MALFORMED),
    # v5 [MQTT-3.14.1-1]; v3.1.1 [MQTT-2.2.2-2]
    "disconnect-flags-1": (lambda v: m.disconnect(v, flags=0x1), m.RC_MALFORMED),
    # reserved subscription option bits: v5 [MQTT-3.8.3-5]; v3.1.1 [MQTT-3.8.3-4]
    "subscribe-options-reserved": (lambda v: m.subscribe(1, [("t", 0xC0)], version=v), m.RC_MALFORMED),
    # requested QoS 3: v5 protocol error (3.8.3.1); v3.1.1 [MQTT-3.8.3-4]
    "subscribe-qos-3": (lambda v: m.subscribe(1, [("t", 0x03)], version=v), m.RC_PROTOCOL_ERROR),
}


@VERSIONS
@pytest.mark.parametrize("variant", list(BAD_FLAGS))
def test_reserved_flags(broker, raw, witness, version, variant):
    """Reserved fixed-header flags or option bits with wrong values: v5
    DISCONNECT (0x81 malformed; 0x82 for subscribe QoS 3), v3.1.1 close.
    Statement ids in the variant comments.
    Mosquitto 2.0.11 deviates: it answers a PINGREQ with flags 0001 with
    PINGRESP, and uses 0x81 instead of 0x82 for subscribe QoS 3."""
    build, rc = BAD_FLAGS[variant]
    c = connected(raw, version)
    c.send(build(version))
    assert_reaction(broker, c, version, rc)
    witness.check()


def test_v5_retain_handling_3(broker, raw, witness):
    """v5: Retain Handling 3 is a protocol error (3.8.3.1): DISCONNECT 0x82.
    Mosquitto 2.0.11 deviates: it uses 0x81."""
    c = connected(raw, m.V5)
    c.send(m.subscribe(1, [("t", 0x30)]))
    assert_disconnect_then_close(broker, c, m.RC_PROTOCOL_ERROR)
    witness.check()


@pytest.mark.parametrize("ptype", [0, m.AUTH], ids=["reserved-type-0", "auth"])
@VERSIONS
def test_unexpected_packet_type(broker, raw, witness, version, ptype):
    """Packet type 0 (reserved) -- and AUTH, which v3.1.1 does not have and
    a v5 client may only send when its CONNECT carried an Authentication
    Method (4.12) -- end the connection: v5 DISCONNECT 0x81/0x82, v3.1.1
    close. v3.1.1 [MQTT-4.8.0-1]; v5 [MQTT-4.13.1-1]."""
    c = connected(raw, version)
    body = b"\x00\x00" if ptype == m.AUTH and version == m.V5 else b""
    c.send(m.packet(ptype, 0, body))
    rc = (m.RC_MALFORMED, m.RC_PROTOCOL_ERROR)
    assert_reaction(broker, c, version, rc)
    witness.check()


# ---------------------------------------------------------------------------
# Subscribe / unsubscribe payload rules
# ---------------------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize("ptype", [m.SUBSCRIBE, m.UNSUBSCRIBE], ids=["subscribe", "unsubscribe"])
def test_empty_subscribe_payload(broker, raw, witness, version, ptype):
    """SUBSCRIBE/UNSUBSCRIBE without any topic filter: v5 protocol error
    (DISCONNECT 0x82), v3.1.1 close. v5 [MQTT-3.8.3-2] [MQTT-3.10.3-2];
    v3.1.1 [MQTT-3.8.3-3] [MQTT-3.10.3-2]. ("A SUBSCRIBE/UNSUBSCRIBE packet
    with no Payload is a Protocol Error", 3.8.3 / 3.10.3.)
    Mosquitto 2.0.11 deviates for v5: it uses 0x81."""
    c = connected(raw, version)
    body = m.u16(1) + (b"\x00" if version == m.V5 else b"")
    c.send(m.packet(ptype, 0x2, body))
    assert_reaction(broker, c, version, m.RC_PROTOCOL_ERROR)
    witness.check()


def test_v5_no_local_on_shared_subscription(broker, raw, witness):
    """v5: No Local on a shared subscription is a protocol error
    [MQTT-3.8.3-4]: DISCONNECT 0x82.
    Mosquitto 2.0.11 deviates: it accepts the subscription."""
    c = connected(raw, m.V5)
    c.send(m.subscribe(1, [("$share/g/t", m.sub_options(qos=1, no_local=True))]))
    assert_disconnect_then_close(broker, c, m.RC_PROTOCOL_ERROR)
    witness.check()


def test_v5_subscription_identifier_zero(broker, raw, witness):
    """v5: a Subscription Identifier of 0 is a protocol error (3.8.2.1.2):
    DISCONNECT 0x82.
    Mosquitto 2.0.11 deviates: it uses 0x81."""
    c = connected(raw, m.V5)
    c.send(m.subscribe(1, [("t", 1)], props=[(m.SUBSCRIPTION_IDENTIFIER, 0)]))
    assert_disconnect_then_close(broker, c, m.RC_PROTOCOL_ERROR)
    witness.check()


# ---------------------------------------------------------------------------
# Topic names
# ---------------------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "+", "#", "a+", "b#"])
def test_wildcard_in_topic_name(broker, raw, witness, version, topic):
    """Wildcards are not allowed in a PUBLISH topic name: v5 DISCONNECT 0x90
    (Topic Name invalid), v3.1.1 close. v5 [MQTT-3.3.2-2] [MQTT-4.7.0-1];
    v3.1.1 [MQTT-3.3.2-2].
    The spec names no reason code for this case; Tachyon promises 0x90, so
    only 0x90 is accepted from it. Other brokers may also use 0x82
    (Mosquitto 2.0.11 does)."""
    c = connected(raw, version)
    c.send(m.publish(topic, b"x", qos=1, pid=1, version=version))
    rc = m.RC_TOPIC_NAME_INVALID if broker.strict else (m.RC_TOPIC_NAME_INVALID, m.RC_PROTOCOL_ERROR)
    assert_reaction(broker, c, version, rc)
    witness.check()


# ---------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------


def _max_packet_size(broker, raw) -> int:
    c = connected(raw, m.V5, "mps-probe")
    mps = c.connack.props.get(m.MAXIMUM_PACKET_SIZE)
    c.disconnect()
    if broker.is_tachyon:
        assert mps == 1048576, f"Tachyon must advertise the configured max_packet_size, CONNACK has {mps}"
    elif mps is None:
        pytest.skip("broker advertises no Maximum Packet Size (no limit to exceed)")
    return mps


def _publish_of_size(version, topic, size, qos=1, pid=1):
    """A PUBLISH whose total encoded size is exactly `size` bytes; returns
    (packet, payload length)."""
    base = len(m.publish(topic, b"", qos=qos, pid=pid, version=version))
    n = size - base
    while True:
        pkt = m.publish(topic, b"z" * n, qos=qos, pid=pid, version=version)
        if len(pkt) == size:
            return pkt, n
        n -= len(pkt) - size


@VERSIONS
def test_packet_too_large(broker, raw, witness, version):
    """Maximum Packet Size (Tachyon: max_packet_size = 1 MiB). A PUBLISH of
    exactly the limit is accepted and delivered; one byte more: v5
    DISCONNECT 0x95 (Packet too large) then close, v3.1.1 close.
    v5 3.2.2.3.6 [MQTT-3.2.2-15] and 4.13 ("The packet size is the total
    number of bytes in an MQTT Control Packet", 3.1.2.11.4); v3.1.1
    [MQTT-4.8.0-1].
    Skipped for an external broker that advertises no limit. Mosquitto
    2.0.11 with max_packet_size set deviates: it leaves the fixed header
    out of the count and accepts packets up to 3 bytes over the limit."""
    mps = _max_packet_size(broker, raw)
    c = connected(raw, version)
    at_limit, n = _publish_of_size(version, "witness/big", mps, pid=1)
    c.send(at_limit)
    ack = c.expect(m.PUBACK, timeout=10)
    assert ack.pid == 1 and ack.reason_code < 0x80, ack
    got = witness.recv(timeout=10)
    assert got.topic == "witness/big" and got.payload == b"z" * n
    over, _ = _publish_of_size(version, "witness/big", mps + 1, pid=2)
    sender = threading.Thread(target=c.try_send, args=(over,), daemon=True)
    sender.start()
    assert_reaction(broker, c, version, m.RC_PACKET_TOO_LARGE, timeout=10)
    sender.join(10)
    witness.check()


def test_receive_maximum_exceeded(broker, raw, witness):
    """v5: more unacknowledged QoS 2 PUBLISH packets than the Receive
    Maximum the server sent in CONNACK: DISCONNECT 0x93 (Receive Maximum
    exceeded) then close. [MQTT-3.3.4-7], 3.2.2.3.3 ("If it receives more
    than Receive Maximum QoS 1 and QoS 2 PUBLISH packets where it has not
    sent a PUBACK or PUBCOMP in response, the Server uses a DISCONNECT packet
    with Reason Code 0x93").
    Mosquitto 2.0.11 deviates: it answers the excess PUBLISH with PUBREC
    0x97 (Quota exceeded) and keeps the connection."""
    c = raw(m.V5)
    ack = c.connect("greedy")
    rm = ack.props.get(m.RECEIVE_MAXIMUM, 65535)
    if rm >= 65535:
        pytest.skip(f"Receive Maximum is {rm}: it cannot be exceeded with distinct 16-bit packet identifiers")
    # rm + 1 QoS 2 PUBLISHes, never PUBREL'd: the first rm are inflight
    burst = b"".join(m.publish("witness/rm", b"%d" % i, qos=2, pid=i) for i in range(1, rm + 2))
    c.send(burst)
    pkts = c.read_until_closed(timeout=10)
    recs = [p for p in pkts if p.type == m.PUBREC]
    rest = [p for p in pkts if p.type != m.PUBREC]
    assert len(recs) <= rm, f"{len(recs)} PUBRECs for a Receive Maximum of {rm}"
    assert all(r.reason_code < 0x80 for r in recs), recs
    if broker.strict or rest:
        assert [p.type for p in rest] == [m.DISCONNECT], rest
        assert rest[0].reason_code == m.RC_RECEIVE_MAXIMUM_EXCEEDED, rest
    witness.check()


# ---------------------------------------------------------------------------
# Topic aliases
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["above-maximum", "zero", "unmapped"])
def test_topic_alias_invalid(broker, raw, witness, variant):
    """v5 topic alias errors (3.3.4: "A Topic Alias value of 0 or greater
    than the Maximum Topic Alias is a Protocol Error, the receiver uses
    DISCONNECT with Reason Code of 0x94"; "If the receiver does not already
    have a mapping for this Topic Alias ... zero length Topic Name ... 0x82"):
    alias 0 [MQTT-3.3.2-8] or above the Topic Alias Maximum from CONNACK
    [MQTT-3.3.2-9] -> DISCONNECT 0x94; an empty topic with an alias never
    mapped on this connection -> DISCONNECT 0x82.
    Mosquitto 2.0.11 deviates for alias 0: it sends 0x81."""
    c = raw(m.V5)
    tam = c.connect("aliaser").props.get(m.TOPIC_ALIAS_MAXIMUM, 0)
    if variant == "above-maximum":
        pkt, rc = m.publish("t/x", b"x", props=[(m.TOPIC_ALIAS, tam + 1)]), m.RC_TOPIC_ALIAS_INVALID
    elif variant == "zero":
        pkt, rc = m.publish("t/x", b"x", props=[(m.TOPIC_ALIAS, 0)]), m.RC_TOPIC_ALIAS_INVALID
    else:
        if tam < 1:
            pytest.skip("Topic Alias Maximum is 0: every alias is out of range")
        pkt, rc = m.publish("", b"x", props=[(m.TOPIC_ALIAS, 1)]), m.RC_PROTOCOL_ERROR
    c.send(pkt)
    assert_disconnect_then_close(broker, c, rc)
    witness.check()


def test_topic_alias_not_carried_to_new_connection(broker, raw, witness):
    """v5: topic alias mappings belong to one network connection
    [MQTT-3.3.2-7]: a mapping made before a reconnect cannot be used after
    it (empty topic + alias -> DISCONNECT 0x82)."""
    c = raw(m.V5)
    tam = c.connect("alias-carrier").props.get(m.TOPIC_ALIAS_MAXIMUM, 0)
    if tam < 1:
        pytest.skip("Topic Alias Maximum is 0")
    c.publish("witness/alias", b"mapped", qos=1, props=[(m.TOPIC_ALIAS, 1)])
    assert witness.recv().payload == b"mapped"
    c.disconnect()
    c2 = raw(m.V5)
    c2.connect("alias-carrier")
    c2.send(m.publish("", b"stale", props=[(m.TOPIC_ALIAS, 1)]))
    assert_disconnect_then_close(broker, c2, m.RC_PROTOCOL_ERROR)
    witness.check()


# ---------------------------------------------------------------------------
# Packet identifiers
# ---------------------------------------------------------------------------


@VERSIONS
def test_qos2_duplicate_publish_before_pubrel(broker, raw, witness, version):
    """Inbound QoS 2: PUBLISHes reusing the packet id of a message not yet
    released (no PUBREL yet) are retransmissions, not errors -- the broker
    answers each with PUBREC and does not deliver the message again; after
    PUBCOMP the same id carries a new message. v5 [MQTT-4.3.3-10]
    [MQTT-4.3.3-12]; v3.1.1 [MQTT-4.3.3-2] (method B), [MQTT-3.3.1-1] (DUP).
    Mosquitto 2.0.11 deviates: it answers the first duplicate but drops the
    connection (v5: DISCONNECT 0x82) on the second."""
    c = connected(raw, version)
    first = m.publish("witness/q2", b"once", qos=2, pid=7, version=version)
    again = m.publish("witness/q2", b"once", qos=2, pid=7, dup=True, version=version)
    c.send(first)
    assert c.expect(m.PUBREC).pid == 7
    for _ in range(2):
        c.send(again)
        rec = c.expect(m.PUBREC)
        assert rec.pid == 7 and rec.reason_code < 0x80, rec
    c.send(m.pubrel(7))
    assert c.expect(m.PUBCOMP).pid == 7
    # packet id 7 is free again: this is a new message
    c.send(m.publish("witness/q2", b"second", qos=2, pid=7, version=version))
    assert c.expect(m.PUBREC).pid == 7
    c.send(m.pubrel(7))
    assert c.expect(m.PUBCOMP).pid == 7
    got = [witness.recv().payload, witness.recv().payload]
    assert got == [b"once", b"second"]
    witness.check()  # no further copy of "once" arrived before the check message


@VERSIONS
def test_qos2_retransmission_after_reconnect(broker, raw, witness, version):
    """Inbound QoS 2 across reconnects of a persistent session: the client
    resends the unreleased PUBLISH (DUP=1, same packet id) after a
    reconnect and gets PUBREC; after another reconnect it resends the PUBREL
    and gets PUBCOMP. The message is delivered exactly once.
    v5 [MQTT-4.4.0-1] [MQTT-4.3.3-10] [MQTT-4.3.3-11]; v3.1.1 [MQTT-4.4.0-1]
    [MQTT-4.3.3-2]."""
    props = [(m.SESSION_EXPIRY_INTERVAL, 300)] if version == m.V5 else None
    c = raw(version)
    c.connect("q2-roamer", clean=False, props=props)
    c.send(m.publish("witness/q2r", b"exactly once", qos=2, pid=9, version=version))
    assert c.expect(m.PUBREC).pid == 9
    c.close()
    c = raw(version)
    assert c.connect("q2-roamer", clean=False, props=props).session_present
    c.send(m.publish("witness/q2r", b"exactly once", qos=2, pid=9, dup=True, version=version))
    rec = c.expect(m.PUBREC)
    assert rec.pid == 9 and rec.reason_code < 0x80, rec
    c.close()
    c = raw(version)
    assert c.connect("q2-roamer", clean=False, props=props).session_present
    c.send(m.pubrel(9))
    comp = c.expect(m.PUBCOMP)
    assert comp.pid == 9 and comp.reason_code == 0, comp
    assert witness.recv().payload == b"exactly once"
    witness.check()


@VERSIONS
def test_pubrel_for_unknown_packet_id(broker, raw, witness, version):
    """A PUBREL for a packet id with no QoS 2 message in flight is not
    fatal: PUBCOMP is sent (v5 with reason 0x92 'Packet Identifier not
    found' or 0x00) and the connection stays usable. v5 [MQTT-4.3.3-11],
    3.7.2.1; v3.1.1 [MQTT-4.3.3-2]."""
    c = connected(raw, version)
    c.send(m.pubrel(4242))
    comp = c.expect(m.PUBCOMP)
    assert comp.pid == 4242
    if version == m.V5:
        assert comp.reason_code in (0x00, 0x92), comp
    c.ping()
    witness.check()
