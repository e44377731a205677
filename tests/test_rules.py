"""Prometheus rules: valid, unit-tested with promtool, and every alert tested both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_tool

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
RULES = RULES_DIR / "ignition.rules.yml"
RULE_TESTS = RULES_DIR / "ignition.rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True,
                          cwd=RULES_DIR, timeout=120)


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
              if "alert" in r]
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    for alert in alerts:
        name = alert["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never tested silent"


def test_every_alert_has_severity_summary_and_description() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("critical", "warning", "info")
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]
                assert rule["alert"].startswith("Ignition")
