"""MQTT exchanges with a broker on a user-space dataplane (TAP or DPDK).

Run by test_userspace_dataplane.py inside the network namespace it created
(`ip netns exec NS python3 netns_clients.py --host ADDR`), so every packet
stays inside that namespace; it refuses to run anywhere else.

Checks, printing one line per check and exiting non-zero on the first
failure:
  * QoS 0, 1 and 2, MQTT 3.1.1 and 5.0: a subscriber receives every message
    a publisher sends, in order, each exactly once;
  * CONCURRENT connections at once (default 250): each subscribes to its own
    topic, one publisher sends one message per topic, every client gets its
    own and nothing else, all stay connected;
  * a real client (mosquitto_pub / mosquitto_sub) exchanges a message.
Then it leaves one v5 client connected and waits for the broker's DISCONNECT
(reason 0x8B, server shutting down) if --await-shutdown is given.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import mqttraw
from mqttraw import V5, V311, RawClient

MESSAGES = 50


def exchange(host: str, port: int, version: int, qos: int) -> None:
    tag = f"v{'5' if version == V5 else '3.1.1'}-q{qos}"
    sub = RawClient(port, version, host=host)
    sub.connect(f"ns-sub-{tag}", clean=True)
    sub.subscribe(f"ns/{tag}", qos)
    pub = RawClient(port, version, host=host)
    pub.connect(f"ns-pub-{tag}", clean=True)
    for i in range(MESSAGES):
        pub.publish(f"ns/{tag}", f"{tag}-{i}".encode(), qos)
    got = []
    for _ in range(MESSAGES):
        p = sub.recv_publish(timeout=10)
        assert p.qos == qos, f"{tag}: delivered at QoS {p.qos}"
        got.append(p.payload.decode())
    want = [f"{tag}-{i}" for i in range(MESSAGES)]
    assert got == want, f"{tag}: got {got[:5]}... expected {want[:5]}..."
    sub.assert_open(0.2)  # nothing more (QoS 2: no duplicate)
    pub.disconnect()
    sub.disconnect()
    print(f"ok {tag}: {MESSAGES} messages in order, exactly once", flush=True)


def concurrent(host: str, port: int, count: int) -> None:
    clients = []
    for i in range(count):
        version = V5 if i % 2 else V311
        c = RawClient(port, version, host=host, timeout=20)
        c.connect(f"ns-many-{i}", clean=True)
        c.subscribe(f"many/{i}", 1)
        clients.append(c)
    pub = RawClient(port, V5, host=host, timeout=20)
    pub.connect("ns-many-pub", clean=True)
    for i in range(count):
        pub.publish(f"many/{i}", str(i).encode(), 1)
    for i, c in enumerate(clients):
        p = c.recv_publish(timeout=20)
        assert p.topic == f"many/{i}" and p.payload == str(i).encode(), f"client {i} got {p!r}"
    for c in clients[:10]:
        c.ping()  # still connected, still served
    for c in clients:
        c.disconnect()
    pub.disconnect()
    print(f"ok {count} concurrent connections: each got its own message", flush=True)


def real_client(host: str, port: int) -> None:
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", host, "-p", str(port), "-t", "real/t", "-q", "2", "-C", "1", "-W", "10", "-V", "mqttv5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # let it subscribe
    subprocess.run(
        ["mosquitto_pub", "-h", host, "-p", str(port), "-t", "real/t", "-m", "from-mosquitto_pub", "-q", "2"],
        check=True,
        timeout=10,
    )
    out, _ = sub.communicate(timeout=15)
    assert out.strip() == "from-mosquitto_pub", f"mosquitto_sub printed {out!r}"
    print("ok mosquitto_pub -> mosquitto_sub (QoS 2, v5)", flush=True)


def await_shutdown(host: str, port: int) -> None:
    c = RawClient(port, V5, host=host, timeout=30)
    c.connect("ns-stays", clean=True)
    print("waiting-for-shutdown", flush=True)
    pkts = c.read_until_closed(timeout=30)
    codes = [p.reason_code for p in pkts if p.type == mqttraw.DISCONNECT]
    assert codes == [0x8B], f"expected DISCONNECT 0x8B before the close, got {pkts!r}"
    print("ok DISCONNECT 0x8B (server shutting down), then closed", flush=True)


def wait_for_listener(host: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--concurrent", type=int, default=250)
    ap.add_argument("--await-shutdown", action="store_true")
    args = ap.parse_args()
    if not mqttraw.in_private_netns():
        print("refusing to run outside a private network namespace", file=sys.stderr)
        return 2
    wait_for_listener(args.host, args.port, 20.0)
    for version in (V311, V5):
        for qos in (0, 1, 2):
            exchange(args.host, args.port, version, qos)
    concurrent(args.host, args.port, args.concurrent)
    real_client(args.host, args.port)
    if args.await_shutdown:
        await_shutdown(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
