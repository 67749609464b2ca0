"""A real Prometheus (Debian's package) scraping three live servers the way
the chart's ServiceMonitor does, evaluating the chart's alert rules and
the Grafana dashboard's queries."""

import json
import re

import pytest
import requests
import yaml

from conftest import CHART, FULLNAME, NAMESPACE, chart_config, find, render, wait_until, without_listener

JOB = f"{FULLNAME}-internal"


class Prometheus:
    def __init__(self, url: str, proc):
        self.url, self.proc = url, proc

    def query(self, expr: str) -> list:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def scalar(self, expr: str):
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self, alert: str) -> list:
        alerts = requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def live_rules(helm) -> dict:
    """The chart's rules with every `for:` cut to 2 s: the live test checks
    the expressions against real series; promtool's unit tests
    (test_rules.py) check the durations."""
    rule = find(render(helm, "values-ha-consul-awskms.yaml"), "PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:
        for r in group["rules"]:
            if "for" in r:
                r["for"] = "2s"
    return {"groups": groups}


@pytest.fixture
def prometheus(prometheus_bin, processes, ports, tmp_path, helm):
    def start(targets: dict) -> Prometheus:
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(live_rules(helm), sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yaml"],
            # What the ServiceMonitor generates: the -internal Service's pods,
            # /v1/sys/metrics?format=prometheus, namespace/service/pod labels.
            "scrape_configs": [{
                "job_name": JOB,
                "metrics_path": "/v1/sys/metrics",
                "params": {"format": ["prometheus"]},
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"],
                     "labels": {"namespace": NAMESPACE, "service": JOB, "pod": pod}}
                    for pod, port in targets.items()
                ],
            }],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = ports()
        proc = processes([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                          "--log.level=warn"], tmp_path, "prometheus")
        url = f"http://127.0.0.1:{port}"
        wait_until("Prometheus ready", lambda: requests.get(f"{url}/-/ready", timeout=2).status_code == 200,
                   on_fail=proc.log)
        return Prometheus(url, proc)

    return start


def test_prometheus_scrapes_three_nodes_and_alerts_on_the_sealed_one(helm, consul, start_node, prometheus):
    # Three HA servers from the chart's HA config: Consul storage reached
    # as HOST_IP (filled in by the server from the environment, as in a
    # pod), the listener swapped for a loopback one. No Kubernetes API runs
    # here, so the pod-label stanza goes (examples/tests/kube_registration.rs
    # tests it).
    config = without_listener(chart_config(helm, sets=("server.ha.enabled=true",)))
    config = config.replace('service_registration "kubernetes" {}', "")
    host, port = consul.split(":")
    config = config.replace("HOST_IP:8500", f"HOST_IP:{port}")
    nodes = [start_node(f"n{i}", config, env={"HOST_IP": host}, args=("-config-placeholders=HOST_IP",))
             for i in range(3)]
    init = nodes[0].init()
    for node in nodes:
        node.unseal(init["keys_base64"])
    token = init["root_token"]

    def health(node) -> int:
        return requests.get(f"{node.addr}/v1/sys/health", timeout=5).status_code

    wait_until("one active node and two standbys",
               lambda: sorted(health(n) for n in nodes) == [200, 429, 429], timeout=60)
    active = next(n for n in nodes if health(n) == 200)
    # A request to a standby is forwarded to the active node (and timed).
    standby = next(n for n in nodes if health(n) == 429)
    code, _ = standby.call("GET", "sys/mounts", token)
    assert code == 200
    pods = {f"{FULLNAME}-{i}": node.port for i, node in enumerate(nodes)}
    sealed_pod = f"{FULLNAME}-{nodes.index(active)}"
    prom = prometheus(pods)

    wait_until("every target scraped successfully",
               lambda: prom.scalar(f'count(up{{job="{JOB}"}} == 1)') == 3, timeout=60, on_fail=prom.proc.log)
    wait_until("vault_core_active for every pod", lambda: len(prom.query("vault_core_active")) == 3, timeout=30)
    # Exactly one active node among three.
    assert prom.scalar("sum(vault_core_active)") == 1
    assert prom.scalar("sum(vault_core_unsealed)") == 3
    # Summaries in ms with Vault's quantiles; Consul storage timings.
    assert {s["metric"]["quantile"] for s in prom.query("vault_core_handle_request")} == {"0.5", "0.9", "0.99"}
    assert prom.scalar("sum(vault_consul_get_count)") > 0
    assert prom.scalar("sum(vault_barrier_get_count)") > 0
    assert prom.scalar("sum(vault_ha_rpc_client_forward_count)") >= 1
    # Both standbys' heartbeats to the active node, timed.
    wait_until("two standbys echoing",
               lambda: len(prom.query("vault_ha_rpc_client_echo_count > 0")) == 2, timeout=30)
    # Forwarding errors and failed promotions are counted from zero on every node, so the
    # setup-failed alert can see the first one.
    assert [s["value"][1] for s in prom.query("vault_core_leadership_setup_failed_count")] == ["0"] * 3
    assert [s["value"][1] for s in prom.query("vault_ha_rpc_client_forward_errors")] == ["0"] * 3

    # An operator seals the active node by hand (Vault lets only the
    # active node seal itself): a standby takes over, the sealed-pod alert
    # fires for the sealed pod only, and there is still one active node.
    code, body = active.call("PUT", "sys/seal", token)
    assert code == 204, body
    wait_until("a standby taking over", lambda: sorted(health(n) for n in nodes) == [200, 429, 503], timeout=60)
    firing = wait_until("StrongroomSealed firing", lambda: prom.firing("StrongroomSealed"), timeout=60,
                        on_fail=prom.proc.log)
    assert firing == [{"alertname": "StrongroomSealed", "namespace": NAMESPACE, "pod": sealed_pod,
                       "severity": "critical"}]
    wait_until("Prometheus seeing the new active node",
               lambda: prom.scalar(f'vault_core_active{{pod="{sealed_pod}"}}') == 0
               and prom.scalar("sum(vault_core_active)") == 1, timeout=30)
    # Every rule loaded and evaluates without error; nothing else fires.
    groups = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 10 and all(r["health"] == "ok" for r in rules), rules
    for alert in ("StrongroomNoActiveNode", "StrongroomMoreThanOneActiveNode", "StrongroomScrapeFailing",
                  "StrongroomLeadershipSetupFailed", "StrongroomForwardingFailing"):
        assert prom.firing(alert) == [], alert

    # Unsealing it again clears the alert.
    active.unseal(init["keys_base64"])
    wait_until("StrongroomSealed resolved", lambda: prom.firing("StrongroomSealed") == [], timeout=60,
               on_fail=prom.proc.log)

    # The dashboard's queries are valid PromQL over these series, and the
    # core panels show data.
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace('=~"$namespace"', f'=~"{NAMESPACE}"')
            result = prom.query(expr)
            if re.search(r"vault_(core_(unsealed|active|handle_request)|consul_get|ha_rpc_client_(forward|echo)(_errors)?)\b|strongroom_http_requests\b", expr):
                assert result, f"panel {panel['title']!r}: {expr} returned nothing"
