"""The alert rules (monitoring/prometheus/alerts.yml) are valid, each one fires, and each has its runbook.

promtool (Debian's prometheus package; ``make test`` installs it) checks the rules and runs
tests/deploy/alerts_test.yml, which feeds every alert the series that must fire it (and a healthy
system that must not). Every alert reads only metrics the application exports, and its
``runbook_url`` names a section of docs/operations.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_dashboards import catalogue, unknown_metrics  # noqa: F401 (catalogue is a fixture)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yml")
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus package, which has it")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=UNIT_TESTS.parent)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_accepts_the_rules_and_the_prometheus_config_that_loads_them():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", str(RULES.with_name("prometheus.yml")))
    rules = len(re.findall(r"^\s+- alert: ", RULES.read_text(), flags=re.MULTILINE))
    assert config.returncode == 0 and f"{rules} rules found" in config.stdout, config.stdout + config.stderr


def test_every_alert_fires_on_purpose_and_stays_quiet_when_healthy():
    result = promtool("test", "rules", UNIT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    fired = {case["alertname"] for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in alerts()}


def test_every_alert_reads_only_metrics_the_application_exports(catalogue):  # noqa: F811
    for rule in alerts():
        assert unknown_metrics(rule["expr"], catalogue) == set(), rule["alert"]


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section():
    anchors = {slug(line.lstrip("#")) for line in OPERATIONS.read_text().splitlines() if line.startswith("#")}
    for rule in alerts():
        assert rule["labels"]["severity"] in {"page", "warn"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        document, anchor = rule["annotations"]["runbook_url"].split("#")
        assert document == "docs/operations.md" and anchor in anchors, rule["alert"]
