"""Durability (issue 5): the broker is killed with SIGKILL at random points while
publishers send QoS 1 and QoS 2 messages to subscribers with persistent sessions (some
connected, one offline), restarted on the same data directory, and the clients reconnect
as real clients do (persistent sessions, unacknowledged PUBLISHes resent with DUP, PUBREL
resent). Every message the broker acknowledged (PUBACK, or PUBREC for QoS 2) must arrive,
QoS 2 exactly once, in order per publisher and topic. Some restarts first garble or cut
the tail of a WAL segment, as a crash in the middle of a write leaves it: recovery must cut
there, say where, and still lose nothing acknowledged.

The clients are minimal MQTT clients on raw sockets (mqttraw), so that their session
state (QoS 2 identifiers awaiting PUBREL on the receiving side, the unacknowledged
PUBLISH on the sending side) is explicit and survives their reconnections.
"""

from __future__ import annotations

import os
import pathlib
import random
import re
import struct
import threading
import time

import pytest

import mqttraw as M
from conftest import HERE, start_broker

pytestmark = pytest.mark.tachyon_only("kills and restarts Tachyon on its data directory")
# Environment: TACHYON_CRASH_ITERATIONS (8), TACHYON_CRASH_SEED, TACHYON_CRASH_SYNC (sync|none).

EXPIRY = [(M.SESSION_EXPIRY_INTERVAL, 3600)]
CLIENT_ERRORS = (OSError, M.Closed, TimeoutError, AssertionError, ValueError)


class Cluster:
    """The broker under test: one process at a time, on one data directory."""

    def __init__(self, workdir: pathlib.Path, config: pathlib.Path):
        self.workdir = workdir
        self.config = config
        self.broker = None
        self.port = None  # None while the broker is down
        self.lock = threading.Lock()
        self.starts = 0

    def start(self):
        # Keep each run's log (start_broker writes broker-0.log).
        last = self.workdir / "broker-0.log"
        if last.exists():
            last.rename(self.workdir / f"run-{self.starts:02}.log")
        b = start_broker(self.workdir, config=self.config)
        self.starts += 1
        with self.lock:
            self.broker, self.port = b, b.port

    def kill(self):
        with self.lock:
            b, self.port = self.broker, None
        os.kill(b.proc.pid, 9)
        b.proc.wait(timeout=10)
        if os.environ.get("TACHYON_CRASH_KEEP"):
            # For diagnosis (`tachyon inspect-data`): the data directory as each crash left it.
            import shutil

            shutil.copytree(self.workdir / "data", self.workdir / f"data-crash-{self.starts:02}")

    def current_port(self):
        with self.lock:
            return self.port

    def logs(self) -> str:
        files = sorted(self.workdir.glob("run-*.log")) + sorted(self.workdir.glob("broker-*.log"))
        text = "\n".join(p.read_text(errors="replace") for p in files)
        return re.sub(r"\x1b\[[0-9;]*m", "", text)  # the log's colours


def connect(cluster: Cluster, client_id: str, version: int, stop: threading.Event):
    """Connects with a persistent session once the broker is up; None when stopping."""
    while not stop.is_set():
        port = cluster.current_port()
        if port is None:
            time.sleep(0.02)
            continue
        try:
            c = M.RawClient(port, version, timeout=3.0)
        except OSError:
            time.sleep(0.02)
            continue
        try:
            props = EXPIRY if version == M.V5 else None
            c.connect(client_id, clean=False, props=props)
            return c
        except CLIENT_ERRORS:
            c.close()
            time.sleep(0.02)
    return None


