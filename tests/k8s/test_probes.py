"""The probe contract: the probes in the rendered StatefulSet, evaluated as
kubelet evaluates them, against a real server in each state it goes
through on Kubernetes — uninitialized, active, and sealed because its KMS
key was revoked — must give reference/kubernetes.md §6's table: a sealed
or uninitialized pod is alive but not ready, so it takes no traffic and is
never restarted in a loop while it waits for the KMS.

kubelet's rules (Kubernetes docs, "Configure Liveness, Readiness and
Startup Probes"): httpGet to the pod's address and the named or numbered
container port, User-Agent kube-probe/<version> and Accept */*, no TLS
verification, timeoutSeconds, success iff 200 <= status < 400; exec runs
the command in the container's environment, success iff it exits 0.
"""

import os
import socket
import subprocess


import boto3
import pytest
import requests

from conftest import Process, find, on_fresh_ports, render, wait_until

KUBE_PROBE_UA = "kube-probe/1.30"
# The rows of reference/kubernetes.md §6 (✓ = the probe succeeds).
TABLE = {
    "/v1/sys/health":
        {"uninit": (False, 501), "sealed": (False, 503), "standby": (False, 429), "active": (True, 200)},
    "/v1/sys/health?standbyok=true":
        {"uninit": (False, 501), "sealed": (False, 503), "standby": (True, 200), "active": (True, 200)},
    "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204":
        {"uninit": (True, 204), "sealed": (True, 204), "standby": (True, 200), "active": (True, 200)},
    "/v1/sys/health?uninitcode=204":
        {"uninit": (True, 204), "sealed": (False, 503), "standby": (False, 429), "active": (True, 200)},
    "/v1/sys/health?standbyok=true&uninitcode=204":
        {"uninit": (True, 204), "sealed": (False, 503), "standby": (True, 200), "active": (True, 200)},
}
EXEC = {"uninit": (False, 2), "sealed": (False, 2), "standby": (True, 0), "active": (True, 0)}


def container_of(objects) -> dict:
    return find(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def kubelet(probe: dict, container: dict, node, strongroom_bin: str) -> tuple:
    """Runs one probe against ``node`` as kubelet would; (success, status
    code or exit code)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = get["port"]
        if isinstance(port, str):  # a container port name
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
        # The pod's API port is where this node listens.
        assert port == 8200, f"probe on port {port}, not the API port"
        scheme = get.get("scheme", "HTTP").lower()
        headers = {"User-Agent": KUBE_PROBE_UA, "Accept": "*/*"}
        headers.update({h["name"]: h["value"] for h in get.get("httpHeaders", [])})
        try:
            r = requests.get(f"{scheme}://127.0.0.1:{node.port}{get['path']}", headers=headers, timeout=timeout,
                             verify=False)
        except requests.RequestException as e:
            return False, repr(e)
        return 200 <= r.status_code < 400, r.status_code
    command = [strongroom_bin if word == "/usr/local/bin/strongroom" else word for word in probe["exec"]["command"]]
    env = {"PATH": os.environ["PATH"], "HOME": str(node.workdir)}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["VAULT_ADDR"] = env["VAULT_ADDR"].replace("127.0.0.1:8200", f"127.0.0.1:{node.port}")
    try:
        rc = subprocess.run(command, env=env, capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return False, "timeout"
    return rc == 0, rc


ALLOW = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"%s","Resource":"*"}]}'


class Kms:
    """A real KMS protocol endpoint (moto_server) enforcing IAM, one key,
    and an IAM user for the node whose KMS permission can be revoked."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        client = lambda service, key, secret: boto3.client(  # noqa: E731
            service, region_name="us-east-1", endpoint_url=endpoint,
            aws_access_key_id=key, aws_secret_access_key=secret)
        # moto answers the first three calls unauthenticated: bootstrap an admin.
        bootstrap = client("iam", "bootstrap", "bootstrap")
        bootstrap.create_user(UserName="admin")
        bootstrap.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=ALLOW % "*")
        admin_key = bootstrap.create_access_key(UserName="admin")["AccessKey"]
        admin = (admin_key["AccessKeyId"], admin_key["SecretAccessKey"])
        self.iam = client("iam", *admin)
        self.key = client("kms", *admin).create_key(Description="strongroom probe test")["KeyMetadata"]["KeyId"]
        self.iam.create_user(UserName="node")
        self.policy = self.iam.create_policy(PolicyName="kms", PolicyDocument=ALLOW % "kms:*")["Policy"]["Arn"]
        self.grant()
        node_key = self.iam.create_access_key(UserName="node")["AccessKey"]
        self.access_key, self.secret_key = node_key["AccessKeyId"], node_key["SecretAccessKey"]

    def grant(self) -> None:
        self.iam.attach_user_policy(UserName="node", PolicyArn=self.policy)

    def revoke(self) -> None:
        self.iam.detach_user_policy(UserName="node", PolicyArn=self.policy)


