"""A thin synchronous wrapper around paho-mqtt 2.x (CallbackAPIVersion.VERSION2).

Every wait is bounded by a timeout. Automatic reconnection is disabled so a
connection the broker closes stays closed (session takeover tests rely on it).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

V31 = mqtt.MQTTv31
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5

PROTOCOLS = {"v31": V31, "v311": V311, "v5": V5}

TIMEOUT = 5.0  # default bound for any single wait
QUIET = 0.5  # how long "nothing else arrives" is observed


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    props: dict = field(default_factory=dict)
    received_at: float = 0.0

    def prop(self, name, default=None):
        return self.props.get(name, default)


def _props_to_dict(props) -> dict:
    if props is None:
        return {}
    out = {}
    for name in props.names:
        attr = name.replace(" ", "")
        if hasattr(props, attr):
            out[attr] = getattr(props, attr)
    return out


def publish_props(**kw) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def connect_props(**kw) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def will_props(**kw) -> Properties:
    p = Properties(PacketTypes.WILLMESSAGE)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def subscribe_props(**kw) -> Properties:
    p = Properties(PacketTypes.SUBSCRIBE)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class PahoClient:
    def __init__(
        self,
        port: int,
        client_id: str,
        protocol: int = V5,
        clean: bool = True,
        session_expiry: int | None = None,
        keepalive: int = 30,
        will: dict | None = None,
        props: Properties | None = None,
    ):
        self.port = port
        self.client_id = client_id
        self.protocol = protocol
        self.clean = clean
        self.keepalive = keepalive
        self.messages: queue.Queue[Msg] = queue.Queue()
        self._cond = threading.Condition()
        self._connack = None
        self._disconnected = None
        self._subacks: dict[int, list] = {}
        self._unsubacks: dict[int, list] = {}
        kwargs = {}
        if protocol != V5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            reconnect_on_failure=False,
            **kwargs,
        )
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        if will is not None:
            self.c.will_set(
                will["topic"],
                will.get("payload"),
                will.get("qos", 0),
                will.get("retain", False),
                will.get("props"),
            )
        if protocol == V5:
            if props is None and session_expiry is not None:
                props = connect_props(SessionExpiryInterval=session_expiry)
            elif session_expiry is not None:
                props.SessionExpiryInterval = session_expiry
        self.connect_props = props
        self.session_present = None
        self.connack_rc = None
        self.connack_props: dict = {}
        self._started = False

    # -- callbacks (paho network thread) -----------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self._connack = (flags.session_present, reason_code, _props_to_dict(properties))
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self._disconnected = (reason_code, _props_to_dict(properties), time.monotonic())
            self._cond.notify_all()

    def _on_message(self, client, userdata, message):
        self.messages.put(
            Msg(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                dup=bool(message.dup),
                props=_props_to_dict(getattr(message, "properties", None)),
                received_at=time.monotonic(),
            )
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._unsubacks[mid] = list(reason_codes) if isinstance(reason_codes, list) else [reason_codes]
            self._cond.notify_all()

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                v = pred()
                if v is not None:
                    return v
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"[{self.client_id}] timed out waiting for {what}")
                self._cond.wait(remaining)

    # -- operations ----------------------------------------------------------

    def connect(self, expect_success: bool = True, timeout: float = TIMEOUT):
        kw = {}
        if self.protocol == V5:
            kw["clean_start"] = self.clean
            kw["properties"] = self.connect_props
        self.c.connect("127.0.0.1", self.port, self.keepalive, **kw)
        self.c.loop_start()
        self._started = True
        sp, rc, props = self._wait(
            lambda: self._connack if self._connack is not None else self._connect_lost(),
            timeout,
            "CONNACK",
        )
        self.session_present, self.connack_rc, self.connack_props = sp, rc, props
        if expect_success:
            assert not rc.is_failure, f"[{self.client_id}] connection refused: {rc}"
        return self

    def _connect_lost(self):
        if self._disconnected is not None:
            raise AssertionError(f"[{self.client_id}] connection closed before CONNACK: {self._disconnected}")
        return None

    def subscribe(self, topic, qos: int = 0, options: SubscribeOptions | None = None, props=None, timeout=TIMEOUT):
        """Subscribe to one filter (or a list of (filter, qos|options)) and
        wait for the SUBACK; returns the list of reason codes (ints)."""
        if isinstance(topic, list):
            rc, mid = self.c.subscribe(topic, properties=props)
        else:
            rc, mid = self.c.subscribe(topic, qos=qos, options=options, properties=props)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        codes = self._wait(lambda: self._subacks.get(mid), timeout, f"SUBACK for {topic!r}")
        return [c.value if isinstance(c, ReasonCode) else int(c) for c in codes]

    def unsubscribe(self, topic, timeout=TIMEOUT):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._wait(lambda: self._unsubacks.get(mid), timeout, f"UNSUBACK for {topic!r}")

    def publish(self, topic, payload=b"", qos: int = 0, retain: bool = False, props=None, timeout=TIMEOUT):
        """Publish and wait until the QoS flow completes (QoS 0: written)."""
        info = self.c.publish(topic, payload, qos, retain, props)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        info.wait_for_publish(timeout)
        assert info.is_published(), f"[{self.client_id}] publish to {topic!r} not completed within {timeout}s"
        return info

    def publish_nowait(self, topic, payload=b"", qos=0, retain=False, props=None):
        info = self.c.publish(topic, payload, qos, retain, props)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        return info

    def get(self, timeout: float = TIMEOUT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"[{self.client_id}] no message within {timeout}s") from None

    def expect(self, n: int, timeout: float = TIMEOUT) -> list[Msg]:
        """Exactly the next n messages (fails if fewer arrive in time)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"[{self.client_id}] got {len(out)} of {n} messages within {timeout}s: "
                    f"{[(m.topic, m.payload[:30]) for m in out]}"
                ) from None
        return out

    def expect_until(self, pred, timeout: float = TIMEOUT) -> list[Msg]:
        """Messages up to and including the first one satisfying pred."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"[{self.client_id}] awaited message did not arrive within {timeout}s; got "
                    f"{[(m.topic, m.payload[:30]) for m in out]}"
                ) from None
            out.append(m)
            if pred(m):
                return out

    def drain(self, quiet: float = QUIET) -> list[Msg]:
        """Everything that arrives until `quiet` seconds pass without a message."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return out

    def assert_no_message(self, quiet: float = QUIET):
        extra = self.drain(quiet)
        assert not extra, f"[{self.client_id}] unexpected messages: {[(m.topic, m.payload[:30]) for m in extra]}"

    def wait_disconnected(self, timeout: float = TIMEOUT):
        """Wait until the connection is gone; returns (reason_code, props)."""
        rc, props, _ = self._wait(lambda: self._disconnected, timeout, "disconnection")
        return rc, props

    @property
    def is_connected(self) -> bool:
        return self.c.is_connected()

    def disconnect(self, reasoncode: int | None = None, props=None, timeout: float = TIMEOUT):
        """Normal DISCONNECT (v5: with the given reason code)."""
        rc = None
        if reasoncode is not None:
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reasoncode)
        self.c.disconnect(reasoncode=rc, properties=props)
        self.wait_disconnected(timeout)
        self.stop()

    def abort(self, timeout: float = TIMEOUT):
        """Drop the TCP connection without DISCONNECT (abrupt close)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.wait_disconnected(timeout)
        self.stop()

    def stop(self):
        """Stop the network thread; a still-open connection is dropped
        abruptly (shutting the socket down also wakes paho's select, so the
        thread ends at once instead of after its 1 s poll)."""
        sock = self.c.socket()
        if self._started:
            self._started = False
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