class Publisher(threading.Thread):
    """Sends `name:seq` messages one at a time at `qos`; records what the broker
    acknowledged. After a reconnection it finishes the flow in progress as a client must
    (v5 [MQTT-4.4.0-1]): the PUBLISH again with DUP, or the PUBREL."""

    def __init__(self, cluster, name, version, qos, topic, limit, stop):
        super().__init__(daemon=True, name=name)
        self.cluster, self.name, self.version, self.qos = cluster, name, version, qos
        self.topic, self.limit, self.stop = topic, limit, stop
        self.acked: list[int] = []  # seqs the broker acknowledged, in order
        self.sent = 0  # seqs handed to the broker so far (0..sent-1)
        self.pending = None  # (pid, seq, stage): stage "publish" or "pubrel"
        self.pid = 0
        self.errors: list[str] = []
        self.stop_done = False  # all sent and acknowledged

    def run(self):
        while not self.stop.is_set() and not self.stop_done:
            c = connect(self.cluster, self.name, self.version, self.stop)
            if c is None:
                return
            try:
                self.session(c)
            except CLIENT_ERRORS:
                pass
            finally:
                c.close()

    def session(self, c):
        if self.pending is not None:
            pid, seq, stage = self.pending
            if stage == "publish":
                c.send(M.publish(self.topic, self.payload(seq), self.qos, dup=True, pid=pid, version=self.version))
            else:
                c.send(M.pubrel(pid))
            self.finish(c)
        if self.sent >= self.limit:
            self.stop_done = True
        while not self.stop.is_set() and self.sent < self.limit:
            self.pid = self.pid % 65535 + 1
            seq = self.sent
            self.pending = (self.pid, seq, "publish")
            self.sent += 1
            c.send(M.publish(self.topic, self.payload(seq), self.qos, pid=self.pid, version=self.version))
            self.finish(c)

    def payload(self, seq: int) -> bytes:
        return f"{self.name}:{seq}".encode()

    def finish(self, c):
        pid, seq, stage = self.pending
        while True:
            p = c.recv_packet(timeout=3.0)
            if p.type in (M.PUBACK, M.PUBREC) and p.pid == pid and stage == "publish":
                if p.reason_code >= 0x80:
                    self.errors.append(f"{self.name} seq {seq}: refused {p.reason_code:#x}")
                    raise M.Closed()
                self.acked.append(seq)
                if p.type == M.PUBACK:
                    self.pending = None
                    return
                stage = "pubrel"
                self.pending = (pid, seq, stage)
                c.send(M.pubrel(pid))
            elif p.type == M.PUBCOMP and p.pid == pid and stage == "pubrel":
                self.pending = None
                return


class Subscriber(threading.Thread):
    """A persistent subscriber that acknowledges everything; its QoS 2 receiving state
    (identifiers between PUBREC and PUBREL) is kept across reconnections, as v5 4.3.3
    requires of a receiver, so a resent QoS 2 PUBLISH is recognised."""

    def __init__(self, cluster, name, version, stop, topic="crash/#"):
        super().__init__(daemon=True, name=name)
        self.cluster, self.name, self.version, self.stop, self.topic = cluster, name, version, stop, topic
        self.received: list[tuple[str, int, int]] = []  # (publisher, seq, qos) in arrival order
        self.awaiting_rel: set[int] = set()
        self.subscribed = False
        self.lock = threading.Lock()
        # Every PUBLISH seen: (publisher, seq, pid, dup, delivered), for the failure report.
        self.trace: list[tuple] = []

    def run(self):
        while not self.stop.is_set():
            c = connect(self.cluster, self.name, self.version, self.stop)
            if c is None:
                return
            try:
                if not self.subscribed:
                    assert c.subscribe(self.topic, qos=2) == [2]
                    self.subscribed = True
                self.read(c)
            except CLIENT_ERRORS:
                pass
            finally:
                c.close()

    def read(self, c):
        while not self.stop.is_set():
            try:
                p = c.recv_packet(timeout=0.2)
            except TimeoutError:
                continue
            if p.type == M.PUBLISH:
                f = p.publish_fields()
                name, seq = f["payload"].decode().rsplit(":", 1)
                if f["qos"] == 2:
                    new = f["pid"] not in self.awaiting_rel
                    self.trace.append((name, int(seq), f["pid"], f["dup"], new))
                    if new:
                        self.deliver(name, int(seq), 2)
                        self.awaiting_rel.add(f["pid"])
                    c.send(M.pubrec(f["pid"]))
                else:
                    self.deliver(name, int(seq), f["qos"])
                    if f["qos"] == 1:
                        c.send(M.puback(f["pid"]))
            elif p.type == M.PUBREL:
                self.awaiting_rel.discard(p.pid)
                c.send(M.pubcomp(p.pid))

    def deliver(self, name, seq, qos):
        with self.lock:
            self.received.append((name, seq, qos))

    def seqs(self, name):
        with self.lock:
            return [s for (n, s, _) in self.received if n == name]


