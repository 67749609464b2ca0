"""The Python half of the ``testkit`` crate, shared by the end-to-end
(``tests/e2e``) and Kubernetes (``tests/k8s``) suites: loopback ports that
cannot collide, and servers started again on fresh ports when one is taken.

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
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

FLOOR = 10_000  # as testkit: below live well-known and Consul/Vault ports
FRESH_PORT_ATTEMPTS = 3  # as testkit


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
