"""Generates dashboards/ignition-sessions.json, the Grafana dashboard for this exporter.

Run `python dashboards/generate.py` after changing a panel and commit both files; a test fails
when the committed JSON differs from what this script produces. The JSON is built with
Grafana's own `grafana-foundation-sdk` (pinned to the Grafana release it targets), so its
shape is Grafana's schema rather than a hand-kept copy of it.

Panels are plain data below (`ROWS`): a title, a kind, PromQL targets and a size. To add a
row, append a `Row` to `ROWS`; layout, ids, data sources and variables follow. Every query
selects with `job`, `instance`, `gateway` and, where the metric has one, `project`, and takes
`max by` over the copies that exporter replicas or extra scrape jobs produce, so sums are not
doubled (the rules in rules/ignition.rules.yml do the same).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import gauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import HeatmapCellLayout
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "ignition-sessions.json"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label matchers for the dashboard's variables.
TARGET = 'job=~"$job", instance=~"$instance"'
GW = f'{TARGET}, gateway=~"$gateway"'
GW_PROJECT = f'{GW}, project=~"$project"'
# Usernames that name nobody (see exporter/digest/privacy.py), left out of per-user views.
PLACEHOLDERS = 'username!~"|Unauthenticated|anonymous|__other__"'


def sessions(extra: str = "") -> str:
    """Perspective sessions, one copy of each series across replicas and jobs."""
    return (f"max by (gateway, project, scope, username) "
            f"(ignition_perspective_sessions{{{GW_PROJECT}{extra}}})")


def clients() -> str:
    return ("max by (gateway, project, username, kind) "
            f"(ignition_client_sessions{{{GW_PROJECT}}})")


def one_copy(metric: str, labels: str, range_function: str = "",
             window: str = "$__rate_interval") -> str:
    """A metric with a project label, one copy of each series (`max by` its own `labels`);
    `range_function` (rate, increase) over `window` first."""
    selected = f"{metric}{{{GW_PROJECT}}}"
    if range_function:
        selected = f"{range_function}({selected}[{window}])"
    return f"max by ({labels}) ({selected})"


def by_scope(metric: str, range_function: str = "") -> str:
    """A per-scope metric, one copy of each series; `range_function` (rate) over it first."""
    return one_copy(metric, "gateway, project, scope", range_function)


# The lifecycle metrics' own labels: Perspective per scope, Vision and Designer per kind.
PERSPECTIVE_KEY = "gateway, project, scope"
CLIENT_KEY = "gateway, project, kind"


def per_hour(metric: str, key: str, by: str = "") -> str:
    """Sessions counted by a lifecycle counter in the hour before each point."""
    return f"sum{f' by ({by})' if by else ''} ({one_copy(metric, key, 'increase', '1h')})"


def durations(range_function: str, window: str) -> str:
    """The Perspective duration histogram's buckets: sessions that ended within `window`
    (increase), or per second (rate)."""
    return ("sum by (le) (" + one_copy("ignition_perspective_session_duration_seconds_bucket",
                                       f"{PERSPECTIVE_KEY}, le", range_function, window) + ")")


def ages(by: str = "le") -> str:
    """The age gauge histogram's buckets: the open sessions, as of the last poll."""
    return (f"sum by ({by}) ("
            + one_copy("ignition_perspective_session_age_seconds_bucket",
                       f"{PERSPECTIVE_KEY}, le") + ")")


def by_gateway(metric: str) -> str:
    return f"max by (gateway) ({metric}{{{GW}}})"


# Designer sessions do not count against a Perspective licence.
LICENSED = "sum by (gateway) (" + sessions(', scope!="designer"') + ")"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False  # histogram buckets, which Grafana turns into counts per bucket


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # stat, gauge, timeseries, table, heatmap (whose unit is its buckets')
    targets: tuple[Target, ...]
    description: str
    unit: str = "short"
    width: int = 8
    height: int = 8
    min: float | None = None
    max: float | None = None
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    table_value: str | None = "sessions"  # a table's value column: its title, or None to hide


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


