"""Prometheus rules: valid for promtool and vmalert, unit-tested with promtool (one exporter,
replicas, two jobs, a site's threshold overrides), every alert tested both ways and linked
to its runbook section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
RULES = RULES_DIR / "ignition.rules.yml"
SITE_THRESHOLDS = RULES_DIR / "examples" / "site-thresholds.yml"
RULE_TESTS = (RULES_DIR / "ignition.rules.test.yml", RULES_DIR / "ignition.thresholds.test.yml")
RUNBOOK = ROOT / "docs" / "runbook.md"


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool(tool), *args], capture_output=True, text=True,
                          cwd=RULES_DIR, timeout=120)


def alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


@pytest.mark.parametrize("rules", [RULES, SITE_THRESHOLDS], ids=lambda p: p.name)
def test_rules_are_valid(rules: Path) -> None:
    result = run("promtool", "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_load_in_vmalert() -> None:
    """VictoriaMetrics parses PromQL with its own MetricsQL parser and Go templates itself:
    the rules must load there too."""
    result = run("vmalert", "-dryRun", f"-rule={RULES}", f"-rule={SITE_THRESHOLDS}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tests", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(tests: Path) -> None:
    result = run("promtool", "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = [c for path in RULE_TESTS for t in yaml.safe_load(path.read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        name = alert["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never tested silent"


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings: lower case, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_has_severity_annotations_and_its_runbook_section() -> None:
    anchors = runbook_anchors()
    for alert in alerts():
        assert alert["alert"].startswith("Ignition")
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"]
        assert annotations["runbook_url"] == f"docs/runbook.md#{alert['alert'].lower()}"
        assert alert["alert"].lower() in anchors, f"docs/runbook.md has no {alert['alert']}"


def test_every_default_threshold_is_used_by_its_alert() -> None:
    """A threshold series for an alert that does not read it would be a silent no-op."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    defaults = {r["labels"]["alert"] for g in groups for r in g["rules"]
                if r.get("record") == "ignition:alert_threshold"}
    recorded = "\n".join(r["expr"] for g in groups for r in g["rules"] if "record" in r)
    assert defaults
    for name in defaults:
        assert f'alert="{name}"' in recorded, f"no threshold rule reads {name}'s"
        assert name in {a["alert"] for a in alerts()}
