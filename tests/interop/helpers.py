"""Assertions and helpers shared by the interop tests."""

from __future__ import annotations

import uuid

import mqttraw
from mqttraw import RawClient


class Witness:
    """A client connected before a test misbehaves; `check()` proves the
    broker still serves it (it receives a message published afterwards by
    a fresh client)."""

    TOPIC = "witness/check"

    def __init__(self, broker):
        self.broker = broker
        self.sub = RawClient(broker.port, mqttraw.V5)
        self.sub.connect("witness-sub")
        codes = self.sub.subscribe("witness/#", qos=1)
        assert codes == [1], f"witness SUBACK {codes}"
        self.count = 0

    def check(self) -> None:
        assert self.broker.running(), f"broker died (status {self.broker.proc.poll()})"
        self.count += 1
        payload = f"still alive {self.count} {uuid.uuid4().hex}".encode()
        pub = RawClient(self.broker.port, mqttraw.V311)
        try:
            pub.connect(f"witness-pub-{self.count}")
            pub.publish(self.TOPIC, payload, qos=1)
            pub.disconnect()
        finally:
            pub.close()
        while True:
            pkt = self.sub.recv_publish(timeout=5.0)
            if pkt.topic == self.TOPIC and pkt.payload == payload:
                return

    def recv(self, timeout: float = 5.0) -> mqttraw.Packet:
        return self.sub.recv_publish(timeout=timeout)

    def close(self):
        self.sub.close()


def _codes(rc) -> tuple:
    return tuple(rc) if isinstance(rc, (tuple, list, set, frozenset)) else (rc,)


def _fmt(rcs) -> str:
    return " or ".join(f"{r:#04x}" for r in rcs)


def assert_disconnect_then_close(
    broker, client: RawClient, rc, timeout: float = 5.0, ok_without: bool | None = None
) -> list:
    """The broker sends DISCONNECT with reason code `rc` (or one of the
    codes in a tuple `rc`) and closes the connection.

    The spec (v5 4.13.1) lets a server just close; Tachyon promises the
    DISCONNECT, so it is required when testing Tachyon (or when
    ok_without=False)."""
    rcs = _codes(rc)
    pkts = client.read_until_closed(timeout)
    allow_missing = (not broker.strict) if ok_without is None else ok_without
    if allow_missing and not pkts:
        return pkts
    assert [p.type for p in pkts] == [mqttraw.DISCONNECT], f"expected DISCONNECT {_fmt(rcs)} then close, got {pkts!r}"
    assert pkts[0].reason_code in rcs, f"DISCONNECT reason {pkts[0].reason_code:#04x}, expected {_fmt(rcs)}"
    return pkts


def assert_connect_rejected(broker, client: RawClient, version: int, rc, timeout: float = 5.0) -> list:
    """Reaction to an invalid CONNECT. v5: CONNACK with reason code `rc`
    then close ([MQTT-3.1.4-1] makes the CONNACK optional; Tachyon sends it,
    so it is required in strict mode). v3.1.1: close without CONNACK (there
    is no return code for a malformed CONNECT)."""
    rcs = _codes(rc)
    pkts = client.read_until_closed(timeout)
    if version != mqttraw.V5:
        assert pkts == [], f"expected the connection to be closed without a reply, got {pkts!r}"
        return pkts
    if not broker.strict and not pkts:
        return pkts
    assert [p.type for p in pkts] == [mqttraw.CONNACK], f"expected CONNACK {_fmt(rcs)} then close, got {pkts!r}"
    assert pkts[0].reason_code in rcs, f"CONNACK reason {pkts[0].reason_code:#04x}, expected {_fmt(rcs)}"
    assert not pkts[0].session_present, "Session Present must be 0 with a failure code: v5 [MQTT-3.2.2-6], v3.1.1 [MQTT-3.2.2-4]"
    return pkts


def assert_closed_silently(client: RawClient, timeout: float = 5.0) -> None:
    """The broker closes the connection without sending anything."""
    pkts = client.read_until_closed(timeout)
    assert pkts == [], f"expected the connection to be closed without a reply, got {pkts!r}"


def assert_reaction(broker, client: RawClient, version: int, rc, timeout: float = 5.0):
    """v5: DISCONNECT rc then close; v3.1.1: close without any packet."""
    if version == mqttraw.V5:
        return assert_disconnect_then_close(broker, client, rc, timeout)
    assert_closed_silently(client, timeout)
    return []
