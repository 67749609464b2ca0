"""Shared pieces of the Kubernetes suite: the tools, the chart rendered
with ``helm template``, reserved loopback ports, and server processes.

No cluster runs here, so each part of the deployment is proven by the
strongest check available: ``helm lint --strict``, every rendered object
validated by ``kubernetes-validate --strict``, probes evaluated as kubelet
does against real servers, alerts tested by ``promtool`` and a real
Prometheus. A missing tool fails the test with the command that installs
it; nothing is skipped.
"""

import fcntl
import os
import random
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "strongroom"
# helm built with `go install` assumes Kubernetes 1.20 unless told.
KUBE_VERSION = "1.30.0"
RELEASE = "sr"
NAMESPACE = "vault"
FULLNAME = f"{RELEASE}-strongroom"
SETUP_HINT = "run scripts/setup-tools.sh and eval what it prints"


def _tool(var: str, name: str) -> str:
    path = os.environ.get(var)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found ({var}={path!r}); {SETUP_HINT}")
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("STRONGROOM_HELM_BIN", "helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("STRONGROOM_PROMTOOL_BIN", "promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _tool("STRONGROOM_PROMETHEUS_BIN", "prometheus")


@pytest.fixture(scope="session")
def strongroom_bin() -> str:
    return _tool("STRONGROOM_BIN", "the strongroom binary (cargo build -p examples --bin strongroom)")


def helm_template(helm: str, *values: str, sets: tuple = (), kube_version: str = KUBE_VERSION,
                  extra: tuple = ()) -> subprocess.CompletedProcess:
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", kube_version, *extra]
    for v in values:
        args += ["-f", str(CHART / v)]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def render(helm: str, *values: str, sets: tuple = (), kube_version: str = KUBE_VERSION) -> list:
    """The chart's objects, as dicts."""
    out = helm_template(helm, *values, sets=sets, kube_version=kube_version)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objects: list, kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''} in {[o['kind'] + '/' + o['metadata']['name'] for o in objects]}"
    return matches[0]


