"""The landing page at `/`: what this exporter is, how each gateway is doing, where to go next."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from exporter.poller import GatewayStatus


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


SESSION_LINKS = """<li><a href="/sessions">/sessions</a>: every held session as JSON;
 filtered: <a href="/sessions?username=bi.*">/sessions?username=bi.*</a>,
 <a href="/sessions?kind=vision">/sessions?kind=vision</a>,
 <a href="/sessions?project=Packaging.*&amp;kind=perspective">
 /sessions?project=Packaging.*&amp;kind=perspective</a></li>"""


def _row(status: GatewayStatus, now: float, sessions_endpoint: bool) -> str:
    aggregates = status.aggregates if status.is_fresh(now) else None
    state = "up" if status.up else ("not polled yet" if status.polls == 0 else "down")
    error = f"{status.error.reason}: {status.error.detail}" if status.error else ""
    name = status.gateway.name
    link = f'<a href="/sessions?gateway={quote(name)}">{escape(name)}</a>'
    cells = [
        link if sessions_endpoint else escape(name),
        escape(state),
        escape(_when(status.last_success)),
        str(aggregates.total_perspective_sessions) if aggregates else "-",
        str(aggregates.total_client_sessions) if aggregates else "-",
        escape(error),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_landing(statuses: Sequence[GatewayStatus], now: float, version: str,
                   sessions_endpoint: bool = True) -> str:
    rows = "\n".join(_row(s, now, sessions_endpoint) for s in statuses)
    session_links = SESSION_LINKS if sessions_endpoint else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Ignition exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}</style>
</head><body>
<h1>Ignition exporter</h1>
<p>Prometheus exporter for Ignition gateway sessions, version {escape(version)}.</p>
<ul>
<li><a href="/metrics">/metrics</a>: session metrics for Prometheus</li>
{session_links}
<li><a href="/healthz">/healthz</a>: the exporter's own health</li>
</ul>
<h2>Gateways</h2>
<table><tr><th>gateway</th><th>state</th><th>last success</th><th>Perspective sessions</th>
<th>Vision clients and Designers</th><th>last error</th></tr>
{rows}
</table></body></html>
"""
