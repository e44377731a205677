"""The Grafana dashboard: generated with Grafana's SDK, valid against Grafana's own Dashboard
type, every query honours every variable, and every query returns data from a real
Prometheus that scraped the exporter in demo mode (under two jobs) with the rules loaded."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.processes import ExporterProcess, PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "ignition-sessions.json"
SCHEMA_CHECK = ROOT / "tests" / "dashboard-schema-check"
RULES = ROOT / "rules" / "ignition.rules.yml"
VARIABLES = ("job", "instance", "gateway", "project")
# Metrics that carry a project label, and those without a gateway label.
WITH_PROJECT = {"ignition_perspective_sessions", "ignition_perspective_active_pages",
                "ignition_perspective_idle_sessions", "ignition_perspective_recent_sent_bytes",
                "ignition_perspective_sent_bytes_total", "ignition_client_sessions",
                "ignition_perspective_sessions_started_total",
                "ignition_perspective_sessions_ended_total",
                "ignition_perspective_session_duration_seconds_bucket",
                "ignition_perspective_session_age_seconds_bucket",
                "ignition_client_sessions_started_total", "ignition_client_sessions_ended_total",
                "ignition_client_session_duration_seconds_bucket"}
WITHOUT_GATEWAY = {"ignition_exporter_build_info"}


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "dashboards" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def test_committed_json_is_what_the_generator_makes() -> None:
    assert DASHBOARD.read_text() == generator().render(), \
        "run: python dashboards/generate.py"


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 41
    found = variables()
    assert list(found) == ["datasource", *VARIABLES]
    source = found["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    assert source["current"]["text"] and source["current"]["value"]
    for name in VARIABLES:
        assert found[name]["multi"] and found[name]["includeAll"]
        assert found[name]["current"] == {"selected": True, "text": ["All"],
                                          "value": ["$__all"]}
    titles = {p["title"] for p in board["panels"]}
    for wanted in ("Perspective sessions", "Sessions by project", "Sessions by scope",
                   "Top users by session count", "Users holding more than one session",
                   "Idle sessions", "Bytes sent by project", "Active pages by project",
                   "Vision clients and Designers", "Gateway up", "Poll duration",
                   "Poll errors by reason", "Data age", "Perspective licence used",
                   "Poll lag", "Folded series", "Invalid sessions", "Gateway versions",
                   "Perspective logins and logouts per hour",
                   "Vision and Designer logins and logouts per hour", "Session duration",
                   "Session duration quantiles", "Session age", "Oldest session age bucket"):
        assert wanted in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]


def test_heatmaps_show_the_histograms_own_buckets() -> None:
    """Grafana turns cumulative `le` buckets into counts per bucket only for queries in
    heatmap format, and must not re-bucket them."""
    heatmaps = [p for p in dashboard()["panels"] if p["type"] == "heatmap"]
    assert {p["title"] for p in heatmaps} == {"Session duration", "Session age"}
    for panel in heatmaps:
        assert panel["options"]["calculate"] is False
        assert panel["options"]["rowsFrame"]["layout"] == "le"
        assert panel["options"]["yAxis"]["unit"] == "s"
        for target in panel["targets"]:
            assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}"
            assert re.match(r"sum by \(le\) \(max by \([a-z, ]*\ble\)", target["expr"])


def test_project_variable_covers_perspective_and_vision() -> None:
    query = variables()["project"]["query"]["query"]
    assert "ignition_perspective_sessions" in query and "ignition_client_sessions" in query


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, matchers) of every series selector in a query."""
    return re.findall(r"([a-z_:]+)\{([^}]*)\}", expr)


def all_queries() -> list[tuple[str, str]]:
    board = dashboard()
    queries = [(f"variable {v['name']}", v["query"]["query"])
               for v in board["templating"]["list"] if v["type"] == "query"]
    queries += [(f"panel {p['title']!r} {t['refId']}", t["expr"])
                for p in board["panels"] for t in p.get("targets", [])]
    return queries


def test_every_panel_honours_every_variable() -> None:
    missing = []
    for name, query in all_queries():
        if name.startswith("variable"):
            continue
        assert selectors(query), f"{name} selects nothing: {query}"
        for metric, matchers in selectors(query):
            wanted = ["job", "instance"]
            wanted += [] if metric in WITHOUT_GATEWAY else ["gateway"]
            wanted += ["project"] if metric in WITH_PROJECT else []
            missing += [f"{name}: {metric} ignores ${v}" for v in wanted
                        if f'{v}=~"${v}"' not in matchers]
    assert not missing, "\n".join(missing)


def test_sdk_reads_back_everything_it_wrote() -> None:
    """The JSON survives Grafana's SDK model both ways with nothing lost or added."""
    from grafana_foundation_sdk.models.dashboard import Dashboard

    board = dashboard()
    assert generator().as_json(Dashboard.from_json(board)) == board