def check(sub: Subscriber, pubs: list[Publisher]) -> list[str]:
    problems = []
    for p in pubs:
        got = sub.seqs(p.name)
        missing = sorted(set(p.acked) - set(got))
        if missing:
            seen = [t for t in sub.trace if t[0] == p.name and t[1] in missing[:3]]
            problems.append(f"{sub.name}: {len(missing)} acknowledged messages of {p.name} never arrived: {missing[:10]}"
                            f" (PUBLISHes of them seen: {seen})")
        firsts = list(dict.fromkeys(got))
        if firsts != sorted(firsts):
            problems.append(f"{sub.name}: {p.name} out of order: {firsts[:40]}")
        if p.qos == 2 and len(got) != len(set(got)):
            dups = sorted({s for s in got if got.count(s) > 1})
            problems.append(f"{sub.name}: QoS 2 messages of {p.name} delivered twice: {dups[:10]}")
        beyond = [s for s in got if s >= p.sent]
        if beyond:
            problems.append(f"{sub.name}: {p.name} messages never sent: {beyond[:5]}")
    return problems


def wal_end(segment: pathlib.Path) -> int:
    """Offset just past the last whole record of a segment (format: docs/wal-format.md)."""
    data = segment.read_bytes()
    at = 64
    while at + 24 <= len(data):
        length, crc = struct.unpack_from("<II", data, at)
        if length == 0 and crc == 0:
            break
        at += (24 + length + 7) // 8 * 8
    return min(at, len(data))


def damage_tail(workdir: pathlib.Path, how: str, rng: random.Random) -> str:
    """Leaves what a crash during a write leaves after the last record of the newest
    segment of a random shard: a garbled record, or a record cut short with the file."""
    segs = sorted((workdir / "data").glob("shard-*/*.wal"), key=lambda p: (p.parent.name, p.name))
    newest = {}
    for s in segs:
        newest[s.parent.name] = s
    seg = rng.choice(sorted(newest.values()))
    end = wal_end(seg)
    with open(seg, "r+b") as f:
        if how == "garble":
            f.seek(end)
            # length 40, a checksum that cannot match, then noise
            f.write(struct.pack("<II", 40, 0xDEADBEEF) + rng.randbytes(40))
        else:
            f.seek(end)
            f.write(struct.pack("<II", 4000, 0x12345678) + rng.randbytes(20))
            f.truncate(end + 28)
    return f"{seg.parent.name}/{seg.name}@{end}"


def crash_config(tmp_path: pathlib.Path) -> pathlib.Path:
    cfg = tmp_path / "crash.toml"
    text = (HERE / "broker.toml").read_text()
    text = text.replace("max_queued_messages = 1000", "max_queued_messages = 100000")
    # Small segments (broker.toml ends with [durability] segment_mb = 1) and snapshots: the
    # runs roll segments and reclaim them.
    text += "snapshot_after_mb = 1\n"
    # `none` promises the same against SIGKILL (records reach the mapped pages before the
    # acknowledgement): TACHYON_CRASH_SYNC=none runs the test under it.
    text += f'sync = "{os.environ.get("TACHYON_CRASH_SYNC", "sync")}"\n'
    cfg.write_text(text)
    return cfg


