"""The Grafana dashboard: generated from code, and every query returns data from a real
Prometheus that scraped the exporter in demo mode with the recording rules loaded."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ExporterProcess, PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "ignition-sessions.json"
RULES = ROOT / "rules" / "ignition.rules.yml"


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "dashboards" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_committed_json_is_what_the_generator_makes() -> None:
    assert DASHBOARD.read_text() == generator().render(), \
        "run: python dashboards/generate.py"


def test_dashboard_shape() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("gateway", "project"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
    titles = {p["title"] for p in board["panels"]}
    for wanted in ("Perspective sessions", "Sessions by project", "Sessions by scope",
                   "Top users by session count", "Users holding more than one session",
                   "Idle sessions", "Bytes sent by project", "Active pages by project",
                   "Vision clients and Designers", "Gateway up", "Poll duration",
                   "Poll errors by reason", "Data age", "Perspective licence used"):
        assert wanted in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def runnable(query: str) -> str:
    """A panel or variable query as Prometheus itself would run it once Grafana filled in
    the variables with "All"."""
    label_values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
    if label_values:
        query = f"group by ({label_values.group(2)}) ({label_values.group(1)})"
    return (query.replace("$gateway", ".*").replace("$project", ".*")
            .replace("$__rate_interval", "1m"))


def all_queries() -> list[tuple[str, str]]:
    board = dashboard()
    queries = [(f"variable {v['name']}", v["query"]["query"])
               for v in board["templating"]["list"] if v["type"] == "query"]
    queries += [(f"panel {p['title']!r} {t['refId']}", t["expr"])
                for p in board["panels"] for t in p.get("targets", [])]
    return queries


@pytest.mark.slow
async def test_every_query_returns_data(tmp_path: Path) -> None:
    async with ExporterProcess(tmp_path, "--demo") as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        async with PrometheusServer(
                tmp_path, [{"job_name": "ignition",
                            "static_configs": [{"targets": [exporter.url[7:]]}]}],
                rule_files=[str(RULES)]) as prometheus:
            empty = []
            for name, query in all_queries():
                try:
                    await prometheus.wait_for_query(runnable(query), timeout=20)
                except pytest.fail.Exception:
                    empty.append(f"{name}: {query}")
            assert not empty, "queries that return nothing:\n" + "\n".join(empty)
