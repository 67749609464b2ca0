"""The Python half of the ``testkit`` crate, shared by the end-to-end
(``tests/e2e``) and Kubernetes (``tests/k8s``) suites: the tools, loopback
ports that cannot collide, child processes with their logs, "until this
holds, by this deadline", and servers started again on fresh ports when one
is taken.

Ports follow ``testkit/src/ports.rs`` to the letter, so these suites and
the Rust ones never hand out the same port: a port lies outside the
kernel's ephemeral range (no outbound connection ever takes it), is held
by an exclusive ``flock`` on ``<tmp>/strongroom-ports/<port>.lock`` for as
long as anything may listen on it, and is checked free for TCP and UDP
before it is handed out.

Something outside the protocol may still take a port between the check
and the server's bind. A server that exits at start saying "address
already in use" is therefore started again on fresh ports by
:func:`on_fresh_ports`, which prints a line saying so (as testkit's
``with_fresh_ports`` does).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest
import requests

T = TypeVar("T")

FLOOR = 10_000  # as testkit: below live well-known and Consul/Vault ports
FRESH_PORT_ATTEMPTS = 3  # as testkit
SETUP_HINT = "run scripts/setup-tools.sh and eval what it prints"
LOG_TAIL = 6000  # characters of a log a failure message shows


def tool(var: str, name: str, venv: str | None = None, default: str | None = None) -> str:
    """The executable ``$var``, else ``default`` (a system package's path),
    else, for a tool of the cached virtualenv, ``<cache>/venv/bin/<venv>``.
    A missing one fails the test saying how to get it; nothing is skipped."""
    path = os.environ.get(var) or default
    if not path and venv:
        cache = os.environ.get("STRONGROOM_CACHE") or Path.home() / ".cache" / "strongroom"
        path = str(Path(cache) / "venv" / "bin" / venv)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found ({var}={path!r}); {SETUP_HINT}")
    return path


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral range, or Linux's default."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def lock_dir() -> Path:
    """One lock file per reserved port, shared by every process on the machine."""
    return Path(os.environ.get("STRONGROOM_PORT_DIR") or Path(tempfile.gettempdir()) / "strongroom-ports")


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Port:
    """A loopback port reserved across processes until :meth:`release`."""

    def __init__(self) -> None:
        lo, hi = ephemeral_range()
        candidates = [p for p in range(FLOOR, 65536) if not lo <= p <= hi]
        locks = lock_dir()
        locks.mkdir(parents=True, exist_ok=True)
        start = random.randrange(len(candidates))
        for i in range(len(candidates)):
            port = candidates[(start + i) % len(candidates)]
            lock = open(locks / f"{port}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if _free(port):
                self.number, self._lock = port, lock
                return
            lock.close()
        raise RuntimeError(f"every loopback port outside {lo}-{hi} is reserved or in use (lock files in {locks})")

    def release(self) -> None:
        self._lock.close()

    def __int__(self) -> int:
        return self.number

    def __str__(self) -> str:
        return str(self.number)


def is_address_in_use(log: str) -> bool:
    """Whether a log says a listener could not bind because its port was
    taken (Go, Rust and Python all say "address already in use")."""
    return "address already in use" in log.lower()


class AddressInUse(Exception):
    """A server exited at start because a port was taken: worth another try
    on fresh ports."""


def on_fresh_ports(what: str, start: Callable[[], T], attempts: int = FRESH_PORT_ATTEMPTS) -> T:
    """Runs ``start`` (which reserves its own ports, starts the server and
    waits until it serves, raising :class:`AddressInUse` when it exited with
    "address already in use") until it succeeds; each port clash is
    reported on stderr and retried on fresh ports."""
    last = None
    for attempt in range(attempts):
        try:
            return start()
        except AddressInUse as e:
            last = e
            if attempt + 1 < attempts:
                tail = " | ".join(str(e).strip().splitlines()[-3:])
                print(f'testkit: {what} exited at start with "address already in use"; restarting it on fresh '
                      f"ports (attempt {attempt + 2} of {attempts}): {tail}", file=sys.stderr)
    raise RuntimeError(f"{what} kept finding its ports taken ({attempts} attempts): {last}")


def die_with_parent() -> None:
    """In a child before exec: SIGKILL when the test process dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """A child process with its output appended to ``<workdir>/<name>.log``
    (a restart under the same name adds to the same log), killed with the
    test process; :meth:`kill` at teardown."""

    def __init__(self, args: list, workdir: Path, name: str, env: dict | None = None, inherit_env: bool = True):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self._run_start = self._log.tell()
        full_env = {**os.environ} if inherit_env else {}
        for var in ("VAULT_ADDR", "STRONGROOM_ADDR"):
            full_env.pop(var, None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=full_env, start_new_session=True, preexec_fn=die_with_parent)

    def log(self) -> str:
        """The whole log, earlier runs under this name included."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Fails when the process has exited; raises :class:`AddressInUse`
        when this run's log says a port was taken."""
        if self.alive():
            return
        with open(self.log_path, "rb") as f:
            f.seek(self._run_start)
            this_run = f.read().decode(errors="replace")
        if is_address_in_use(this_run):
            raise AddressInUse(f"{self.name}: {this_run[-2000:]}")
        pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{this_run[-LOG_TAIL:]}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def wait_until(what: str, check, timeout: float = 30.0, interval: float = 0.1, on_fail=lambda: "",
               proc: Process | None = None, not_yet: tuple[type[BaseException], ...] = ()):
    """Polls ``check()`` until it returns something truthy and returns it;
    a request that fails, or ``check`` raising one of ``not_yet`` (a page
    still changing under a browser), counts as "not yet". Fails with
    ``what``, the last answer and the tail of ``on_fail()`` after
    ``timeout`` seconds. With ``proc``, a process that exits meanwhile
    fails the wait at once (raising :class:`AddressInUse` when its port
    was taken, for :func:`on_fresh_ports`)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        try:
            last = check()
        except (requests.RequestException, OSError, *not_yet) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout} s (last: {last!r})\n{on_fail()[-LOG_TAIL:]}")
