"""The alerting rules (observability/alerts.yml) in Prometheus's own tool, and their runbooks.

promtool checks the configuration with the rules it loads and runs the rules' unit tests
(observability/alerts.test.yml). It comes with Debian's `prometheus` package, which .ci/run
installs; these tests skip only where promtool is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deployment_files import _metric_names_in_code

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def _alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=OBSERVABILITY, capture_output=True, text=True, check=False
    )


@needs_promtool
def test_promtool_accepts_the_configuration_and_its_rule_files() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout + result.stderr, "prometheus.yml loads no rule file"


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not() -> None:
    tests = yaml.safe_load((OBSERVABILITY / "alerts.test.yml").read_text(encoding="utf-8"))
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert sorted(names - fired) == [], "alerts no test fires"
    assert sorted(names - quiet) == [], "alerts no test keeps quiet"


def test_every_alert_is_paged_or_ticketed_and_has_a_runbook() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = operations.split("\n## Alerts\n", 1)
    assert len(section) == 2, 'docs/operations.md has no "## Alerts" section'
    alerts_section = re.split(r"\n## ", section[1], maxsplit=1)[0]
    runbooks = set(re.findall(r"^### (\w+)", alerts_section, re.MULTILINE))
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"] in runbooks, f"no runbook for {rule['alert']} under ## Alerts"


def test_every_gateway_metric_an_alert_uses_exists_in_the_code() -> None:
    defined = _metric_names_in_code()
    exposed = defined | {f"{name}_total" for name in defined}
    used: set[str] = set()
    for rule in _alerts():
        used.update(re.findall(r"\bsms_[a-z0-9_]+", rule["expr"]))
    assert used
    series = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert sorted(series - exposed) == []
