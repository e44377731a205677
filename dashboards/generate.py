"""Generates dashboards/ignition-sessions.json, the Grafana dashboard for this exporter.

Run `python dashboards/generate.py` after changing a panel and commit both files; a test fails
when the committed JSON differs from what this script produces. Panels are plain data below:
a title, a kind, PromQL targets and a size. Queries use the recording rules from
rules/ignition.rules.yml where one exists.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "ignition-sessions.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GW = 'gateway=~"$gateway"'
GW_PROJECT = 'gateway=~"$gateway", project=~"$project"'


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # stat, gauge, timeseries, table
    targets: tuple[Target, ...]
    description: str
    unit: str = "short"
    width: int = 8
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


ROWS = (
    Row("Overview", (
        Panel("Perspective sessions", "stat", (
            Target(f"sum(gateway:ignition_perspective_sessions:sum{{{GW}}})"),),
            "Live Perspective sessions on the selected gateways, as of the last poll.",
            width=6, height=5),
        Panel("Vision clients and Designers", "stat", (
            Target(f"sum by (kind) (gateway_kind:ignition_client_sessions:sum{{{GW}}})",
                   "{{kind}}"),),
            "Rows of system.util.getSessionInfo: Vision clients and Designers.",
            width=6, height=5),
        Panel("Perspective licence used", "gauge", (
            Target(f"gateway:ignition_perspective_licence_usage:ratio{{{GW}}}", "{{gateway}}"),),
            "Licensed sessions (designer scope excluded) against session_limit, per gateway "
            "that sets one.", unit="percentunit", width=6, height=5,
            options={"min": 0, "max": 1, "thresholds": [(None, "green"), (0.9, "orange"),
                                                        (1, "red")]}),
        Panel("Gateways up", "stat", (
            Target(f"sum(ignition_up{{{GW}}})", "up"),
            Target(f"count(ignition_up{{{GW}}})", "configured")),
            "Gateways whose last poll succeeded, out of those configured.",
            width=6, height=5),
    )),
    Row("Sessions", (
        Panel("Sessions by project", "timeseries", (
            Target(f"sum by (gateway, project) "
                   f"(gateway_project:ignition_perspective_sessions:sum{{{GW_PROJECT}}})",
                   "{{gateway}} / {{project}}"),),
            "Perspective sessions per project.", width=12),
        Panel("Sessions by scope", "timeseries", (
            Target(f"sum by (scope) (ignition_perspective_sessions{{{GW_PROJECT}}})",
                   "{{scope}}"),),
            "Perspective sessions per scope: browser, ios, android, designer.", width=12),
        Panel("Top users by session count", "table", (
            Target(f"topk(20, sum by (gateway, username) "
                   f"(ignition_perspective_sessions{{{GW_PROJECT}}}))", instant=True),),
            "The 20 users holding the most Perspective sessions right now.", width=8),
        Panel("Users holding more than one session", "table", (
            Target(f"sum by (gateway, username) "
                   f"(ignition_perspective_sessions{{{GW_PROJECT}}}) > 1", instant=True),),
            "Users with several concurrent sessions: shared accounts, forgotten tabs.",
            width=8),
        Panel("Idle sessions", "timeseries", (
            Target(f"sum by (gateway, project) "
                   f"(ignition_perspective_idle_sessions{{{GW_PROJECT}}})",
                   "{{gateway}} / {{project}}"),),
            "Sessions whose lastComm exceeds idle_after: zombies holding licence seats.",
            width=8),
        Panel("Licensed sessions against the limit", "timeseries", (
            Target(f"gateway:ignition_perspective_licensed_sessions:sum{{{GW}}}",
                   "{{gateway}} sessions"),
            Target(f"ignition_perspective_session_limit{{{GW}}}", "{{gateway}} limit")),
            "Perspective sessions that count against the licence, and session_limit.",
            width=24),
    )),
    Row("Traffic", (
        Panel("Bytes sent by project", "timeseries", (
            Target(f"sum by (gateway, project) (rate(ignition_perspective_sent_bytes_total"
                   f"{{{GW_PROJECT}}}[$__rate_interval]))", "{{gateway}} / {{project}}"),),
            "Bytes per second that Perspective sessions sent to the gateway.", unit="Bps"),
        Panel("Active pages by project", "timeseries", (
            Target(f"sum by (gateway, project) "
                   f"(ignition_perspective_active_pages{{{GW_PROJECT}}})",
                   "{{gateway}} / {{project}}"),),
            "Open Perspective pages, summed over sessions."),
        Panel("Vision clients and Designers over time", "timeseries", (
            Target(f"sum by (gateway, kind) (ignition_client_sessions{{{GW_PROJECT}}})",
                   "{{gateway}} / {{kind}}"),),
            "Vision clients and Designers per gateway."),
    )),
    Row("Exporter health", (
        Panel("Gateway up", "timeseries", (
            Target(f"ignition_up{{{GW}}}", "{{gateway}}"),),
            "1 when the last poll of the gateway succeeded.", width=6,
            options={"min": 0, "max": 1}),
        Panel("Poll duration", "timeseries", (
            Target(f"ignition_exporter_poll_duration_seconds{{{GW}}}", "{{gateway}}"),),
            "How long the last poll of each gateway took.", unit="s", width=6),
        Panel("Poll errors by reason", "timeseries", (
            Target(f"sum by (gateway, reason) (increase(ignition_exporter_poll_errors_total"
                   f"{{{GW}}}[$__rate_interval]))", "{{gateway}} {{reason}}"),),
            "Failed polls: timeout, connect, http, auth, decode, schema, too_large.",
            width=6),
        Panel("Data age", "timeseries", (
            Target(f"time() - ignition_exporter_last_success_timestamp_seconds{{{GW}}}",
                   "{{gateway}}"),),
            "Seconds since the last successful poll; session series vanish past stale_after.",
            unit="s", width=6),
    )),
)


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


VARIABLES = (
    {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
     "current": {}, "hide": 0},
    _variable("gateway", "Gateway", "label_values(ignition_up, gateway)"),
    _variable("project", "Project",
              'label_values(ignition_perspective_sessions{gateway=~"$gateway"}, project)'),
)


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    for key in ("min", "max"):
        if key in panel.options:
            defaults[key] = panel.options[key]
    steps = panel.options.get("thresholds", [(None, "green")])
    defaults["thresholds"] = {"mode": "absolute",
                              "steps": [{"value": v, "color": c} for v, c in steps]}
    return {"defaults": defaults, "overrides": []}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, target in enumerate(panel.targets):
        entry: dict[str, Any] = {"datasource": DATASOURCE, "expr": target.expr,
                                 "refId": chr(ord("A") + i), "legendFormat": target.legend}
        if target.instant:
            entry.update(instant=True, range=False, format="table")
        targets.append(entry)
    out: dict[str, Any] = {
        "id": panel_id, "type": panel.kind, "title": panel.title,
        "description": panel.description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": _field_config(panel), "targets": targets,
    }
    if panel.kind == "table":
        out["transformations"] = [{"id": "organize", "options": {
            "excludeByName": {"Time": True}, "renameByName": {"Value": "sessions"}}}]
    return out


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in ROWS:
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        next_id += 1
        y += 1
        x, row_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "uid": "ignition-sessions",
        "title": "Ignition sessions",
        "description": "Perspective sessions, Vision clients and Designers per gateway, "
                       "project, scope and user, from the Ignition exporter.",
        "tags": ["ignition", "scada", "sessions"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": list(VARIABLES)},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


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
