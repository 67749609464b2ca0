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


def test_prometheus_scrapes_three_nodes_and_alerts_on_the_sealed_one(helm, start_node, prometheus, tmp_path):
    # Three servers from the chart's own config (its listener swapped for
    # a loopback one, its data path for a temporary one).
    config = without_listener(chart_config(helm))
    nodes = []
    for i in range(3):
        node_config = config.replace("/vault/data/strongroom.redb", str(tmp_path / f"n{i}.redb"))
        nodes.append(start_node(f"n{i}", node_config))
    tokens = []
    for node in nodes:
        init = node.init()
        node.unseal(init["keys_base64"])
        tokens.append(init["root_token"])
        code, _ = node.call("GET", "sys/mounts", tokens[-1])
        assert code == 200
    # An operator seals the third node by hand.
    code, _ = nodes[2].call("PUT", "sys/seal", tokens[2])
    assert code == 204
    pods = {f"{FULLNAME}-{i}": node.port for i, node in enumerate(nodes)}
    prom = prometheus(pods)

    wait_until("every target scraped successfully",
               lambda: prom.scalar(f'count(up{{job="{JOB}"}} == 1)') == 3, timeout=60, on_fail=prom.proc.log)
    # The gauges as Vault names them, one series per pod.
    unsealed = wait_until("vault_core_unsealed for every pod",
                          lambda: len(prom.query("vault_core_unsealed")) == 3 and prom.query("vault_core_unsealed"))
    by_pod = {s["metric"]["pod"]: s["metric"].get("cluster") for s in unsealed}
    assert set(by_pod) == set(pods)
    assert all(c and c.startswith("strongroom-cluster-") for p, c in by_pod.items() if p != f"{FULLNAME}-2"), by_pod
    assert prom.scalar(f'vault_core_unsealed{{pod="{FULLNAME}-2"}}') == 0
    assert prom.scalar("sum(vault_core_unsealed)") == 2
    # Without HA every unsealed node serves: active = unsealed, pod by pod.
    assert prom.scalar("sum(vault_core_active)") == 2
    assert prom.query("vault_core_active != on(pod) vault_core_unsealed") == []
    # Summaries in ms with Vault's quantiles.
    assert {s["metric"]["quantile"] for s in prom.query("vault_core_handle_request")} == {"0.5", "0.9", "0.99"}
    assert prom.scalar("sum(vault_redb_put_count)") > 0

    # The sealed-pod alert fires for the sealed pod, and only for it.
    firing = wait_until("StrongroomSealed firing", lambda: prom.firing("StrongroomSealed"), timeout=60,
                        on_fail=prom.proc.log)
    assert firing == [{"alertname": "StrongroomSealed", "namespace": NAMESPACE, "pod": f"{FULLNAME}-2",
                       "severity": "critical"}]
    # Every rule loaded and evaluates without error.
    groups = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 9 and all(r["health"] == "ok" for r in rules), rules
    assert prom.firing("StrongroomScrapeFailing") == [] and prom.firing("StrongroomNoActiveNode") == []

    # Unsealing it again clears the alert.
    nodes[2].unseal(nodes[2].keys)
    wait_until("StrongroomSealed resolved", lambda: prom.firing("StrongroomSealed") == [], timeout=60,
               on_fail=prom.proc.log)

    # The dashboard's queries are valid PromQL over these series, and the
    # core panels show data.
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace('=~"$namespace"', f'=~"{NAMESPACE}"')
            result = prom.query(expr)
            if re.search(r"vault_core_(unsealed|active|handle_request)\b", expr):
                assert result, f"panel {panel['title']!r}: {expr} returned nothing"

