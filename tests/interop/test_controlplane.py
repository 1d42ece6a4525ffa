"""The control plane (issue 6): `tachyon serve` supervises a dataplane process,
serves the admin API and /metrics, publishes $SYS, reloads its configuration
live, and logs structured lines. Every test starts its own broker with an admin
listener on a free loopback port."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.parse

import pytest

import mqttraw as M
from conftest import HERE, TACHYON_BIN, free_port, start_broker

pytestmark = pytest.mark.tachyon_only("Tachyon's control plane and admin API")

TOKEN = "test-token-0123456789abcdef"


class Admin:
    """The admin API of one broker."""

    def __init__(self, port: int, token: str | None = TOKEN):
        self.port = port
        self.token = token

    def call(self, method: str, path: str, token: str | None = "default") -> tuple[int, object]:
        token = self.token if token == "default" else token
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        c.request(method, path, headers=headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        ctype = r.getheader("Content-Type", "")
        if ctype.startswith("application/json"):
            return r.status, json.loads(body)
        return r.status, body.decode()

    def ok(self, method: str, path: str):
        status, body = self.call(method, path)
        assert status == 200, f"{method} {path}: {status} {body}"
        return body

    def wait_ready(self, pid_not: int | None = None, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        info = {}
        while time.monotonic() < deadline:
            try:
                status, info = self.call("GET", "/api/v1/info")
                if status == 200 and info["dataplane_ready"] and info["dataplane_pid"] != pid_not:
                    return info
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"dataplane not ready within {timeout}s: {info}")

    def metrics(self) -> dict[str, float]:
        status, text = self.call("GET", "/metrics", token=None)
        assert status == 200, text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def write_config(tmp_path: pathlib.Path, extra: str = "") -> tuple[pathlib.Path, int]:
    port = free_port()
    text = (HERE / "broker.toml").read_text().replace(
        '[admin]\nbind = "127.0.0.1:0"',
        f'[admin]\nbind = "127.0.0.1:{port}"\ntoken = "{TOKEN}"',
    )
    assert f"127.0.0.1:{port}" in text
    cfg = tmp_path / "cp.toml"
    cfg.write_text(extra + "\n" + text if extra.startswith("#top") else text + extra)
    return cfg, port


@pytest.fixture
def cp(tmp_path):
    """A broker whose admin API is known: (broker, Admin, config path)."""
    cfg, port = write_config(tmp_path, "\n[sys]\ninterval_secs = 1\n")
    b = start_broker(tmp_path, config=cfg)
    admin = Admin(port)
    admin.wait_ready()
    yield b, admin, cfg
    if b.running():
        assert b.stop() == 0, b.log()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def persistent_subscriber(port: int, client_id: str, topic: str) -> M.RawClient:
    c = M.RawClient(port, M.V5)
    c.connect(client_id, clean=False, props=[(M.SESSION_EXPIRY_INTERVAL, 3600)])
    assert c.subscribe(topic, qos=1) == [1]
    return c


def test_killed_dataplane_is_restarted_and_sessions_resume(cp):
    b, admin, _ = cp
    info = admin.wait_ready()
    old = info["dataplane_pid"]
    assert old != info["control_plane_pid"] and pid_alive(old)
    sub = persistent_subscriber(b.port, "cp-keeper", "cp/resume/#")
    sub.send(M.disconnect())
    sub.close()
    pub = M.RawClient(b.port, M.V5)
    pub.connect("cp-pub")
    pub.publish("cp/resume/x", b"kept across the crash", qos=1)
    pub.close()

    os.kill(old, signal.SIGKILL)
    info = admin.wait_ready(pid_not=old)
    assert info["dataplane_restarts"] == 1, info
    assert b.running(), "the control plane survives its dataplane"
    assert "dataplane died; restarting it" in b.log()

    c = M.RawClient(b.port, M.V5)
    ack = c.connect("cp-keeper", clean=False, props=[(M.SESSION_EXPIRY_INTERVAL, 3600)])
    assert ack.session_present, "the session was recovered from the WAL"
    p = c.recv_publish()
    assert p.topic == "cp/resume/x" and p.payload == b"kept across the crash"
    c.send(M.puback(p.pid))
    c.close()
    m = admin.metrics()
    assert m["tachyon_dataplane_restarts_total"] == 1
    assert m["tachyon_up"] == 1


def test_sigusr1_is_passed_on_without_harm(cp):
    b, admin, _ = cp
    dp = admin.wait_ready()["dataplane_pid"]
    os.kill(b.proc.pid, signal.SIGUSR1)
    time.sleep(0.5)
    info = admin.wait_ready()
    assert info["dataplane_pid"] == dp and info["dataplane_restarts"] == 0, info


def test_sigterm_stops_both_processes(tmp_path):
    cfg, port = write_config(tmp_path)
    b = start_broker(tmp_path, config=cfg)
    dp = Admin(port).wait_ready()["dataplane_pid"]
    assert b.stop() == 0, b.log()
    deadline = time.monotonic() + 5
    while pid_alive(dp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(dp), "the dataplane stops with the control plane"
    assert "dataplane stopped" in b.log()


@pytest.mark.parametrize(
    "text,key",
    [
        ("[limits]\nmax_pakcet_size = 10\n", "max_pakcet_size"),
        ("[limits]\nmax_packet_size = 10\n", "limits.max_packet_size = 10"),
        ("[admin]\nbind = \"localhost\"\n", "admin.bind"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[sys]\ninterval_secs = 100000\n", "sys.interval_secs"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path, text, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    check = subprocess.run([TACHYON_BIN, "check-config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert check.returncode == 2 and key in check.stderr, check.stderr
    serve = subprocess.run(
        [TACHYON_BIN, "serve", "--config", str(cfg), "-p", str(free_port())],
        capture_output=True, text=True, timeout=20, cwd=tmp_path,
    )
    assert serve.returncode == 2, serve.stderr
    assert key in serve.stderr, serve.stderr
    assert "dataplane" not in serve.stderr, "refused before any dataplane starts"


def test_admin_port_in_use_stops_startup_naming_the_key(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        cfg = tmp_path / "taken.toml"
        cfg.write_text(f'[admin]\nbind = "127.0.0.1:{taken}"\ntoken = "{TOKEN}"\n')
        out = subprocess.run(
            [TACHYON_BIN, "serve", "--config", str(cfg), "-p", str(free_port())],
            capture_output=True, text=True, timeout=20, cwd=tmp_path,
        )
    assert out.returncode == 2, out.stderr
    assert "admin.bind" in out.stderr and "choose a free port" in out.stderr, out.stderr


def test_api_refuses_missing_or_wrong_token(cp):
    _, admin, _ = cp
    for path in ["/api/v1/info", "/api/v1/clients", "/api/v1/retained"]:
        status, body = admin.call("GET", path, token=None)
        assert status == 401 and "missing token" in body["error"], (path, body)
        status, body = admin.call("GET", path, token="not-the-token-at-all")
        assert status == 401 and body["error"] == "wrong token", (path, body)
    status, _ = admin.call("DELETE", "/api/v1/clients/x", token=None)
    assert status == 401
    status, _ = admin.call("POST", "/api/v1/reload", token="x" * len(TOKEN))
    assert status == 401
    # Probes and the scrape endpoint need no token.
    assert admin.call("GET", "/health", token=None)[0] == 200
    assert admin.call("GET", "/ready", token=None)[0] == 200
    assert admin.call("GET", "/metrics", token=None)[0] == 200
    assert admin.call("GET", "/nowhere")[0] == 404


def test_api_operations(cp):
    b, admin, _ = cp
    info = admin.ok("GET", "/api/v1/info")
    assert info["shards"] == 2 and info["driver"] == "kernel" and info["version"]
    sub = persistent_subscriber(b.port, "cp-api-sub", "cp/api/#")
    pub = M.RawClient(b.port, M.V311)
    pub.connect("cp-api-pub")
    pub.publish("cp/api/retained", b"\xff\xfebinary", qos=1, retain=True)
    pub.publish("cp/api/text", b"hello", qos=1, retain=True)
    sub.recv_publish()
    sub.recv_publish()

    clients = admin.ok("GET", "/api/v1/clients")
    ids = [c["client_id"] for c in clients]
    assert "cp-api-sub" in ids and "cp-api-pub" in ids, clients
    one = admin.ok("GET", "/api/v1/clients/cp-api-sub")
    assert one["protocol"] == "5" and one["connected"] and one["subscriptions"] == 1
    assert one["peer"].startswith("127.0.0.1:") and one["expiry_secs"] == 3600
    assert admin.call("GET", "/api/v1/clients/nobody")[0] == 404

    sessions = admin.ok("GET", "/api/v1/sessions")
    assert any(s["client_id"] == "cp-api-sub" and s["durable"] for s in sessions), sessions
    subs = admin.ok("GET", "/api/v1/subscriptions?client_id=cp-api-sub")
    assert subs == [{
        "client_id": "cp-api-sub", "filter": "cp/api/#", "qos": 1, "no_local": False,
        "retain_as_published": False, "retain_handling": 0, "subscription_id": None,
    }]

    retained = admin.ok("GET", "/api/v1/retained?filter=" + urllib.parse.quote("cp/api/#", safe=""))
    assert [r["topic"] for r in retained] == ["cp/api/retained", "cp/api/text"], retained
    assert retained[0]["payload"] is None and retained[0]["payload_base64"] == "//5iaW5hcnk="
    one = admin.ok("GET", "/api/v1/retained/cp/api/text")
    assert one["payload"] == "hello" and one["qos"] == 1
    assert admin.call("GET", "/api/v1/retained/cp/api/%23")[0] == 400
    assert admin.ok("DELETE", "/api/v1/retained/cp/api/text")["deleted"] is True
    assert admin.call("GET", "/api/v1/retained/cp/api/text")[0] == 404
    assert admin.call("DELETE", "/api/v1/retained/cp/api/text")[0] == 404
    # Deleting a retained message publishes nothing to subscribers.
    with pytest.raises((TimeoutError, AssertionError)):
        sub.recv_publish(timeout=0.5)
    # ... and a new subscriber gets only what is left.
    late = M.RawClient(b.port, M.V5)
    late.connect("cp-api-late")
    late.subscribe("cp/api/#", qos=0)
    assert late.recv_publish().topic == "cp/api/retained"
    with pytest.raises((TimeoutError, AssertionError)):
        late.recv_publish(timeout=0.5)
    late.close()

    # Kick: DISCONNECT 0x98 (Administrative action) to a v5 client; its session stays.
    assert admin.ok("DELETE", "/api/v1/clients/cp-api-sub")["disconnected"] is True
    packets = sub.read_until_closed(timeout=5)
    assert [(p.type, p.reason_code) for p in packets if p.type == M.DISCONNECT] == [(M.DISCONNECT, 0x98)]
    assert admin.call("DELETE", "/api/v1/clients/cp-api-sub")[0] == 404
    s = admin.ok("GET", "/api/v1/sessions/cp-api-sub")
    assert s["connected"] is False and s["subscriptions"] == 1
    pub.close()

    stats = admin.ok("GET", "/api/v1/stats")
    assert len(stats["shards"]) == 2
    assert stats["totals"]["counters"]['messages_received_total{qos="1"}'] >= 2
    assert all(s["published_ms_ago"] < 5000 for s in stats["shards"]), stats["shards"]
    assert "broker_hop_latency_microseconds" in stats["totals"]["histograms"]


def test_metrics_move_with_real_traffic(cp):
    b, admin, _ = cp
    before = admin.metrics()
    sub = M.RawClient(b.port, M.V5)
    sub.connect("cp-m-sub")
    sub.subscribe("cp/m/#", qos=1)
    pub = M.RawClient(b.port, M.V5)
    pub.connect("cp-m-pub")
    for i in range(20):
        pub.publish("cp/m/a", b"x" * 100, qos=1)
        pub.publish("cp/m/b", b"y" * 10, qos=0)
    for _ in range(40):
        p = sub.recv_publish()
        if p.qos:
            sub.send(M.puback(p.pid))
    # Shards publish their block four times a second.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = admin.metrics()
        if after['tachyon_messages_sent_total{qos="1"}'] - before['tachyon_messages_sent_total{qos="1"}'] >= 20:
            break
        time.sleep(0.1)
    d = lambda k: after[k] - before.get(k, 0)  # noqa: E731
    assert d('tachyon_messages_received_total{qos="1"}') == 20
    assert d('tachyon_messages_received_total{qos="0"}') == 20
    assert d('tachyon_messages_sent_total{qos="1"}') == 20
    assert d('tachyon_payload_bytes_received_total{qos="1"}') == 2000
    assert d('tachyon_payload_bytes_sent_total{qos="0"}') == 200
    assert d("tachyon_bytes_received_total") > 2200
    assert d("tachyon_broker_hop_latency_microseconds_count") == 40
    assert after["tachyon_clients_connected"] >= 2
    assert after['tachyon_broker_hop_latency_microseconds_bucket{le="+Inf"}'] == after["tachyon_broker_hop_latency_microseconds_count"]
    assert d("tachyon_connections_opened_total") >= 2
    sub.close()
    pub.close()


def test_sys_subscriber_receives_the_broker_topics(cp):
    b, _, _ = cp
    c = M.RawClient(b.port, M.V311)
    c.connect("cp-sys")
    c.subscribe("$SYS/#", qos=0)
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + 5
    want = {"$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected",
            "$SYS/broker/messages/received", "$SYS/broker/bytes/sent",
            "$SYS/broker/load/messages/received/1min", "$SYS/broker/retained messages/count"}
    while not want <= seen.keys() and time.monotonic() < deadline:
        p = c.recv_publish(timeout=max(deadline - time.monotonic(), 0.1))
        seen[p.topic] = p.payload
    assert want <= seen.keys(), sorted(seen)
    assert seen["$SYS/broker/version"].startswith(b"tachyon ")
    assert seen["$SYS/broker/uptime"].endswith(b" seconds")
    # Published again every interval (1 s here), with current values.
    first_uptime = seen["$SYS/broker/uptime"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        p = c.recv_publish(timeout=5)
        seen[p.topic] = p.payload
        if p.topic == "$SYS/broker/uptime" and p.payload != first_uptime:
            break
    else:
        raise AssertionError("uptime not republished")
    # This round counts the subscriber itself (published after it connected).
    deadline = time.monotonic() + 5
    while int(seen["$SYS/broker/clients/connected"]) < 1 and time.monotonic() < deadline:
        p = c.recv_publish(timeout=5)
        seen[p.topic] = p.payload
    assert int(seen["$SYS/broker/clients/connected"]) >= 1
    # `#` does not match $SYS topics [MQTT-4.7.2-1].
    w = M.RawClient(b.port, M.V5)
    w.connect("cp-sys-wild")
    w.subscribe("#", qos=0)
    with pytest.raises((TimeoutError, AssertionError)):
        w.recv_publish(timeout=1.5)
    w.close()
    c.close()


def test_live_change_applies_without_disconnecting(cp):
    b, admin, cfg = cp
    old = M.RawClient(b.port, M.V5)
    ack = old.connect("cp-live-old")
    assert ack.props.get(M.MAXIMUM_PACKET_SIZE) == 1048576
    old.subscribe("cp/live", qos=0)
    dp = admin.wait_ready()["dataplane_pid"]

    cfg.write_text(cfg.read_text().replace("max_packet_size = 1048576", "max_packet_size = 4096")
                   .replace('level = "info"', 'level = "info,tachyon_engine=debug"'))
    os.kill(b.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "SIGHUP: configuration reloaded" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "SIGHUP: configuration reloaded" in b.log(), b.log()

    new = M.RawClient(b.port, M.V5)
    ack = new.connect("cp-live-new")
    assert ack.props.get(M.MAXIMUM_PACKET_SIZE) == 4096, "new connections get the new limit"
    # The old connection was not dropped: it still receives.
    new.publish("cp/live", b"after reload", qos=0)
    assert old.recv_publish().payload == b"after reload"
    old.assert_open()
    assert admin.wait_ready()["dataplane_pid"] == dp, "no restart"
    # The new log level applies: engine debug lines appear.
    deadline = time.monotonic() + 5
    while "DEBUG" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "DEBUG" in b.log()

    # A change that cannot apply live is named.
    cfg.write_text(cfg.read_text().replace("count = 2", "count = 1"))
    r = admin.ok("POST", "/api/v1/reload")
    assert r == {"applied": ["log.level"], "restart_required": ["shards"]} or (
        r["restart_required"] == ["shards"]), r
    # A broken file is refused with the key, and the running configuration stays.
    cfg.write_text(cfg.read_text() + "\n[supervisor]\nbogus = 1\n")
    status, body = admin.call("POST", "/api/v1/reload")
    assert status == 422 and "bogus" in body["error"], body
    old.assert_open()
    new.close()
    old.close()


def test_ctl_does_the_common_tasks(cp):
    b, admin, cfg = cp
    c = M.RawClient(b.port, M.V5)
    c.connect("cp-ctl-client")

    def ctl(*args, ok=True):
        out = subprocess.run([TACHYON_BIN, "ctl", "--config", str(cfg), *args],
                             capture_output=True, text=True, timeout=20)
        assert (out.returncode == 0) == ok, out.stdout + out.stderr
        return out

    assert json.loads(ctl("info").stdout)["dataplane_ready"] is True
    assert any(x["client_id"] == "cp-ctl-client" for x in json.loads(ctl("clients").stdout))
    assert json.loads(ctl("kick", "cp-ctl-client").stdout)["disconnected"] is True
    assert "not connected" in ctl("kick", "cp-ctl-client", ok=False).stderr
    assert "tachyon_up 1" in ctl("metrics").stdout
    assert json.loads(ctl("reload").stdout)["restart_required"] == []
    bad = subprocess.run([TACHYON_BIN, "ctl", "--config", str(cfg), "--token", "wrong-token", "info"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0 and "401" in bad.stderr
    c.close()


def test_generated_token_file_is_used_by_ctl(tmp_path):
    port = free_port()
    cfg = tmp_path / "gen.toml"
    cfg.write_text((HERE / "broker.toml").read_text().replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{port}"'))
    b = start_broker(tmp_path, config=cfg)
    try:
        token_file = tmp_path / "data" / "admin.token"
        assert token_file.exists(), b.log()
        assert token_file.stat().st_mode & 0o077 == 0, "readable by its owner only"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert Admin(port, token).wait_ready()["dataplane_ready"]
        out = subprocess.run([TACHYON_BIN, "ctl", "--config", str(cfg), "info"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
    finally:
        assert b.stop() == 0, b.log()


def test_json_logs_name_client_and_peer(tmp_path):
    cfg, port = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace('[log]\nlevel = "info"', '[log]\nlevel = "info"\nformat = "json"'))
    b = start_broker(tmp_path, config=cfg)
    c = M.RawClient(b.port, M.V5)
    c.connect("cp-json-client")
    c.send(M.disconnect())
    c.close()
    time.sleep(0.3)
    assert b.stop() == 0, b.log()
    lines = [json.loads(l) for l in b.log_path.read_text().splitlines() if l.startswith("{")]
    assert len(lines) > 5
    targets = {l["target"] for l in lines}
    assert "tachyon::control" in targets and "tachyon::dataplane" in targets, targets
    conn = [l for l in lines if l["fields"].get("client_id") == "cp-json-client"]
    assert conn, lines
    assert all("peer" in l["fields"] for l in conn), conn
    assert {l["fields"]["message"] for l in conn} >= {"client connected", "client disconnected"}


HANG = "\n[supervisor]\nhang_timeout_ms = 2000\n"


def _wait_not_ready(admin: Admin, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = admin.call("GET", "/ready", token=None)
        if status == 503:
            return body
        time.sleep(0.02)
    raise AssertionError(f"/ready stayed 200 for {timeout}s")


def test_stopped_dataplane_is_found_hung_and_restarted(tmp_path):
    """Issue 13 §5: a dataplane that stops making progress (kill -STOP) is found hung after
    supervisor.hang_timeout_ms (2 s here): /ready turns false, an error line names the
    shard, the dataplane is killed and restarted with its WAL (a queued message of a
    persistent session is still there). Detection and restart times are printed."""
    cfg, port = write_config(tmp_path, HANG)
    b = start_broker(tmp_path, config=cfg)
    admin = Admin(port)
    try:
        old = admin.wait_ready()["dataplane_pid"]
        sub = persistent_subscriber(b.port, "hang-keeper", "hang/#")
        sub.send(M.disconnect())
        sub.close()
        pub = M.RawClient(b.port, M.V5)
        pub.connect("hang-pub")
        pub.publish("hang/x", b"kept across the hang", qos=1)
        pub.close()

        t0 = time.monotonic()
        os.kill(old, signal.SIGSTOP)
        _wait_not_ready(admin)
        detected = time.monotonic() - t0
        info = admin.wait_ready(pid_not=old, timeout=30)
        restarted = time.monotonic() - t0
        print(f"hang detected after {detected:.2f} s, serving again after {restarted:.2f} s")
        assert not pid_alive(old)
        log = b.log()
        assert "has made no progress for" in log and "hung; killing the dataplane" in log, log[-3000:]
        assert admin.metrics()["tachyon_dataplane_hangs_total"] == 1
        assert info["dataplane_restarts"] == 1, info

        c = M.RawClient(b.port, M.V5)
        ack = c.connect("hang-keeper", clean=False, props=[(M.SESSION_EXPIRY_INTERVAL, 3600)])
        assert ack.session_present
        p = c.recv_publish()
        assert p.payload == b"kept across the hang"
        c.close()
    finally:
        assert b.stop() == 0, b.log()


def test_hang_action_report_marks_not_ready_and_names_the_shard(tmp_path):
    """With supervisor.hang_action = "report" a hung dataplane is not killed: /ready is 503,
    /health says "degraded" and names each silent shard, admin requests fail at once with
    the reason instead of waiting; once the dataplane runs again (SIGCONT) it is ready."""
    cfg, port = write_config(tmp_path, HANG + 'hang_action = "report"\n')
    b = start_broker(tmp_path, config=cfg)
    admin = Admin(port)
    try:
        dp = admin.wait_ready()["dataplane_pid"]
        os.kill(dp, signal.SIGSTOP)
        try:
            body = _wait_not_ready(admin)
            assert body["stalled"] and all(s["state"] == "hung" for s in body["stalled"]), body
            status, health = admin.call("GET", "/health", token=None)
            assert status == 200 and health["status"] == "degraded", health
            assert {s["shard"] for s in health["stalled"]} <= {0, 1} and health["stalled"], health
            t = time.monotonic()
            status, err = admin.call("GET", "/api/v1/clients")
            assert status == 503 and "no progress" in json.dumps(err), (status, err)
            assert time.monotonic() - t < 2, "answered at once, not after the request timeout"
            time.sleep(2.5)
            assert pid_alive(dp), "not killed under hang_action = report"
            assert "hang_action = \"report\"" in b.log()
        finally:
            os.kill(dp, signal.SIGCONT)
        info = admin.wait_ready(timeout=15)
        assert info["dataplane_pid"] == dp and info["dataplane_restarts"] == 0, info
        status, health = admin.call("GET", "/health", token=None)
        assert health["status"] == "ok" and health["stalled"] == [], health
    finally:
        assert b.stop() == 0, b.log()