OVERVIEW = Row("Overview", (
    Panel("Perspective sessions", "stat", (Target(f"sum({sessions()})"),),
          "Live Perspective sessions on the selected gateways and projects, as of the last "
          "poll.", width=6, height=5),
    Panel("Vision clients and Designers", "stat", (
        Target(f"sum by (kind) ({clients()})", "{{kind}}"),),
        "Rows of system.util.getSessionInfo: Vision clients and Designers.",
        width=6, height=5),
    Panel("Perspective licence used", "gauge", (
        Target(f"{LICENSED} / on (gateway) "
               f"{by_gateway('ignition_perspective_session_limit')}", "{{gateway}}"),),
        "Licensed sessions (designer scope excluded) of the selected projects against "
        "session_limit, per gateway that sets one.", unit="percentunit", width=6, height=5,
        min=0, max=1, thresholds=((None, "green"), (0.9, "orange"), (1, "red"))),
    Panel("Gateways up", "stat", (
        Target(f"sum({by_gateway('ignition_up')})", "up"),
        Target(f"count({by_gateway('ignition_up')})", "configured")),
        "Gateways that at least one exporter polled successfully, out of those configured.",
        width=6, height=5),
))

SESSIONS = Row("Sessions", (
    Panel("Sessions by project", "timeseries", (
        Target(f"sum by (gateway, project) ({sessions()})", "{{gateway}} / {{project}}"),),
        "Perspective sessions per project.", width=12),
    Panel("Sessions by scope", "timeseries", (
        Target(f"sum by (scope) ({sessions()})", "{{scope}}"),),
        "Perspective sessions per scope: browser, ios, android, designer.", width=12),
    Panel("Top users by session count", "table", (
        Target(f"topk(20, sum by (gateway, username) ({sessions()}))", instant=True),),
        "The 20 users holding the most Perspective sessions right now.", width=8),
    Panel("Users holding more than one session", "table", (
        Target(f"sum by (gateway, username) ({sessions(', ' + PLACEHOLDERS)}) > 1",
               instant=True),),
        "Logged-in users with several concurrent sessions: shared accounts, forgotten tabs "
        "(Unauthenticated, anonymous and __other__ are left out).", width=8),
    Panel("Idle sessions", "timeseries", (
        Target(f"sum by (gateway, project) "
               f"({by_scope('ignition_perspective_idle_sessions')})",
               "{{gateway}} / {{project}}"),),
        "Sessions whose lastComm exceeds idle_after: zombies holding licence seats.",
        width=8),
    Panel("Licensed sessions against the limit", "timeseries", (
        Target(LICENSED, "{{gateway}} sessions"),
        Target(by_gateway("ignition_perspective_session_limit"), "{{gateway}} limit")),
        "Perspective sessions of the selected projects that count against the licence, and "
        "session_limit.", width=24),
))

TRAFFIC = Row("Traffic", (
    Panel("Bytes sent by project", "timeseries", (
        Target(f"sum by (gateway, project) "
               f"({by_scope('ignition_perspective_sent_bytes_total', 'rate')})",
               "{{gateway}} / {{project}}"),),
        "Bytes per second that Perspective sessions sent to the gateway.", unit="Bps"),
    Panel("Active pages by project", "timeseries", (
        Target(f"sum by (gateway, project) "
               f"({by_scope('ignition_perspective_active_pages')})",
               "{{gateway}} / {{project}}"),),
        "Open Perspective pages, summed over sessions."),
    Panel("Vision clients and Designers by project", "timeseries", (
        Target(f"sum by (gateway, project, kind) ({clients()})",
               "{{gateway}} / {{project}} / {{kind}}"),),
        "Vision clients and Designers per gateway and project."),
))