def test_json_is_valid_against_grafanas_dashboard_type() -> None:
    """`tsc --strict` checks the JSON, as an object literal, against @grafana/schema's
    Dashboard type, of the newest release and of the one the SDK targets: required fields (a
    variable's current text and value), types, enum values, and no unknown keys."""
    npm = require_tool("npm")
    installed = SCHEMA_CHECK / "node_modules" / ".package-lock.json"
    lock = SCHEMA_CHECK / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=SCHEMA_CHECK, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    literal = DASHBOARD.read_text().strip()
    (SCHEMA_CHECK / "dashboard.ts").write_text(
        'import type { JsonDashboard, JsonDashboard116 } from "./json";\n\n'
        f"export const newest: JsonDashboard = {literal};\n\n"
        f"export const targeted: JsonDashboard116 = {literal};\n")
    tsc = SCHEMA_CHECK / "node_modules" / ".bin" / "tsc"
    result = subprocess.run([str(tsc), "-p", str(SCHEMA_CHECK)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def runnable(query: str) -> str:
    """A panel or variable query as Prometheus itself would run it once Grafana filled in
    the variables with "All"."""
    label_values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
    if label_values:
        query = f"group by ({label_values.group(2)}) ({label_values.group(1)})"
    for name in VARIABLES:
        query = query.replace(f"${name}", ".*")
    return query.replace("$__rate_interval", "1m")


def numbers(query: str) -> str:
    """The query's samples that are numbers: NaN (a quantile of a histogram that observed
    nothing, a division by zero) is not data on a panel. NaN == NaN is false."""
    return f"({query}) == ({query})"


@pytest.mark.slow
async def test_every_query_returns_data(tmp_path: Path) -> None:
    """One exporter scraped under two jobs, as a second Prometheus job or a replica would
    make it: every query answers with numbers, and totals are not doubled. The lifecycle
    queries over ended sessions (the duration quantiles) have numbers once a session has
    ended: the demo's seeded simulator ends its first within about 10 s."""
    async with ExporterProcess(tmp_path, "--demo") as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        target = {"static_configs": [{"targets": [exporter.url[7:]]}]}
        async with PrometheusServer(
                tmp_path, [{"job_name": "ignition", **target},
                           {"job_name": "ignition-dr", **target}],
                rule_files=[str(RULES)]) as prometheus:
            await prometheus.wait_for_query('ignition_up{job="ignition-dr"}')
            empty = []
            for name, query in all_queries():
                try:
                    await prometheus.wait_for_query(numbers(runnable(query)), timeout=20)
                except pytest.fail.Exception:
                    empty.append(f"{name}: {query}")
            assert not empty, "queries that return no number:\n" + "\n".join(empty)
            await assert_not_doubled(prometheus)


async def assert_not_doubled(prometheus: PrometheusServer) -> None:
    """The dashboard's total and the rules' against one job's own sum, in one evaluation
    (the two jobs scrape at different moments, so allow the demo's drift, not a doubling)."""
    total = next(runnable(q) for n, q in all_queries() if "'Perspective sessions'" in n)
    one_job = 'sum(ignition_perspective_sessions{job="ignition"})'
    for query in (total, "sum(gateway:ignition_perspective_sessions:sum)"):
        [sample] = await prometheus.wait_for_query(f"({query}) / {one_job}")
        assert 0.7 < float(sample["value"][1]) < 1.4, (query, sample)


def test_the_oldest_session_panel_says_what_its_top_value_covers(tmp_path: Path) -> None:
    """`histogram_quantile(1, …)` gives the upper bound of the bucket holding the oldest
    session, and for the `+Inf` bucket the bound below it: 604800 ("1 week") both when the
    oldest session is four days old and when it is a month old. The panel's description
    and the README said "1 week means a week or more", which the four-day case belies: an
    engineer reading the panel would look for week-old sessions that are not there."""
    promtool = require_tool("promtool")
    panel = next(p for row in dashboard()["panels"] for p in [row, *row.get("panels", [])]
                 if p.get("title") == "Oldest session age bucket")
    series = 'ignition_perspective_session_age_seconds_bucket{{job="ignition", ' \
             'instance="exp:9871", gateway="plant-a", project="Line", scope="browser", ' \
             'le="{le}"}}'
    four_days_oldest = {"259200.0": 9, "604800.0": 10, "+Inf": 10}
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(json.dumps({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": series.format(le=le), "values": f"{n}x5"}
                                    for le, n in four_days_oldest.items()],
                   "promql_expr_test": [{
                       "expr": runnable(panel["targets"][0]["expr"]), "eval_time": "2m",
                       "exp_samples": [{"labels": '{gateway="plant-a"}', "value": 604800}]}]}],
    }))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "test.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr  # four days shows "1 week"
    readme = (ROOT / "README.md").read_text()
    for where, text in (("the panel's description", panel["description"]),
                        ("the README", readme)):
        claim = re.search(r'1 week"? means a week or more', text)
        assert claim is None, (
            f"{where} says 1 week means a week or more; a four-day-old session shows it too")