@pytest.mark.parametrize("damage", ["none", "tail"])
def test_sigkill_loses_no_acknowledged_message(tmp_path, damage):
    seed = int(os.environ.get("TACHYON_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    iterations = int(os.environ.get("TACHYON_CRASH_ITERATIONS", "8"))
    cluster = Cluster(tmp_path, crash_config(tmp_path))
    cluster.start()
    stop = threading.Event()  # publishers
    sub_stop = threading.Event()  # online subscribers: they read until the end
    # Subscribers first (their sessions exist before any message): two online, v5 and
    # v3.1.1, and one that stays offline until the end.
    online = [Subscriber(cluster, "sub-v5", M.V5, sub_stop), Subscriber(cluster, "sub-v311", M.V311, sub_stop)]
    offline_stop = threading.Event()
    offline = Subscriber(cluster, "sub-offline", M.V5, offline_stop)
    offline.start()
    for s in online:
        s.start()
    deadline = time.monotonic() + 10
    while not (offline.subscribed and all(s.subscribed for s in online)):
        assert time.monotonic() < deadline, "subscribers could not subscribe"
        time.sleep(0.02)
    offline_stop.set()
    offline.join(timeout=5)
    pubs = [
        Publisher(cluster, "pub-q1-v5", M.V5, 1, "crash/a", 20000, stop),
        Publisher(cluster, "pub-q2-v5", M.V5, 2, "crash/b", 20000, stop),
        Publisher(cluster, "pub-q2-v311", M.V311, 2, "crash/c", 20000, stop),
    ]
    for p in pubs:
        p.start()
    damaged = []
    try:
        for i in range(iterations):
            time.sleep(rng.uniform(0.2, 1.2))
            cluster.kill()
            if damage == "tail" and i % 2 == 0:
                damaged.append(damage_tail(tmp_path, rng.choice(["garble", "cut"]), rng))
            cluster.start()
        time.sleep(0.5)
        stop.set()
        for p in pubs:
            p.join(timeout=10)
        # Online subscribers catch up (what is inflight is resent on their reconnection).
        deadline = time.monotonic() + 20
        for s in online:
            while time.monotonic() < deadline and any(set(p.acked) - set(s.seqs(p.name)) for p in pubs):
                time.sleep(0.1)
        # The offline one comes back last and gets its queue.
        back = Subscriber(cluster, "sub-offline", M.V5, threading.Event())
        back.subscribed = True
        back.start()
        while time.monotonic() < deadline + 20 and any(set(p.acked) - set(back.seqs(p.name)) for p in pubs):
            time.sleep(0.1)
        back.stop.set()
        sub_stop.set()
        back.join(timeout=5)
        for s in online:
            s.join(timeout=5)
        problems = [e for p in pubs for e in p.errors]
        for s in online + [back]:
            problems += check(s, pubs)
        acked = {p.name: len(p.acked) for p in pubs}
        assert sum(acked.values()) > 50, f"too little traffic to prove anything: {acked}"
        logs = cluster.logs()
        if damaged:
            cuts = re.findall(r"WAL tail cut.*", logs)
            assert len(cuts) >= len(damaged), f"damaged {damaged}, recovery reported {cuts}"
        assert "recovered durable state" in logs
        assert not problems, f"seed {seed}, {cluster.starts} starts, acked {acked}:\n" + "\n".join(problems)
    finally:
        stop.set()
        sub_stop.set()
        if cluster.broker is not None and cluster.broker.running():
            cluster.broker.stop()


def test_retained_and_sessions_survive_clean_restart_and_sigkill(tmp_path):
    cluster = Cluster(tmp_path, HERE / "broker.toml")
    cluster.start()
    port = cluster.current_port()
    for n in range(3):
        c = M.RawClient(port)
        c.connect(f"keeper-{n}", clean=False, props=EXPIRY)
        c.subscribe(f"keep/{n}/#", qos=1)
        c.close()
    p = M.RawClient(port)
    p.connect("retainer")
    p.publish("retained/a", b"A", qos=1, retain=True)
    p.publish("retained/b", b"B", qos=0, retain=True)
    p.publish("keep/1/x", b"queued", qos=1)
    p.disconnect() if hasattr(p, "disconnect") else p.send(M.disconnect())
    p.close()
    for how in ("sigterm", "sigkill"):
        if how == "sigterm":
            assert cluster.broker.stop() == 0
        else:
            cluster.kill()
        cluster.start()
        port = cluster.current_port()
        s = M.RawClient(port)
        s.connect("reader")
        s.subscribe("retained/#", qos=1)
        got = sorted(s.recv_packet(timeout=3).payload for _ in range(2))
        assert got == [b"A", b"B"], how
        s.close()
        for n in range(3):
            c = M.RawClient(port)
            ack = c.connect(f"keeper-{n}", clean=False, props=EXPIRY)
            assert ack.session_present, f"{how}: keeper-{n} lost its session"
            if n == 1 and how == "sigterm":
                m = c.recv_packet(timeout=3)
                assert m.payload == b"queued"
                c.send(M.puback(m.pid))
                time.sleep(0.2)
            c.close()
    assert "recovered durable state" in cluster.logs()
    assert cluster.broker.stop() == 0


def test_disk_full_refuses_qos1_keeps_qos0_and_loses_nothing_acknowledged(tmp_path):
    """Issue 5: with the WAL's file system full, new QoS 1/2 publishes are refused (v5
    PUBACK 0x97, v3.1.1 close), with a log line; QoS 0 goes on; when space is back the
    broker accepts them again, and every acknowledged message is delivered."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    cfg = tmp_path / "full.toml"
    cfg.write_text(
        (HERE / "broker.toml").read_text().replace("max_queued_messages = 1000", "max_queued_messages = 100000")
        + f'data_dir = "{small / "data"}"\nsnapshot_after_mb = 64\n'
    )
    cluster = Cluster(tmp_path, cfg)
    try:
        cluster.start()
        port = cluster.current_port()
        keeper = M.RawClient(port)
        keeper.connect("keeper", clean=False, props=EXPIRY)
        keeper.subscribe("fill/#", qos=1)
        keeper.close()
        live = M.RawClient(port)
        live.connect("live")
        live.subscribe("zero/#", qos=0)
        pub = M.RawClient(port)
        pub.connect("filler")
        acked, waiting = 0, None
        for i in range(1000):
            pid = pub.next_pid()
            pub.send(M.publish("fill/x", f"{i:06}".encode() + bytes(8000), 1, pid=pid))
            try:
                ack = pub.expect(M.PUBACK, timeout=2)
            except AssertionError:
                # The message that met the full disk: not durable, so not acknowledged
                # until space comes back (acknowledgements keep their order, so this
                # connection waits).
                waiting = pid
                break
            assert ack.reason_code == 0, ack
            acked += 1
        assert waiting is not None, f"{acked} messages of 8 KB fit a 3 MiB file system?"
        # Any other publisher is refused at once.
        other = M.RawClient(port)
        other.connect("filler-2")
        other.send(M.publish("fill/x", b"refused", 1, pid=7))
        ack = other.expect(M.PUBACK, timeout=3)
        assert (ack.pid, ack.reason_code) == (7, 0x97), ack
        # QoS 0 still flows.
        pub.publish("zero/a", b"still here", qos=0)
        assert live.recv_publish(timeout=3).payload == b"still here"
        # A v3.1.1 publisher has no refusal code: it is disconnected.
        old = M.RawClient(port, M.V311)
        old.connect("filler-311")
        old.send(M.publish("fill/y", b"x", 1, pid=1, version=M.V311))
        old.read_until_closed(timeout=5)
        assert "cannot write the WAL" in cluster.logs()
        # Space comes back: after the retry, QoS 1 is accepted again.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        # The held acknowledgement goes out once its record is written.
        ack = pub.expect(M.PUBACK, timeout=10)
        assert (ack.pid, ack.reason_code) == (waiting, 0), ack
        acked += 1
        deadline = time.monotonic() + 10
        while True:
            other.send(M.publish("fill/x", b"after", 1, pid=8))
            ack = other.expect(M.PUBACK)
            if ack.reason_code == 0:
                acked += 1
                break
            assert time.monotonic() < deadline, "QoS 1 still refused after space came back"
            time.sleep(0.3)
        other.close()
        pub.close()
        live.close()
        # Nothing acknowledged was lost, across a restart too.
        cluster.kill()
        cluster.start()
        keeper = M.RawClient(cluster.current_port())
        assert keeper.connect("keeper", clean=False, props=EXPIRY).session_present
        got = 0
        while got < acked:
            m = keeper.recv_publish(timeout=5)
            keeper.send(M.puback(m.pid))
            got += 1
        keeper.close()
    finally:
        if cluster.broker is not None and cluster.broker.running():
            cluster.broker.stop()
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_segments_are_reclaimed_under_steady_load(tmp_path):
    """Issue 5: snapshots compact the log and old segments are deleted, so disk use stays
    bounded while traffic flows (1 MiB segments, a snapshot after each MiB of log)."""
    cfg = tmp_path / "steady.toml"
    cfg.write_text((HERE / "broker.toml").read_text() + "snapshot_after_mb = 1\n")
    cluster = Cluster(tmp_path, cfg)
    cluster.start()
    try:
        port = cluster.current_port()
        stop = threading.Event()
        sub = Subscriber(cluster, "steady-sub", M.V5, stop, topic="steady/#")
        sub.start()
        deadline = time.monotonic() + 10
        while not sub.subscribed:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pub = M.RawClient(port)
        pub.connect("steady-pub", clean=False, props=EXPIRY)
        total, batch = 30000, 500
        name = "steady-pub-" + "x" * 400  # the payload is name:seq
        most = 0
        for start in range(0, total, batch):
            for i in range(start, start + batch):
                pub.send(M.publish("steady/a", f"{name}:{i}".encode(), 1, pid=i % 60000 + 1))
            for _ in range(batch):
                assert pub.expect(M.PUBACK).reason_code == 0
            most = max(most, len(list((tmp_path / "data").glob("shard-*/*.wal"))))
        pub.close()
        deadline = time.monotonic() + 20
        while len(sub.seqs(name)) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        sub.join(timeout=5)
        assert len(set(sub.seqs(name))) == total
        # ~13 MiB of log went through: without reclamation, 13+ segments.
        assert most <= 7, f"{most} segments at once: old segments are not reclaimed"
        assert cluster.broker.stop() == 0
        assert re.search(r"WAL closed .*snapshots=[1-9]", cluster.logs()), "no snapshot was written"
    finally:
        if cluster.broker.running():
            cluster.broker.stop()


def test_recovering_dataplane_completes_no_handshake(tmp_path):
    """Issue 13 §6: a restarting dataplane binds its listeners at once (a port in use fails
    fast) but listens only once the WAL is recovered: until then a TCP connect is refused,
    not accepted to wait in silence. Checked as an order of events, not a duration: the
    first connection the kernel accepts comes after the dataplane logged "recovered durable
    state", and gets its CONNACK at once."""
    import datetime
    import signal
    import socket
    import subprocess

    from conftest import TACHYON_BIN

    n = 120_000
    cfg = tmp_path / "recover.toml"
    text = (HERE / "broker.toml").read_text().replace(
        "max_queued_messages = 1000", f"max_queued_messages = {n + 10}\nmax_queued_bytes = 1073741824"
    )
    cfg.write_text(text.replace("segment_mb = 1 ", "segment_mb = 16 "))
    cluster = Cluster(tmp_path, cfg)
    cluster.start()
    port = cluster.current_port()
    sink = M.RawClient(port, M.V311)
    sink.connect("sink", clean=False)
    assert sink.subscribe("fill/t", 1) == [1]
    sink.close()
    p = M.RawClient(port, M.V311, timeout=60)
    p.connect("filler")
    burst = b"".join(
        M.publish("fill/t", b"%08d" % i, qos=1, pid=i % 65535 + 1, version=M.V311) for i in range(n)
    )
    p.send(burst)
    for _ in range(n):
        p.expect(M.PUBACK)
    p.close()
    cluster.kill()
    # The dataplane follows the control plane (PR_SET_PDEATHSIG): wait for its listeners to
    # be gone, so that the probe below can only meet the new one.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.01)
        except OSError:
            break

    log_path = tmp_path / "restart.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            [TACHYON_BIN, "serve", "--config", str(cfg), "-p", str(port)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        first_accept = None
        refused = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
            except (ConnectionRefusedError, socket.timeout):
                refused += 1
                time.sleep(0.002)
                continue
            first_accept = time.time()
            s.close()
            break
        assert first_accept is not None, "the restarted broker never listened"
        c = M.RawClient(port, M.V311, timeout=5)
        c.connect("probe-after-recovery")
        c.close()
        log = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
        m = re.search(r"^(\S+Z)\s+INFO.*recovered durable state.*?elapsed_ms=([\d.]+)", log, re.M)
        assert m, log[-4000:]
        recovered = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        print(f"recovery took {m.group(2)} ms; {refused} connects refused meanwhile")
        assert first_accept >= recovered, (
            f"a TCP connection was accepted {recovered - first_accept:.3f} s before recovery ended"
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
