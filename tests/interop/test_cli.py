"""Interoperability with the Mosquitto command line clients
(mosquitto_pub / mosquitto_sub from Debian's mosquitto-clients)."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time

import pytest

VERSIONS = ["mqttv311", "mqttv5"]

# Payloads compared byte for byte: every byte value, an empty payload,
# and UTF-8 text with a trailing newline.
PAYLOADS = [bytes(range(256)), b"", "h\u00e9llo w\u00f6rld \u2603\n".encode()]

HEX_RE = re.compile(r"\[\[([0-9a-f]*)\]\]")


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (Debian package mosquitto-clients)")


class Sub:
    """mosquitto_sub in the background; stdout read by a thread so the test
    can wait for its SUBACK before publishing."""

    def __init__(self, port, version, topic, qos, count, extra=(), fmt="[[%x]]"):
        _need("mosquitto_sub")
        # stdbuf: line-buffer mosquitto_sub's stdout (a pipe) so its
        # "received SUBACK" debug line is seen as soon as it is printed.
        self.cmd = [
            *(["stdbuf", "-oL"] if shutil.which("stdbuf") else []),
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", version,
            "-i", f"cli-sub-{version}", "-t", topic, "-q", str(qos),
            "-C", str(count), "-W", "15", "-d", "-F", fmt, *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[str] = queue.Queue()
        self.all: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.all.append(line)
            self.lines.put(line)

    def wait_subscribed(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                self.kill()
                pytest.fail(f"mosquitto_sub not subscribed within {timeout}s:\n{''.join(self.all)}")
            if "received SUBACK" in line:
                return

    def finish(self, timeout=20.0) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"mosquitto_sub did not exit:\n{''.join(self.all)}")
        self.t.join(timeout=5)
        out = "".join(self.all)
        assert self.proc.returncode == 0, f"mosquitto_sub exited {self.proc.returncode}:\n{out}"
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def pub(port, version, topic, payload: bytes, qos, tmp_path, extra=()):
    _need("mosquitto_pub")
    f = tmp_path / "payload.bin"
    f.write_bytes(payload)
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-i", f"cli-pub-{version}",
           "-t", topic, "-q", str(qos), *extra]  # fmt: skip
    cmd += ["-f", str(f)] if payload else ["-n"]
    r = subprocess.run(cmd, capture_output=True, timeout=15)
    assert r.returncode == 0, f"{cmd} failed: {r.stdout!r} {r.stderr!r}"


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("sub_version", VERSIONS)
@pytest.mark.parametrize("pub_version", VERSIONS)
def test_cli_pub_sub(broker, tmp_path, pub_version, sub_version, qos):
    """mosquitto_pub -> broker -> mosquitto_sub at the same QoS, every
    version pairing; payloads (binary, empty, UTF-8) arrive byte-exact, in
    order and at the published QoS. v5 [MQTT-3.8.4-8] [MQTT-4.6.0-5];
    v3.1.1 section 3.8.4, [MQTT-4.6.0-5]."""
    topic = "cli/exchange/x"
    sub = Sub(broker.port, sub_version, topic, qos, len(PAYLOADS))
    try:
        sub.wait_subscribed()
        for p in PAYLOADS:
            pub(broker.port, pub_version, topic, p, qos, tmp_path)
        out = sub.finish()
    finally:
        sub.kill()
    got = [bytes.fromhex(h) for h in HEX_RE.findall(out)]
    assert got == PAYLOADS, out
    delivered_qos = re.findall(r"received PUBLISH \(d\d, q(\d)", out)
    assert delivered_qos == [str(qos)] * len(PAYLOADS), out


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_retained(broker, tmp_path, version):
    """A retained message published by mosquitto_pub -r is delivered to a
    later mosquitto_sub with the RETAIN flag set. v3.1.1 [MQTT-3.3.1-6]
    [MQTT-3.3.1-8]; v5 [MQTT-3.3.1-9]."""
    payload = b"retained via cli \x00\xff"
    pub(broker.port, version, "cli/retained", payload, 1, tmp_path, extra=["-r"])
    sub = Sub(broker.port, version, "cli/#", 1, 1, fmt="[[%x]] r=%r")
    try:
        out = sub.finish()
    finally:
        sub.kill()
    assert HEX_RE.findall(out) == [payload.hex()], out
    assert "r=1" in out, out


def test_cli_v5_user_property(broker, tmp_path):
    """User properties set with mosquitto_pub -D publish user-property are
    forwarded to mosquitto_sub unchanged and in order. v5 [MQTT-3.3.2-17]
    [MQTT-3.3.2-18]."""
    sub = Sub(broker.port, "mqttv5", "cli/props", 1, 1, fmt="[[%x]] P=%P")
    try:
        sub.wait_subscribed()
        pub(
            broker.port, "mqttv5", "cli/props", b"with props", 1, tmp_path,
            extra=["-D", "publish", "user-property", "k1", "v1", "-D", "publish", "user-property", "k2", "v2"],
        )  # fmt: skip
        out = sub.finish()
    finally:
        sub.kill()
    assert HEX_RE.findall(out) == [b"with props".hex()], out
    m = re.search(r"P=(.*)", out)
    assert m and m.group(1).strip() == "k1:v1 k2:v2", out
