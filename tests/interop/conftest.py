"""Broker fixture and client factories for the Tachyon interoperability suite.

Each test gets its own broker process on a free loopback port (isolation:
no retained message, session or subscription leaks between tests).

Environment:
  TACHYON_BIN         path of the tachyon binary
                      (default: <repo>/target/release/tachyon)
  TACHYON_BROKER_CMD  run another broker instead, e.g. 'mosquitto -p {port}'
                      ({port} is substituted). Tests that depend on Tachyon's
                      configuration are then skipped, and reactions the spec
                      leaves optional (a DISCONNECT before closing) are not
                      required.
  TACHYON_STRICT=1    keep those strict expectations with TACHYON_BROKER_CMD.
"""

from __future__ import annotations

import os
import pathlib
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import mqttraw  # noqa: E402
from mqttraw import RawClient  # noqa: E402
from helpers import Witness  # noqa: E402
from pahoclient import PahoClient  # noqa: E402

CONFIG = HERE / "broker.toml"
BROKER_CMD = os.environ.get("TACHYON_BROKER_CMD", "").strip()
TACHYON_BIN = os.path.abspath(os.environ.get("TACHYON_BIN") or str(REPO / "target" / "release" / "tachyon"))
IS_TACHYON = not BROKER_CMD
# TACHYON_STRICT=1 applies Tachyon's stricter expectations to an external
# broker too (to see where it differs).
FORCE_STRICT = os.environ.get("TACHYON_STRICT", "") not in ("", "0")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOG_TAIL = 20000  # characters of broker stderr shown on failure


def pytest_configure(config):
    config.addinivalue_line("markers", "tachyon_only(reason): needs Tachyon's own configuration")


def pytest_sessionstart(session):
    if session.config.option.collectonly or not IS_TACHYON:
        return
    if not (os.path.isfile(TACHYON_BIN) and os.access(TACHYON_BIN, os.X_OK)):
        raise pytest.UsageError(
            f"tachyon binary not found at {TACHYON_BIN}: run `cargo build --release --bin tachyon` "
            "or set TACHYON_BIN (or TACHYON_BROKER_CMD to test another broker)"
        )


def pytest_report_header(config):
    if IS_TACHYON:
        return f"broker: {TACHYON_BIN} serve --config {CONFIG}"
    return f"broker: external command {BROKER_CMD!r} (Tachyon-specific tests skipped)"


