"""The chart's alert rules, checked by promtool: they parse, and each
alert fires (with its labels and text) exactly when its series say so."""

import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import find, render

HERE = Path(__file__).resolve().parent


def rules_file(helm, directory: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file."""
    rule = find(render(helm, "values-ha-consul-awskms.yaml"), "PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_checks_the_rules(helm, promtool, tmp_path):
    out = subprocess.run([promtool, "check", "rules", str(rules_file(helm, tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 10 rules found" in out.stdout, out.stdout


def test_every_alert_fires_on_its_series(helm, promtool, tmp_path):
    rules_file(helm, tmp_path)
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    out = subprocess.run([promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # Every alert the chart defines has a test.
    tested = {t["alertname"] for case in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    defined = {r["alert"] for g in yaml.safe_load((tmp_path / "rules.yaml").read_text())["groups"] for r in g["rules"]}
    assert defined == tested, defined ^ tested