# Per exporter instance: here a replica that falls behind or fails must stand out.
HEALTH = Row("Exporter health", (
    Panel("Gateway up", "timeseries", (
        Target(f"ignition_up{{{GW}}}", "{{gateway}} ({{instance}})"),),
        "1 when the exporter's last poll of the gateway succeeded.", width=8, min=0, max=1),
    Panel("Poll errors by reason", "timeseries", (
        Target(f"sum by (instance, gateway, reason) (increase("
               f"ignition_exporter_poll_errors_total{{{GW}}}[$__rate_interval]))",
               "{{gateway}} {{reason}} ({{instance}})"),),
        "Failed polls: timeout, connect, http, auth, decode, schema, too_large.", width=8),
    Panel("Data age", "timeseries", (
        Target(f"time() - ignition_exporter_last_success_timestamp_seconds{{{GW}}}",
               "{{gateway}} ({{instance}})"),),
        "Seconds since the last successful poll; session series vanish past stale_after.",
        unit="s", width=8),
    Panel("Poll duration", "timeseries", (
        Target(f"ignition_exporter_poll_duration_seconds{{{GW}}}",
               "{{gateway}} ({{instance}})"),),
        "How long the last poll of each gateway took.", unit="s", width=8),
    Panel("Poll lag", "timeseries", (
        Target(f"ignition_exporter_poll_lag_seconds{{{GW}}}", "{{gateway}} ({{instance}})"),),
        "How late the last poll started against its schedule: above zero, the exporter is "
        "too busy to keep time.", unit="s", width=8),
    Panel("Invalid sessions", "timeseries", (
        Target(f"sum by (instance, gateway) (increase("
               f"ignition_exporter_invalid_sessions_total{{{GW}}}[$__rate_interval]))",
               "{{gateway}} ({{instance}})"),),
        "Sessions the gateway sent malformed, skipped by the exporter.", width=8),
    Panel("Folded series", "timeseries", (
        Target(f"sum by (instance, metric) (increase("
               f"ignition_exporter_folded_series_total{{{GW}}}[$__rate_interval]))",
               "{{metric}} ({{instance}})"),),
        "Series folded into username=\"__other__\" by max_series_per_metric: if it rises, "
        "raise the cap or use username_label: drop.", width=8),
    Panel("Gateway versions", "table", (
        Target(f"max without (instance, job) (ignition_gateway_info{{{GW}}})",
               instant=True),),
        "What each gateway reports about itself, as of the last successful poll.",
        width=16, table_value=None),
))

# Logins, logouts, how long sessions last and how old the open ones are (see the README's
# "Session lifecycle"). Durations come from sessions that ended, ages from those still open.
LIFECYCLE = Row("Session lifecycle", (
    Panel("Perspective logins and logouts per hour", "timeseries", (
        Target(per_hour("ignition_perspective_sessions_started_total", PERSPECTIVE_KEY),
               "logins"),
        Target(per_hour("ignition_perspective_sessions_ended_total", PERSPECTIVE_KEY),
               "logouts")),
        "Perspective sessions that started and ended in the hour before each point. A "
        "session that starts and ends between two polls is not seen.", width=12),
    Panel("Vision and Designer logins and logouts per hour", "timeseries", (
        Target(per_hour("ignition_client_sessions_started_total", CLIENT_KEY, "kind"),
               "{{kind}} logins"),
        Target(per_hour("ignition_client_sessions_ended_total", CLIENT_KEY, "kind"),
               "{{kind}} logouts")),
        "Vision clients and Designers that opened and closed in the hour before each point.",
        width=12),
    Panel("Session duration", "heatmap", (
        Target(f"{durations('rate', '$__rate_interval')} * 3600", "{{le}}", heatmap=True),),
        "How long the Perspective sessions that ended lasted, per bucket of the duration "
        "histogram (a quick look, a task, a shift, a wall screen); cells count sessions "
        "ended per hour.", unit="s", width=12),
    Panel("Session duration quantiles", "timeseries", (
        Target(f"histogram_quantile(0.5, {durations('increase', '1h')})", "median"),
        Target(f"histogram_quantile(0.9, {durations('increase', '1h')})", "90th percentile")),
        "Of the Perspective sessions that ended in the hour before each point, interpolated "
        "within the histogram's buckets; empty for an hour without a logout.", unit="s",
        width=12),
    Panel("Session age", "heatmap", (Target(ages(), "{{le}}", heatmap=True),),
        "The open Perspective sessions per age bucket, as of each poll: sessions climb the "
        "buckets as they stay open.", unit="s", width=16),
    Panel("Oldest session age bucket", "stat", (
        Target(f"histogram_quantile(1, {ages('gateway, le')})", "{{gateway}}"),),
        "Upper bound of the age bucket holding each gateway's oldest open Perspective "
        "session: the oldest is at most this old and older than the bucket below. 1 week, "
        "the top bound, also stands for any older session, so it only says the oldest is "
        "more than 3 days old; the Session age heatmap's +Inf row counts those over a week.",
        unit="s", width=8),
))

ROWS = (OVERVIEW, SESSIONS, TRAFFIC, HEALTH, LIFECYCLE)


