"""Shared pieces of the Kubernetes suite: the tools, the chart rendered
with ``helm template``, reserved loopback ports, and server processes.

No cluster runs here, so each part of the deployment is proven by the
strongest check available: ``helm lint --strict``, every rendered object
validated by ``kubernetes-validate --strict``, probes evaluated as kubelet
does against real servers, alerts tested by ``promtool`` and a real
Prometheus. A missing tool fails the test with the command that installs
it; nothing is skipped.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Process and wait_until are the suite's too; its tests import them from here.
from testkit import Port, Process, on_fresh_ports, tool, wait_until  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "strongroom"
# helm built with `go install` assumes Kubernetes 1.20 unless told.
KUBE_VERSION = "1.30.0"
RELEASE = "sr"
NAMESPACE = "vault"
FULLNAME = f"{RELEASE}-strongroom"


@pytest.fixture(scope="session")
def helm() -> str:
    return tool("STRONGROOM_HELM_BIN", "helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("STRONGROOM_PROMTOOL_BIN", "promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return tool("STRONGROOM_PROMETHEUS_BIN", "prometheus")


@pytest.fixture(scope="session")
def strongroom_bin() -> str:
    return tool("STRONGROOM_BIN", "the strongroom binary (cargo build -p examples --bin strongroom)")


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
# The testkit crate's protocol (tests/testkit.py), shared by every suite on
# the machine: a port outside the kernel's ephemeral range, held by an
# exclusive flock on <tmp>/strongroom-ports/<port>.lock for as long as it
# is in use; a server that finds its port taken anyway is started again on
# fresh ports (on_fresh_ports).

@pytest.fixture
def ports():
    """``ports()`` reserves one more port, released at teardown."""
    held = []

    def take() -> int:
        p = Port()
        held.append(p)
        return p.number

    yield take
    for p in held:
        p.release()


# ------------------------------------------------------------ processes

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

    def __init__(self, spawn, binary: str, workdir: Path, name: str, config: str, ports, env=None,
                 args=()):
        self.name, self.workdir, self.args = name, workdir, list(args)
        self.config_path = workdir / f"{name}.hcl"
        self._spawn, self._binary, self._env = spawn, binary, env
        on_fresh_ports(name, lambda: self._first_start(config, ports()))

    def _first_start(self, config: str, port: int) -> None:
        self.port, self.addr = port, f"http://127.0.0.1:{port}"
        self.config_path.write_text(
            config + f'\nlistener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n'
                     "  telemetry {\n    unauthenticated_metrics_access = true\n  }\n}\n")
        self.start()

    def start(self) -> None:
        """Starts the server (again: a restart keeps its reserved port)."""
        self.proc = self._spawn([self._binary, "server", f"-config={self.config_path}", *self.args], self.workdir,
                                self.name, self._env)
        wait_until(f"{self.name} answering HTTP", self._answers, on_fail=self.proc.log, proc=self.proc)

    def _answers(self) -> bool:
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
        return Node(processes, strongroom_bin, tmp_path, name, config, ports, env, args)

    return start


@pytest.fixture
def consul(processes, ports, tmp_path) -> str:
    """A real Consul dev agent on reserved loopback ports; its HTTP address."""
    binary = tool("STRONGROOM_CONSUL_BIN", "consul")

    def start() -> str:
        http = ports()
        proc = processes([binary, "agent", "-dev", "-log-level=warn", f"-http-port={http}",
                          f"-serf-lan-port={ports()}", f"-serf-wan-port={ports()}", f"-server-port={ports()}",
                          "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1"], tmp_path, "consul")
        wait_until("Consul electing itself leader",
                   lambda: requests.get(f"http://127.0.0.1:{http}/v1/status/leader", timeout=2).json(),
                   timeout=60, on_fail=proc.log, proc=proc)
        return f"127.0.0.1:{http}"

    return on_fresh_ports("consul", start)


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
