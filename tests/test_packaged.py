"""The rules and the dashboard as `ignition-exporter rules` and `dashboard` print them."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from exporter import packaged
from exporter.cli import main
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


def promtool_check_rules(path: Path) -> None:
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_command_prints_rules_prometheus_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    printed = capsys.readouterr().out
    shipped = [p for p in sorted((ROOT / "rules").glob("*.yml"))
               if not p.name.endswith(".test.yml")]
    assert packaged.rule_files() == shipped
    groups = [g for p in shipped for g in yaml.safe_load(p.read_text())["groups"]]
    assert yaml.safe_load(printed)["groups"] == groups
    if len(shipped) == 1:
        assert printed == shipped[0].read_text()
    (tmp_path / "rules.yml").write_text(printed)
    promtool_check_rules(tmp_path / "rules.yml")


def test_several_rule_files_print_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yml").write_text("groups:\n- name: a\n  rules:\n  - record: a:x:sum\n"
                                 "    expr: |\n      sum by (gateway)\n        (ignition_up)\n")
    (rules / "b.yml").write_text("# comment\ngroups:\n  - name: b\n    rules:\n"
                                 "      - alert: B\n        expr: ignition_up == 0\n"
                                 "        annotations: {summary: \"down\"}\n")
    (rules / "b.test.yml").write_text("rule_files: [b.yml]\ntests: []\n")
    monkeypatch.setattr(packaged, "_PACKAGE", tmp_path / "exporter")
    assert main(["rules"]) == 0
    printed = capsys.readouterr().out
    merged = yaml.safe_load(printed)
    assert [g["name"] for g in merged["groups"]] == ["a", "b"]
    assert "expr: |\n" in printed  # multi-line PromQL stays readable
    assert merged["groups"][0]["rules"][0]["expr"] == "sum by (gateway)\n  (ignition_up)\n"
    (tmp_path / "merged.yml").write_text(printed)
    promtool_check_rules(tmp_path / "merged.yml")


def test_dashboard_command_prints_the_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard"]) == 0
    printed = capsys.readouterr().out
    (shipped,) = sorted((ROOT / "dashboards").glob("*.json"))
    assert printed == shipped.read_text()
    assert json.loads(printed)["panels"]


def test_more_than_one_dashboard_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dashboards").mkdir()
    for name in ("a.json", "b.json"):
        (tmp_path / "dashboards" / name).write_text("{}")
    monkeypatch.setattr(packaged, "_PACKAGE", tmp_path / "exporter")
    assert main(["dashboard"]) == 1
    assert "expected one dashboard, found: a.json, b.json" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "shipped"), [
    ("runbook", "docs/runbook.md"), ("site-thresholds", "rules/examples/site-thresholds.yml")])
def test_the_runbook_and_the_thresholds_example_are_printed_as_shipped(
        capsys: pytest.CaptureFixture[str], command: str, shipped: str) -> None:
    """Every alert's runbook_url points into the runbook, and the README sends a site to the
    example to set its own thresholds: an install from a wheel has no checkout to read them
    in."""
    assert main([command]) == 0
    assert capsys.readouterr().out == (ROOT / shipped).read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_wheel_carries_what_the_alerts_and_the_readme_send_a_site_to(tmp_path: Path) -> None:
    """The README: "Installed from a wheel, everything a Prometheus host needs comes with
    it". Every alert's runbook_url points at `docs/runbook.md`, and the README and the runbook
    send a site to `rules/examples/site-thresholds.yml` to set its own thresholds; a plant
    that installed the wheel had neither, and no command prints them."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("ignition_exporter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = [Path(name).name for name in archive.namelist()]
    missing = [name for name in ("runbook.md", "site-thresholds.yml") if name not in names]
    assert missing == [], f"the wheel lacks {missing}"