def pytest_collection_modifyitems(config, items):
    if IS_TACHYON:
        return
    for item in items:
        m = item.get_closest_marker("tachyon_only")
        if m is not None:
            reason = m.args[0] if m.args else "depends on Tachyon's configuration"
            item.add_marker(pytest.mark.skip(reason=f"TACHYON_BROKER_CMD is set: {reason}"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A broker process started by this suite (and only ever signalled by
    its own pid)."""

    host = "127.0.0.1"

    def __init__(self, port: int, proc: subprocess.Popen, log_path: pathlib.Path, cmd: list[str]):
        self.port = port
        self.proc = proc
        self.log_path = log_path
        self.cmd = cmd
        self.is_tachyon = IS_TACHYON
        self.exit_status: int | None = None

    @property
    def strict(self) -> bool:
        """Require the optional-in-the-spec reactions Tachyon promises (e.g.
        a DISCONNECT with a reason code before closing)."""
        return self.is_tachyon or FORCE_STRICT

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<cannot read broker log: {e}>"
        if len(text) > LOG_TAIL:
            text = "...\n" + text[-LOG_TAIL:]
        return text

    def running(self) -> bool:
        return self.proc.poll() is None

    def send_sigterm(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for exit; on timeout kill the process (by pid) and fail."""
        try:
            self.exit_status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
            self.exit_status = self.proc.returncode
            raise AssertionError(
                f"broker (pid {self.proc.pid}) did not exit within {timeout}s of SIGTERM; killed.\n"
                f"--- broker stderr ---\n{self.log()}"
            ) from None
        return self.exit_status

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (if still running) and wait; returns the exit status."""
        if self.exit_status is not None:
            return self.exit_status
        self.send_sigterm()
        return self.wait(timeout)

    # convenience constructors ------------------------------------------------

    def raw(self, version: int = mqttraw.V5, timeout: float = 5.0) -> RawClient:
        return RawClient(self.port, version, timeout)

    def __repr__(self):
        return f"<Broker pid={self.proc.pid} port={self.port}>"


def _command(port: int, config: pathlib.Path = CONFIG) -> list[str]:
    if BROKER_CMD:
        return shlex.split(BROKER_CMD.format(port=port))
    return [TACHYON_BIN, "serve", "--config", str(config), "-p", str(port)]


def _mqtt_probe(port: int, deadline: float) -> None:
    """One CONNECT/CONNACK/DISCONNECT round trip (v3.1.1, clean session)."""
    c = RawClient(port, mqttraw.V311, timeout=max(deadline - time.monotonic(), 0.5))
    try:
        c.connect("interop-probe-" + uuid.uuid4().hex[:8], clean=True)
        c.disconnect()
    finally:
        c.close()


def start_broker(workdir: pathlib.Path, nofile: int | None = None, config: pathlib.Path = CONFIG) -> Broker:
    """Starts the broker; `nofile` caps its open-files limit (soft and hard); `config` is
    Tachyon's configuration file (tests/interop/broker.toml by default)."""
    last_error = ""
    for attempt in range(3):
        port = free_port()
        cmd = _command(port, config)
        log_path = workdir / f"broker-{attempt}.log"
        logf = open(log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
                if nofile
                else None,
            )
        finally:
            logf.close()
        broker = Broker(port, proc, log_path, cmd)
        deadline = time.monotonic() + START_TIMEOUT
        ready = False
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    ready = True
                    break
            except OSError:
                time.sleep(0.02)
        if ready:
            try:
                _mqtt_probe(port, deadline)
                return broker
            except (AssertionError, OSError, mqttraw.Closed, TimeoutError) as e:
                last_error = f"MQTT probe failed: {e!r}"
        if proc.poll() is None:
            # never became ready: stop it
            broker.send_sigterm()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            last_error = last_error or f"port {port} not accepting within {START_TIMEOUT}s"
        else:
            last_error = f"broker exited early with status {proc.returncode}"
        last_error += f"\ncommand: {shlex.join(cmd)}\n--- broker stderr ---\n{broker.log()}"
        # A port race or a crash: retry a couple of times with a fresh port.
    raise RuntimeError(f"could not start the broker:\n{last_error}")


@pytest.fixture
def broker(tmp_path):
    """A fresh broker on a free loopback port; stopped with SIGTERM at
    teardown, which must make it exit with status 0 within 10 s."""
    b = start_broker(tmp_path)
    yield b
    if b.exit_status is None and not b.running():
        b.exit_status = b.proc.returncode
        pytest.fail(f"broker died during the test with status {b.exit_status}\n--- broker stderr ---\n{b.log()}")
    status = b.stop()
    if status != 0:
        pytest.fail(f"broker exited with status {status} after SIGTERM\n--- broker stderr ---\n{b.log()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        b = item.funcargs.get("broker") if hasattr(item, "funcargs") else None
        if isinstance(b, Broker):
            rep.sections.append(("broker stderr", b.log()))


@pytest.fixture
def clients(broker):
    """Factory for connected paho clients, all stopped at teardown.

    clients("id", protocol=V5, clean=True, ...) -> connected PahoClient
    clients.new("id", ...) -> PahoClient not yet connected
    """
    made: list[PahoClient] = []

    class Factory:
        def new(self, client_id, **kw) -> PahoClient:
            c = PahoClient(broker.port, client_id, **kw)
            made.append(c)
            return c

        def __call__(self, client_id, **kw) -> PahoClient:
            return self.new(client_id, **kw).connect()

    yield Factory()
    for c in made:
        try:
            c.stop()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


@pytest.fixture
def raw(broker):
    """Factory for raw clients, closed at teardown: raw(version) -> RawClient."""
    made: list[RawClient] = []

    def make(version: int = mqttraw.V5, timeout: float = 5.0) -> RawClient:
        c = RawClient(broker.port, version, timeout)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def witness(broker):
    w = Witness(broker)
    yield w
    w.close()
