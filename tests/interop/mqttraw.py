"""A tiny hand-rolled MQTT 3.1.1 / 5.0 codec and blocking socket client.

It exists so that tests can send exactly the bytes they want (including
invalid ones) and observe exactly what the broker answers: which packets,
with which reason codes, and whether the connection is then closed.

Nothing here validates what it builds: that is the point.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import deque
from dataclasses import dataclass

# Packet types.
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

TYPE_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# Protocol levels (3 is MQTT 3.1, protocol name "MQIsdp").
V31 = 3
V311 = 4
V5 = 5

# MQTT 5 property identifiers.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16 = {0x13, 0x21, 0x22, 0x23}
_U32 = {0x02, 0x11, 0x18, 0x27}
_VARINT = {0x0B}
_STRING = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BINARY = {0x09, 0x16}
_PAIR = {0x26}

# Reason codes used by the tests.
RC_SUCCESS = 0x00
RC_DISCONNECT_WITH_WILL = 0x04
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
RC_CLIENT_ID_NOT_VALID = 0x85
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_NAME_INVALID = 0x90
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95

# v3.1.1 CONNACK return codes.
V3_ACCEPTED = 0
V3_UNACCEPTABLE_PROTOCOL_VERSION = 1
V3_IDENTIFIER_REJECTED = 2


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Variable Byte Integer, minimal encoding (MQTT 1.5.5)."""
    if n < 0 or n > 268_435_455:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def mqtt_str(s: str | bytes) -> bytes:
    """UTF-8 Encoded String. Bytes are written as given (for invalid input)."""
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return u16(len(b)) + b


def mqtt_bin(b: bytes) -> bytes:
    return u16(len(b)) + bytes(b)


def encode_properties(props) -> bytes:
    """Encode properties, given as a list of (id, value) pairs (repeats kept
    in order) or a dict; the result includes the Property Length prefix."""
    if props is None:
        props = []
    if isinstance(props, dict):
        props = list(props.items())
    body = bytearray()
    for pid, value in props:
        body += varint(pid)
        if pid in _BYTE:
            body.append(value)
        elif pid in _U16:
            body += u16(value)
        elif pid in _U32:
            body += u32(value)
        elif pid in _VARINT:
            body += varint(value)
        elif pid in _STRING:
            body += mqtt_str(value)
        elif pid in _BINARY:
            body += mqtt_bin(value)
        elif pid in _PAIR:
            k, v = value
            body += mqtt_str(k) + mqtt_str(v)
        else:
            raise ValueError(f"unknown property id {pid:#x}")
    return varint(len(body)) + bytes(body)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    """Fixed header (type, flags, Remaining Length) + body."""
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + bytes(body)


def connect(
    version: int = V5,
    client_id: str | bytes = "",
    clean: bool = True,
    keepalive: int = 60,
    props=None,
    will: dict | None = None,
    username: str | None = None,
    password: bytes | None = None,
    protocol_name: str | bytes = "MQTT",
    level: int | None = None,
    reserved_flag: bool = False,
    v5_layout: bool | None = None,
) -> bytes:
    """Build a CONNECT packet.

    will: {"topic": str|bytes, "payload": bytes, "qos": int, "retain": bool,
           "props": [...] (v5 only)}
    level overrides the protocol level byte; v5_layout says whether the
    body carries v5 properties (defaults to version == 5).
    """
    if level is None:
        level = version
    if version == V31 and protocol_name == "MQTT":
        protocol_name = "MQIsdp"
    if v5_layout is None:
        v5_layout = version == V5
    flags = 0
    if reserved_flag:
        flags |= 0x01
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04
        flags |= (will.get("qos", 0) & 0x03) << 3
        if will.get("retain"):
            flags |= 0x20
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = bytearray()
    body += mqtt_str(protocol_name)
    body.append(level)
    body.append(flags)
    body += u16(keepalive)
    if v5_layout:
        body += encode_properties(props)
    body += mqtt_str(client_id)
    if will is not None:
        if v5_layout:
            body += encode_properties(will.get("props"))
        body += mqtt_str(will["topic"])
        body += mqtt_bin(will.get("payload", b""))
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += mqtt_bin(password)
    return packet(CONNECT, 0, bytes(body))