def server_container(objects: list) -> dict:
    return find(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


# ------------------------------------------------------------------ ports
# The testkit crate's protocol, shared by every suite on the machine: a
# port outside the kernel's ephemeral range, held by an exclusive flock on
# <tmp>/strongroom-ports/<port>.lock for as long as it is in use.

def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


class Port:
    def __init__(self, number: int, lock):
        self.number = number
        self._lock = lock

    def release(self) -> None:
        self._lock.close()

    def __int__(self) -> int:
        return self.number

    def __str__(self) -> str:
        return str(self.number)


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def reserve_port() -> Port:
    lock_dir = Path(os.environ.get("STRONGROOM_PORT_DIR") or "/tmp/strongroom-ports")
    lock_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = _ephemeral()
    candidates = [p for p in range(10000, 65536) if not lo <= p <= hi]
    start = random.randrange(len(candidates))
    for i in range(len(candidates)):
        port = candidates[(start + i) % len(candidates)]
        lock = open(lock_dir / f"{port}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        if _free(port):
            return Port(port, lock)
        lock.close()
    pytest.fail("no free loopback port outside the ephemeral range")


@pytest.fixture
def ports():
    """``ports()`` reserves one more port, released at teardown."""
    held = []

    def take() -> int:
        p = reserve_port()
        held.append(p)
        return p.number

    yield take
    for p in held:
        p.release()


# ------------------------------------------------------------ processes

def wait_until(what: str, check, timeout: float = 30.0, interval: float = 0.1, on_fail=lambda: ""):
    """Polls ``check()`` until it returns something truthy; fails with
    ``what`` and ``on_fail()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, OSError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout} s (last: {last!r})\n{on_fail()}")


class Process:
    """A child process with its output in a log file; killed at teardown."""

    def __init__(self, args: list, workdir: Path, name: str, env: dict | None = None, inherit_env: bool = True):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        full_env = {**os.environ} if inherit_env else {}
        for var in ("VAULT_ADDR", "STRONGROOM_ADDR"):
            full_env.pop(var, None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30) -> int:
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


@pytest.fixture
def processes():
    """``spawn(args, workdir, name, env, inherit_env=True)`` starts a
    process; all are killed at teardown."""
    started = []

    def spawn(args, workdir, name, env=None, inherit_env=True) -> Process:
        p = Process(args, workdir, name, env, inherit_env)
        started.append(p)
        return p

    yield spawn
    for p in started:
        p.kill()


class Node:
    """A ``strongroom server`` on a reserved loopback port, from ``config``
    (storage, seal, telemetry ...) plus a plain-HTTP listener that allows
    unauthenticated metrics, as the chart's configs do."""

    def __init__(self, spawn, binary: str, workdir: Path, name: str, config: str, port: int, env=None,
                 args=()):
        self.name, self.port, self.workdir, self.args = name, port, workdir, list(args)
        self.addr = f"http://127.0.0.1:{port}"
        self.config_path = workdir / f"{name}.hcl"
        self.config_path.write_text(
            config + f'\nlistener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n'
                     "  telemetry {\n    unauthenticated_metrics_access = true\n  }\n}\n")
        self._spawn, self._binary, self._env = spawn, binary, env
        self.start()

    def start(self) -> None:
        self.proc = self._spawn([self._binary, "server", f"-config={self.config_path}", *self.args], self.workdir,
                                self.name, self._env)
        wait_until(f"{self.name} answering HTTP", self._answers, on_fail=self.proc.log)

    def _answers(self) -> bool:
        assert self.proc.alive(), f"{self.name} exited:\n{self.proc.log()}"
        requests.get(f"{self.addr}/v1/sys/health", timeout=2)
        return True

    def restart(self) -> None:
        assert self.proc.terminate() == 0, self.proc.log()
        self.start()

    def call(self, method: str, path: str, token: str | None = None, body=None):
        headers = {"X-Vault-Token": token} if token else {}
        r = requests.request(method, f"{self.addr}/v1/{path}", headers=headers, json=body, timeout=10)
        return r.status_code, (r.json() if r.content else None)

    def init(self, **params) -> dict:
        code, body = self.call("PUT", "sys/init", body=params or {"secret_shares": 1, "secret_threshold": 1})
        assert code == 200, body
        self.keys = body.get("keys_base64") or []
        return body

    def unseal(self, keys: list) -> None:
        for key in keys:
            code, body = self.call("PUT", "sys/unseal", body={"key": key})
            assert code == 200, body
            if not body["sealed"]:
                return
        pytest.fail(f"{self.name} still sealed after {len(keys)} keys")

    def wait_sealed(self, sealed: bool, timeout: float = 30) -> None:
        wait_until(f"{self.name} sealed={sealed}",
                   lambda: self.call("GET", "sys/seal-status")[1]["sealed"] is sealed,
                   timeout=timeout, on_fail=self.proc.log)


@pytest.fixture
def start_node(strongroom_bin, processes, ports, tmp_path):
    """``start_node(name, config, env=None, args=())`` starts a :class:`Node`."""

    def start(name: str, config: str, env=None, args=()) -> Node:
        return Node(processes, strongroom_bin, tmp_path, name, config, ports(), env, args)

    return start


@pytest.fixture
def consul(processes, ports, tmp_path) -> str:
    """A real Consul dev agent on reserved loopback ports; its HTTP address."""
    binary = _tool("STRONGROOM_CONSUL_BIN", "consul")
    http = ports()
    proc = processes([binary, "agent", "-dev", "-log-level=warn", f"-http-port={http}",
                      f"-serf-lan-port={ports()}", f"-serf-wan-port={ports()}", f"-server-port={ports()}",
                      "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1"], tmp_path, "consul")

    def leader() -> bool:
        assert proc.alive(), proc.log()
        return bool(requests.get(f"http://127.0.0.1:{http}/v1/status/leader", timeout=2).json())

    wait_until("Consul electing itself leader", leader, timeout=60, on_fail=proc.log)
    return f"127.0.0.1:{http}"


def chart_config(helm, *values: str, sets: tuple = ()) -> str:
    """The server config the chart renders into its ConfigMap."""
    cm = find(render(helm, *values, sets=sets), "ConfigMap", f"{FULLNAME}-config")
    return cm["data"]["extraconfig-from-values.hcl"]


def without_listener(config: str) -> str:
    """``config`` minus its listener stanza (tests add a loopback one)."""
    out, depth, skipping = [], 0, False
    for line in config.splitlines():
        if line.startswith('listener "tcp"'):
            skipping = True
        if skipping:
            depth += line.count("{") - line.count("}")
            if depth == 0:
                skipping = False
            continue
        out.append(line)
    return "\n".join(out) + "\n"
