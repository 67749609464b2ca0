"""The Helm chart: lint, schema validation of every rendered object, and
the properties operators rely on (probes, env order, selectors, PDB,
security, IRSA/kube2iam, metrics wiring)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from conftest import CHART, FULLNAME, NAMESPACE, find, helm_template, render, server_container

VALUES = {
    "default": (),
    "ha-consul-awskms": ("values-ha-consul-awskms.yaml",),
    "kube2iam": ("values-ha-consul-awskms.yaml", "values-kube2iam.yaml"),
}
# The oldest release the chart targets and the newest schema bundled.
VALIDATE_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict_passes(helm, name):
    args = [helm, "lint", str(CHART), "--strict", "--kube-version", "1.30.0"]
    for v in VALUES[name]:
        args += ["-f", str(CHART / v)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


@pytest.mark.parametrize("version", VALIDATE_VERSIONS)
@pytest.mark.parametrize("name", VALUES)
def test_every_rendered_object_is_valid_kubernetes(helm, name, version):
    objects = render(helm, *VALUES[name], kube_version=version)
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue  # no schema in kubernetes-validate; checked below
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against {version}: {e.message} at {list(e.path)}")


def test_the_cli_validator_agrees_on_the_production_example(helm):
    """The same check as an operator would run it: helm template | kubernetes-validate."""
    out = helm_template(helm, "values-ha-consul-awskms.yaml")
    assert out.returncode == 0, out.stderr
    cli = Path(sys.executable).parent / "kubernetes-validate"
    check = subprocess.run([str(cli), "--strict", "-k", "1.30.0", "-"], input=out.stdout,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ERROR" not in check.stdout, check.stdout


def test_default_is_one_standalone_pod_on_a_volume(helm):
    objects = render(helm)
    sts = find(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    mounts = {m["name"]: m["mountPath"] for m in server_container(objects)["volumeMounts"]}
    assert mounts["data"] == "/vault/data"
    kinds = {o["kind"] for o in objects}
    assert "PodDisruptionBudget" not in kinds and "Role" not in kinds
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    assert names == {FULLNAME, f"{FULLNAME}-internal"}
    config = find(objects, "ConfigMap", f"{FULLNAME}-config")["data"]["extraconfig-from-values.hcl"]
    assert 'storage "redb"' in config


def test_ha_runs_three_pods_on_consul_with_four_services(helm):
    objects = render(helm, "values-ha-consul-awskms.yaml")
    sts = find(objects, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["updateStrategy"]["type"] == "OnDelete"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == f"{FULLNAME}-internal"
    assert "volumeClaimTemplates" not in spec, "Consul holds the data"
    selector = spec["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "strongroom", "app.kubernetes.io/instance": "sr", "component": "server"}
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()

    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert set(services) == {FULLNAME, f"{FULLNAME}-active", f"{FULLNAME}-standby", f"{FULLNAME}-internal"}
    assert services[f"{FULLNAME}-active"]["spec"]["selector"] == {**selector, "vault-active": "true"}
    assert services[f"{FULLNAME}-standby"]["spec"]["selector"] == {**selector, "vault-active": "false"}
    internal = services[f"{FULLNAME}-internal"]["spec"]
    assert internal["clusterIP"] == "None" and internal["publishNotReadyAddresses"] is True
    assert internal["selector"] == selector
    for svc in services.values():
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        assert ports == {"http": 8200, "https-internal": 8201}

    role = find(objects, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "watch", "list", "update", "patch"]}]
    binding = find(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "strongroom", "namespace": NAMESPACE}]
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == "strongroom"

    config = find(objects, "ConfigMap", f"{FULLNAME}-config")["data"]["extraconfig-from-values.hcl"]
    assert 'address = "HOST_IP:8500"' in config
    assert 'service_registration "kubernetes" {}' in config
    assert 'seal "awskms"' in config
    assert len(re.findall(r"(?m)^\s*disable_mlock\s*=", config)) == 1


@pytest.mark.parametrize("replicas,max_unavailable", [(1, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3)])
def test_the_pdb_allows_floor_n_minus_1_over_2(helm, replicas, max_unavailable):
    objects = render(helm, "values-ha-consul-awskms.yaml", sets=(f"server.ha.replicas={replicas}",))
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == max_unavailable
    assert pdb["spec"]["selector"] == find(objects, "StatefulSet")["spec"]["selector"]


def test_env_comes_from_the_downward_api_in_dependency_order(helm):
    env = server_container(render(helm, "values-ha-consul-awskms.yaml"))["env"]
    names = [e["name"] for e in env]
    field = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env if "valueFrom" in e}
    assert field == {"HOST_IP": "status.hostIP", "POD_IP": "status.podIP", "VAULT_K8S_POD_NAME": "metadata.name",
                     "VAULT_K8S_NAMESPACE": "metadata.namespace", "HOSTNAME": "metadata.name"}
    values = {e["name"]: e.get("value") for e in env}
    assert values["VAULT_API_ADDR"] == "http://$(POD_IP):8200"
    assert values["VAULT_CLUSTER_ADDR"] == f"https://$(HOSTNAME).{FULLNAME}-internal:8201"
    assert values["VAULT_ADDR"] == "http://127.0.0.1:8200"
    # $(VAR) only expands variables defined earlier in the list.
    for i, e in enumerate(env):
        for ref in re.findall(r"\$\((\w+)\)", e.get("value") or ""):
            assert ref in names[:i], f"{e['name']} uses $({ref}) before it is defined"


def test_probes_are_readiness_when_unsealed_and_liveness_in_every_state(helm):
    container = server_container(render(helm))
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"] == {"path": "/v1/sys/health?standbyok=true", "port": 8200, "scheme": "HTTP"}
    assert live["httpGet"] == {"path": "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204",
                               "port": 8200, "scheme": "HTTP"}
    timings = ("failureThreshold", "periodSeconds", "successThreshold", "timeoutSeconds")
    assert [ready[k] for k in timings] == [2, 5, 1, 3] == [live[k] for k in timings]
    assert (ready["initialDelaySeconds"], live["initialDelaySeconds"]) == (5, 60)
    # An empty path is vault-helm's exec fallback, with this binary.
    fallback = server_container(render(helm, sets=("server.readinessProbe.path=",)))["readinessProbe"]
    assert fallback["exec"]["command"] == ["/usr/local/bin/strongroom", "status", "-tls-skip-verify"]
    tls = server_container(render(helm, sets=("global.tlsDisable=false",)))
    assert tls["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert [p["name"] for p in tls["ports"]] == ["https", "https-internal"]


def test_the_server_is_pid_1_and_gets_sigterm(helm):
    objects = render(helm)
    container = server_container(objects)
    assert container["command"] == ["/usr/local/bin/strongroom"]
    assert container["args"] == ["server", "-config=/vault/config/extraconfig-from-values.hcl",
                                 "-config-placeholders=HOST_IP,POD_IP,HOSTNAME,API_ADDR,TRANSIT_ADDR,RAFT_ADDR"]
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    pod = find(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 10
    assert not pod.get("shareProcessNamespace")
    # Before Kubernetes 1.30 there is no sleep action: no preStop at all.
    old = server_container(render(helm, kube_version="1.29.0"))
    assert "lifecycle" not in old


def test_pods_run_non_root_one_per_node(helm):
    objects = render(helm, "values-ha-consul-awskms.yaml")
    pod = find(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000}
    assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False}
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["component"] == "server"
    spread = pod["topologySpreadConstraints"][0]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("topology.kubernetes.io/zone", "DoNotSchedule")
    single = find(render(helm, sets=("server.affinity=",)), "StatefulSet")["spec"]["template"]["spec"]
    assert "affinity" not in single


def test_aws_credentials_come_from_irsa_or_kube2iam(helm):
    irsa = render(helm, "values-ha-consul-awskms.yaml")
    sa = find(irsa, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert "annotations" not in find(irsa, "StatefulSet")["spec"]["template"]["metadata"]
    k2i = render(helm, "values-ha-consul-awskms.yaml", "values-kube2iam.yaml")
    assert "annotations" not in find(k2i, "ServiceAccount")["metadata"]
    pod_meta = find(k2i, "StatefulSet")["spec"]["template"]["metadata"]
    assert pod_meta["annotations"]["iam.amazonaws.com/role"].startswith("arn:aws:iam::")


def test_config_checksum_annotation_tracks_the_config(helm):
    a = render(helm, sets=("server.includeConfigAnnotation=true",))
    b = render(helm, sets=("server.includeConfigAnnotation=true", "server.standalone.config=ui = false"))
    key = "vault.hashicorp.com/config-checksum"
    pod_a = find(a, "StatefulSet")["spec"]["template"]["metadata"]["annotations"][key]
    assert pod_a == find(a, "ConfigMap", f"{FULLNAME}-config")["metadata"]["annotations"][key]
    assert pod_a != find(b, "StatefulSet")["spec"]["template"]["metadata"]["annotations"][key]


def test_a_structured_config_is_refused(helm):
    out = helm_template(helm, sets=("server.standalone.config.ui=true",))
    assert out.returncode != 0
    assert "must be an HCL string" in out.stderr


def test_service_monitor_scrapes_every_pod_in_vaults_format(helm):
    objects = render(helm, "values-ha-consul-awskms.yaml")
    sm = find(objects, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "strongroom",
                                                     "app.kubernetes.io/instance": "sr", "vault-internal": "true"}
    internal = find(objects, "Service", f"{FULLNAME}-internal")
    assert sm["spec"]["selector"]["matchLabels"].items() <= internal["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/v1/sys/metrics"
    assert endpoint["params"] == {"format": ["prometheus"]}
    assert endpoint["port"] == "http" and endpoint["scheme"] == "http"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    active = find(render(helm, "values-ha-consul-awskms.yaml", sets=("serverTelemetry.serviceMonitor.activeOnly=true",)),
                  "ServiceMonitor")
    assert active["spec"]["selector"]["matchLabels"]["vault-active"] == "true"
    # The chart's configs allow scraping without a token (sealed pods too).
    for values in ((), ("values-ha-consul-awskms.yaml",)):
        config = find(render(helm, *values), "ConfigMap", f"{FULLNAME}-config")["data"]["extraconfig-from-values.hcl"]
        assert "unauthenticated_metrics_access = true" in config
        assert "disable_hostname          = true" in config


def test_prometheus_rule_has_the_alerts_operators_need(helm):
    rule = find(render(helm, "values-ha-consul-awskms.yaml"), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert {"StrongroomSealed", "StrongroomNoActiveNode", "StrongroomMoreThanOneActiveNode",
            "StrongroomLeadershipFlapping", "StrongroomSealUnreachable", "StrongroomConsulLatencyHigh",
            "StrongroomLeadershipSetupFailed", "StrongroomForwardingFailing"} <= set(alerts)
    for r in alerts.values():
        assert 'namespace="vault",service="sr-strongroom-internal"' in r["expr"], r["expr"]
        assert r["labels"]["severity"] in ("critical", "warning")
    extra = render(helm, "values-ha-consul-awskms.yaml",
                   sets=("serverTelemetry.prometheusRules.rules[0].alert=Mine",
                         "serverTelemetry.prometheusRules.rules[0].expr=vector(1)"))
    assert find(extra, "PrometheusRule")["spec"]["groups"][0]["rules"][-1] == {"alert": "Mine", "expr": "vector(1)"}


def test_grafana_dashboard_ships_as_a_sidecar_configmap(helm):
    cm = find(render(helm, "values-ha-consul-awskms.yaml"), "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["strongroom.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for metric in ("vault_core_unsealed", "vault_core_active", "vault_core_handle_request",
                   "vault_consul_get", "vault_core_seal_unreachable_time", "vault_core_leadership_lost_count"):
        assert any(metric in e for e in exprs), metric