def _multi_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (dash.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query({"query": query, "refId": f"{name}-values"})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"])))


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    """Data source, then each variable narrowed by the ones before it. Project covers
    Perspective and Vision/Designer metrics: a project with only Vision clients can be
    chosen too."""
    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .current(model.VariableOption(selected=True, text="default", value="default")),
        _multi_variable("job", "Job", "label_values(ignition_exporter_build_info, job)"),
        _multi_variable("instance", "Instance",
                        'label_values(ignition_exporter_build_info{job=~"$job"}, instance)'),
        _multi_variable("gateway", "Gateway", f"label_values(ignition_up{{{TARGET}}}, gateway)"),
        _multi_variable("project", "Project", "label_values({__name__=~\"ignition_perspective"
                        f"_sessions|ignition_client_sessions\", {GW}}}, project)"),
    ]


def _heatmap(panel: Panel) -> heatmap.Panel:
    """Prometheus' own buckets (`le`, upper bounds in the panel's unit), not re-bucketed by
    Grafana; the cells count sessions."""
    return (heatmap.Panel().calculate(False)
            .rows_frame(heatmap.RowsHeatmapOptions().layout(HeatmapCellLayout.LE))
            .y_axis(heatmap.YAxisConfig().unit(panel.unit))
            .cell_values(heatmap.CellValues().unit("short")))


PANEL_KINDS: dict[str, Callable[[Panel], Any]] = {
    "stat": lambda _: stat.Panel(), "gauge": lambda _: gauge.Panel(),
    "timeseries": lambda _: timeseries.Panel(), "table": lambda _: table.Panel(),
    "heatmap": _heatmap,
}


def _query(target: Target, ref_id: str) -> prometheus.Dataquery:
    query = (prometheus.Dataquery().expr(target.expr).ref_id(ref_id).datasource(DATASOURCE)
             .legend_format(target.legend))
    if target.instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    if target.heatmap:
        query = query.format(PromQueryFormat.HEATMAP)
    return query


def _thresholds(panel: Panel) -> dash.ThresholdsConfig:
    return (dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=v, color=c) for v, c in panel.thresholds]))


def _panel(panel: Panel, panel_id: int) -> Any:
    builder = (PANEL_KINDS[panel.kind](panel).id(panel_id).title(panel.title)
               .description(panel.description).datasource(DATASOURCE)
               .height(panel.height).span(panel.width).unit(panel.unit)
               .thresholds(_thresholds(panel))
               .targets([_query(t, chr(ord("A") + i)) for i, t in enumerate(panel.targets)]))
    if panel.min is not None:
        builder = builder.min(panel.min)
    if panel.max is not None:
        builder = builder.max(panel.max)
    if panel.kind == "table":
        builder = builder.with_transformation(_organize(panel.table_value))
    return builder


def _organize(value: str | None) -> model.DataTransformerConfig:
    """Tables show labels and the value, not the evaluation time."""
    hidden = {"Time": True} | ({} if value else {"Value": True})
    renamed = {"Value": value} if value else {}
    return model.DataTransformerConfig(
        id_val="organize", options={"excludeByName": hidden, "renameByName": renamed})


def build() -> model.Dashboard:
    board = (dash.Dashboard("Ignition sessions").uid("ignition-sessions")
             .description("Perspective sessions, Vision clients and Designers per gateway, "
                          "project, scope and user, and the exporter's own health.")
             .tags(["ignition", "scada", "sessions"]).timezone("browser").editable()
             .tooltip(model.DashboardCursorSync.CROSSHAIR).refresh("30s").version(1)
             .time("now-6h", "now").variables(variables()))  # type: ignore[arg-type]
    next_id = 1
    for row in ROWS:
        board = board.with_row(dash.Row(row.title).id(next_id).collapsed(False))
        next_id += 1
        for panel in row.panels:
            board = board.with_panel(_panel(panel, next_id))
            next_id += 1
    return board.build()


# The SDK writes the interval variable's settings into every variable; Grafana's schema
# (@grafana/schema 12 and later) knows them on interval variables only.
INTERVAL_ONLY = ("auto", "auto_count", "auto_min")


def as_json(board: model.Dashboard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(board, cls=JSONEncoder))
    for variable in data["templating"]["list"]:
        if variable["type"] != "interval":
            for key in INTERVAL_ONLY:
                variable.pop(key, None)
    return data


def render() -> str:
    return json.dumps(as_json(build()), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    if "--check" in sys.argv[1:]:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != render():
            print(f"{OUTPUT.name} is out of date: run python dashboards/generate.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