def publish(
    topic: str | bytes,
    payload: bytes = b"",
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    pid: int | None = None,
    props=None,
    version: int = V5,
    flags: int | None = None,
) -> bytes:
    """Build a PUBLISH. `flags` overrides the computed fixed-header flags."""
    if flags is None:
        flags = (0x08 if dup else 0) | ((qos & 0x03) << 1) | (0x01 if retain else 0)
    body = bytearray(mqtt_str(topic))
    if qos > 0 or (flags & 0x06):
        body += u16(pid if pid is not None else 1)
    if version == V5:
        body += encode_properties(props)
    body += payload
    return packet(PUBLISH, flags, bytes(body))


def subscribe(
    pid: int,
    filters,
    props=None,
    version: int = V5,
    flags: int = 0x02,
) -> bytes:
    """filters: list of (filter, options byte). For v3.1.1 the options byte
    is the requested QoS."""
    body = bytearray(u16(pid))
    if version == V5:
        body += encode_properties(props)
    for flt, opts in filters:
        body += mqtt_str(flt)
        body.append(opts)
    return packet(SUBSCRIBE, flags, bytes(body))


def sub_options(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    return (qos & 3) | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (
        (retain_handling & 3) << 4
    )


def unsubscribe(pid: int, filters, props=None, version: int = V5, flags: int = 0x02) -> bytes:
    body = bytearray(u16(pid))
    if version == V5:
        body += encode_properties(props)
    for flt in filters:
        body += mqtt_str(flt)
    return packet(UNSUBSCRIBE, flags, bytes(body))


def _ack(ptype: int, pid: int, flags: int = 0, rc: int | None = None) -> bytes:
    body = u16(pid)
    if rc is not None:
        body += bytes([rc])
    return packet(ptype, flags, body)


def puback(pid: int) -> bytes:
    return _ack(PUBACK, pid)


def pubrec(pid: int) -> bytes:
    return _ack(PUBREC, pid)


def pubrel(pid: int, flags: int = 0x02) -> bytes:
    return _ack(PUBREL, pid, flags)


def pubcomp(pid: int) -> bytes:
    return _ack(PUBCOMP, pid)


def pingreq(flags: int = 0) -> bytes:
    return packet(PINGREQ, flags, b"")


def disconnect(version: int = V5, rc: int = 0, props=None, flags: int = 0) -> bytes:
    if version != V5:
        return packet(DISCONNECT, flags, b"")
    if rc == 0 and not props:
        return packet(DISCONNECT, flags, b"")
    return packet(DISCONNECT, flags, bytes([rc]) + encode_properties(props))


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


class Props:
    """Decoded MQTT 5 properties: id -> list of values, in wire order."""

    def __init__(self):
        self.items: list[tuple[int, object]] = []

    def add(self, pid, value):
        self.items.append((pid, value))

    def get(self, pid, default=None):
        for k, v in self.items:
            if k == pid:
                return v
        return default

    def all(self, pid):
        return [v for k, v in self.items if k == pid]

    def __contains__(self, pid):
        return any(k == pid for k, _ in self.items)

    def __repr__(self):
        return "Props(" + ", ".join(f"{k:#04x}={v!r}" for k, v in self.items) + ")"


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    mult = 1
    value = 0
    for i in range(4):
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult *= 128
    raise ValueError("varint longer than 4 bytes")


def _read_str(buf, pos):
    (n,) = struct.unpack_from("!H", buf, pos)
    pos += 2
    return bytes(buf[pos : pos + n]).decode("utf-8"), pos + n


def _read_bin(buf, pos):
    (n,) = struct.unpack_from("!H", buf, pos)
    pos += 2
    return bytes(buf[pos : pos + n]), pos + n


def decode_properties(buf: bytes, pos: int) -> tuple[Props, int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    props = Props()
    while pos < end:
        pid, pos = decode_varint(buf, pos)
        if pid in _BYTE:
            v = buf[pos]
            pos += 1
        elif pid in _U16:
            (v,) = struct.unpack_from("!H", buf, pos)
            pos += 2
        elif pid in _U32:
            (v,) = struct.unpack_from("!I", buf, pos)
            pos += 4
        elif pid in _VARINT:
            v, pos = decode_varint(buf, pos)
        elif pid in _STRING:
            v, pos = _read_str(buf, pos)
        elif pid in _BINARY:
            v, pos = _read_bin(buf, pos)
        elif pid in _PAIR:
            k, pos = _read_str(buf, pos)
            val, pos = _read_str(buf, pos)
            v = (k, val)
        else:
            raise ValueError(f"unknown property id {pid:#x}")
        props.add(pid, v)
    if pos != end:
        raise ValueError("property length mismatch")
    return props, end


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    version: int = V5

    @property
    def name(self) -> str:
        return TYPE_NAMES.get(self.type, f"type{self.type}")

    # -- typed views -------------------------------------------------------

    @property
    def reason_code(self) -> int:
        """CONNACK return/reason code, DISCONNECT reason code (0 if absent),
        or the reason code of a PUBACK/PUBREC/PUBREL/PUBCOMP (0 if absent)."""
        if self.type == CONNACK:
            return self.body[1]
        if self.type == DISCONNECT:
            return self.body[0] if self.body else 0
        if self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            return self.body[2] if len(self.body) > 2 else 0
        raise ValueError(f"{self.name} has no single reason code")

    @property
    def session_present(self) -> bool:
        assert self.type == CONNACK
        return bool(self.body[0] & 0x01)

    @property
    def props(self) -> Props:
        """v5 properties of CONNACK / DISCONNECT / SUBACK / PUBLISH."""
        if self.version != V5:
            return Props()
        if self.type == CONNACK:
            return decode_properties(self.body, 2)[0] if len(self.body) > 2 else Props()
        if self.type == DISCONNECT:
            return decode_properties(self.body, 1)[0] if len(self.body) > 1 else Props()
        if self.type in (SUBACK, UNSUBACK):
            return decode_properties(self.body, 2)[0]
        if self.type == PUBLISH:
            return self.publish_fields()["props"]
        if self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            return decode_properties(self.body, 3)[0] if len(self.body) > 3 else Props()
        raise ValueError(f"no properties view for {self.name}")

    @property
    def pid(self) -> int:
        if self.type == PUBLISH:
            return self.publish_fields()["pid"]
        (p,) = struct.unpack_from("!H", self.body, 0)
        return p

    @property
    def suback_codes(self) -> list[int]:
        assert self.type in (SUBACK, UNSUBACK)
        if self.version == V5:
            _, pos = decode_properties(self.body, 2)
        else:
            pos = 2
        return list(self.body[pos:])

    def publish_fields(self) -> dict:
        assert self.type == PUBLISH
        qos = (self.flags >> 1) & 3
        topic, pos = _read_str(self.body, 0)
        pid = None
        if qos:
            (pid,) = struct.unpack_from("!H", self.body, pos)
            pos += 2
        props = Props()
        if self.version == V5:
            props, pos = decode_properties(self.body, pos)
        return {
            "topic": topic,
            "pid": pid,
            "qos": qos,
            "retain": bool(self.flags & 1),
            "dup": bool(self.flags & 8),
            "props": props,
            "payload": bytes(self.body[pos:]),
        }

    @property
    def topic(self) -> str:
        return self.publish_fields()["topic"]

    @property
    def payload(self) -> bytes:
        return self.publish_fields()["payload"]

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def retain(self) -> bool:
        return bool(self.flags & 1)

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    def __repr__(self):
        extra = ""
        try:
            if self.type == CONNACK:
                extra = f" sp={int(self.session_present)} rc={self.reason_code:#04x}"
            elif self.type == DISCONNECT:
                extra = f" rc={self.reason_code:#04x}"
            elif self.type == PUBLISH:
                f = self.publish_fields()
                extra = f" topic={f['topic']!r} qos={f['qos']} pid={f['pid']} payload={f['payload'][:40]!r}"
            elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
                extra = f" pid={self.pid} rc={self.reason_code:#04x}"
            elif self.type == SUBACK:
                extra = f" pid={self.pid} codes={self.suback_codes}"
        except Exception:  # noqa: BLE001 - repr must never fail
            extra = f" body={self.body[:40]!r}"
        return f"<{self.name}{extra}>"


# --------------------------------------------------------------------------
# Blocking client
# --------------------------------------------------------------------------


def in_private_netns() -> bool:
    """True when this process runs in a network namespace other than the
    host's (one that a test created with `ip netns add`). The test names the
    host's namespace in TACHYON_HOST_NETNS (inside the new namespace,
    /proc/1/ns/net is not readable)."""
    import os

    host = os.environ.get("TACHYON_HOST_NETNS", "")
    try:
        mine = os.readlink("/proc/self/ns/net")
    except OSError:
        return False
    return bool(host) and mine != host


class Closed(Exception):
    """The peer closed the connection."""


class RawClient:
    """A blocking MQTT connection over a plain loopback TCP socket.

    Reads are bounded by timeouts; a closed connection (EOF or reset) is
    reported as `Closed` (or as None from `recv_packet(allow_close=True)`).
    """

    def __init__(self, port: int, version: int = V5, timeout: float = 5.0, host: str = "127.0.0.1"):
        # Tests talk to loopback, or to anything from inside a namespace a test created.
        assert host.startswith("127.") or host == "::1" or in_private_netns(), (
            "tests only ever talk to loopback (or run inside their own network namespace)"
        )
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self.reset = False
        self._next_pid = 1
        self.connack: Packet | None = None
        self._backlog: deque[Packet] = deque()

    # -- raw I/O -------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a connection the broker closed (or stopped
        reading) meanwhile. Safe to call from a helper thread."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline: float) -> None:
        if self.closed:
            raise Closed()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from the broker")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError("timed out waiting for data from the broker") from e
        except (ConnectionResetError, ConnectionAbortedError):
            self.closed = True
            self.reset = True
            raise Closed() from None
        if not data:
            self.closed = True
            raise Closed()
        self.buf += data

    def _try_parse(self) -> Packet | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        mult, rl, pos = 1, 0, 1
        while True:
            if pos >= len(buf):
                return None
            b = buf[pos]
            rl += (b & 0x7F) * mult
            pos += 1
            if not b & 0x80:
                break
            mult *= 128
            if pos > 4:
                raise ValueError("broker sent a varint longer than 4 bytes")
        if len(buf) < pos + rl:
            return None
        pkt = Packet(buf[0] >> 4, buf[0] & 0x0F, bytes(buf[pos : pos + rl]), self.version)
        del buf[: pos + rl]
        return pkt

    def recv_packet(self, timeout: float | None = None, allow_close: bool = False) -> Packet | None:
        """Next packet. Raises TimeoutError if none arrives in time, Closed if
        the connection closes (or returns None when allow_close)."""
        if self._backlog:
            return self._backlog.popleft()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            pkt = self._try_parse()
            if pkt is not None:
                return pkt
            try:
                self._fill(deadline)
            except Closed:
                if allow_close:
                    return None
                raise

    def expect(self, ptype: int, timeout: float | None = None) -> Packet:
        """Next packet, which must be of type `ptype`."""
        try:
            pkt = self.recv_packet(timeout)
        except Closed:
            raise AssertionError(f"connection closed while waiting for {TYPE_NAMES[ptype]}") from None
        except TimeoutError:
            raise AssertionError(f"no {TYPE_NAMES[ptype]} within the timeout") from None
        assert pkt.type == ptype, f"expected {TYPE_NAMES[ptype]}, got {pkt!r}"
        return pkt

    def read_until_closed(self, timeout: float | None = None) -> list[Packet]:
        """All packets the broker sends until it closes the connection.
        Fails if the connection is still open when the timeout expires."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got: list[Packet] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                pkt = self.recv_packet(max(remaining, 0.001), allow_close=True)
            except TimeoutError:
                raise AssertionError(
                    f"broker did not close the connection within the timeout; received {got!r}"
                ) from None
            if pkt is None:
                return got
            got.append(pkt)

    def assert_open(self, wait: float = 0.3) -> None:
        """The connection stays open (and silent) for `wait` seconds."""
        try:
            pkt = self.recv_packet(wait)
        except TimeoutError:
            return
        except Closed:
            raise AssertionError("broker closed the connection") from None
        raise AssertionError(f"unexpected packet {pkt!r}")

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the socket without a DISCONNECT (an 'abrupt' close)."""
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    # -- protocol helpers -----------------------------------------------------

    def next_pid(self) -> int:
        pid = self._next_pid
        self._next_pid = pid % 65535 + 1
        return pid

    def connect(self, client_id: str = "", expect_rc: int | None = 0, **kw) -> Packet:
        """Send CONNECT and read CONNACK; by default the connection must be
        accepted."""
        self.send(connect(self.version, client_id, **kw))
        ack = self.expect(CONNACK)
        self.connack = ack
        if expect_rc is not None:
            assert ack.reason_code == expect_rc, f"CONNACK {ack!r}, expected rc {expect_rc:#04x}"
        return ack

    def subscribe(self, flt: str, qos: int = 0, props=None, options: int | None = None) -> list[int]:
        pid = self.next_pid()
        opts = qos if options is None else options
        self.send(subscribe(pid, [(flt, opts)], props, self.version))
        ack = self.expect(SUBACK)
        assert ack.pid == pid, f"SUBACK pid {ack.pid} != {pid}"
        return ack.suback_codes

    def publish(self, topic, payload: bytes = b"", qos: int = 0, retain: bool = False, props=None) -> int | None:
        """Publish and complete the QoS flow. Returns the packet id used."""
        pid = self.next_pid() if qos else None
        self.send(publish(topic, payload, qos, retain, pid=pid, props=props, version=self.version))
        if qos == 1:
            ack = self.expect(PUBACK)
            assert ack.pid == pid
            assert ack.reason_code < 0x80, f"PUBACK {ack!r}"
        elif qos == 2:
            rec = self.expect(PUBREC)
            assert rec.pid == pid
            assert rec.reason_code < 0x80, f"PUBREC {rec!r}"
            self.send(pubrel(pid))
            comp = self.expect(PUBCOMP)
            assert comp.pid == pid
        return pid

    def recv_publish(self, timeout: float | None = None) -> Packet:
        """Next PUBLISH from the broker, acknowledged according to its QoS
        (for QoS 2 the PUBREC/PUBREL/PUBCOMP exchange is completed here;
        packets arriving meanwhile are kept for the next reads)."""
        pkt = self.expect(PUBLISH, timeout)
        if pkt.qos == 1:
            self.send(puback(pkt.pid))
        elif pkt.qos == 2:
            self.send(pubrec(pkt.pid))
            deferred = []
            while True:
                other = self.recv_packet(timeout)
                if other.type == PUBREL and other.pid == pkt.pid:
                    break
                deferred.append(other)
            self.send(pubcomp(pkt.pid))
            self._backlog.extendleft(reversed(deferred))
        return pkt

    def poll_publish(self, timeout: float) -> Packet | None:
        """Like recv_publish, but returns None if nothing arrives in time."""
        try:
            pkt = self.recv_packet(timeout)
        except TimeoutError:
            return None
        self._backlog.appendleft(pkt)
        return self.recv_publish()

    def ping(self) -> None:
        self.send(pingreq())
        self.expect(PINGRESP)

    def disconnect(self, rc: int = 0, props=None) -> None:
        self.try_send(disconnect(self.version, rc, props))
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