@pytest.fixture
def kms(processes, ports, tmp_path) -> Kms:
    moto_bin = os.environ.get("STRONGROOM_MOTO_BIN")
    if not moto_bin or not os.access(moto_bin, os.X_OK):
        pytest.fail("moto_server not found (STRONGROOM_MOTO_BIN); run scripts/setup-tools.sh")
    env = {"AWS_DEFAULT_REGION": "us-east-1", "INITIAL_NO_AUTH_ACTION_COUNT": "3"}

    def start() -> Kms:
        port = ports()
        proc: Process = processes([moto_bin, "-H", "127.0.0.1", "-p", str(port)], tmp_path, "moto", env)

        def answers() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until("moto accepting connections", answers, timeout=90, on_fail=proc.log, proc=proc)
        return Kms(f"http://127.0.0.1:{port}")

    return on_fresh_ports("moto_server", start)


def test_probes_from_the_chart_match_the_table_in_every_state(helm, kms, consul, start_node, strongroom_bin):
    chart = container_of(render(helm, "values-ha-consul-awskms.yaml"))
    ready, live = chart["readinessProbe"], chart["livenessProbe"]
    assert ready["httpGet"]["path"] == "/v1/sys/health?standbyok=true"
    assert live["httpGet"]["path"] == "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204"
    exec_ready = container_of(render(helm, "values-ha-consul-awskms.yaml",
                                     sets=("server.readinessProbe.path=",)))["readinessProbe"]
    assert "exec" in exec_ready
    # Two pods of the production layout: Consul storage (HA), AWS KMS.
    config = f"""
storage "consul" {{
  address = "{consul}"
  path    = "vault/"
}}
seal "awskms" {{
  region            = "us-east-1"
  kms_key_id        = "{kms.key}"
  endpoint          = "{kms.endpoint}"
  access_key        = "{kms.access_key}"
  secret_key        = "{kms.secret_key}"
  connect_timeout   = "1s"
  attempt_timeout   = "2s"
  operation_timeout = "5s"
  max_attempts      = 1
}}
auto_unseal_max_backoff = "1s"
telemetry {{
  disable_hostname = true
}}
"""

    def check(node, state: str) -> None:
        for path, row in TABLE.items():
            probe = {**ready, "httpGet": {**ready["httpGet"], "path": path}}
            got = kubelet(probe, chart, node, strongroom_bin)
            assert got == row[state], f"{state}: {path} gave {got}, want {row[state]}"
        assert kubelet(ready, chart, node, strongroom_bin)[0] is (state in ("active", "standby"))
        assert kubelet(live, chart, node, strongroom_bin)[0] is True, f"{state}: liveness must pass"
        assert kubelet(exec_ready, chart, node, strongroom_bin) == EXEC[state], state

    def health(node) -> int:
        return requests.get(f"{node.addr}/v1/sys/health", timeout=5).status_code

    n1 = start_node("n1", config)
    check(n1, "uninit")

    # Auto-unseal: init returns recovery keys and the node unseals itself
    # and takes the lock.
    init = n1.init(recovery_shares=1, recovery_threshold=1)
    assert init["recovery_keys_base64"]
    wait_until("n1 active", lambda: health(n1) == 200, on_fail=n1.proc.log)
    check(n1, "active")
    n2 = start_node("n2", config)
    wait_until("n2 an unsealed standby", lambda: health(n2) == 429, on_fail=n2.proc.log)
    check(n2, "standby")

    # n2's KMS permission is revoked and its pod restarts: it stays up,
    # sealed, alive and not ready, and says why; n1 keeps serving.
    kms.revoke()
    n2.restart()
    wait_until("the restarted node reporting the KMS failure",
               lambda: "failed to unseal core" in n2.proc.log(), on_fail=n2.proc.log)
    check(n2, "sealed")
    check(n1, "active")
    code, metrics = n2.call("GET", "sys/metrics?format=json")
    assert code == 200
    gauges = {g["Name"]: g["Value"] for g in metrics["Gauges"]}
    assert gauges["vault.core.unsealed"] == 0 and gauges["vault.core.seal.unreachable.time"] > 0

    # The permission comes back: the pod unseals itself and is ready again
    # as a standby, no restart.
    kms.grant()
    wait_until("n2 a standby again", lambda: health(n2) == 429, timeout=60, on_fail=n2.proc.log)
    check(n2, "standby")
