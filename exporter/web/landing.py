"""The landing page at `/`: what this exporter is, how each gateway is doing, where to go next."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, unquote_plus, urlencode

from exporter.polling.poller import GatewayStatus


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(seconds: float) -> str:
    """A duration as people read it on a status page: "42 s", "5 min", "3 h 10 min", "2 d"."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min ago"
    return f"{hours // 24} d ago"


def _last_answer(status: GatewayStatus, now: float) -> str:
    if status.last_success is None:
        return "never"
    when = escape(_when(status.last_success))
    return f'<span title="{when}">{escape(ago(now - status.last_success))}</span>'


def _prefix_pattern(value: str) -> str:
    """A pattern that matches `value` and its neighbours: its first word, then `.*`. RE2 and
    `re` both accept `re.escape`'s output."""
    word = re.match(r"[^\W_]+", value)
    return re.escape(word.group(0) if word else value[:2]) + ".*"


def _examples(statuses: Sequence[GatewayStatus], now: float) -> list[str]:
    """Example `/sessions` queries made from the data held, so each of them returns sessions
    (fixed examples would return nothing on most sites): the most common username and
    project of the fresh gateway holding most Perspective sessions, which its digest found
    (a request costs a look per gateway, not per session)."""
    fresh = [status for status in statuses if status.is_fresh(now)]
    largest = max((s.perspective for s in fresh), key=len, default=None)
    user, project = largest.common if largest is not None else (None, None)
    examples = []
    if user:
        examples.append(urlencode({"username": re.escape(user[:2]) + ".*"}))
    if any(len(status.clients) for status in fresh):
        examples.append("kind=vision")
    if project:
        examples.append(urlencode({"project": _prefix_pattern(project), "kind": "perspective"}))
    return examples


def _session_links(statuses: Sequence[GatewayStatus], now: float) -> str:
    links = [f'<a href="/sessions?{escape(query)}">/sessions?{escape(unquote_plus(query))}</a>'
             for query in _examples(statuses, now)]
    filtered = f"; filtered: {', '.join(links)}" if links else ""
    return f'<li><a href="/sessions">/sessions</a>: every held session as JSON{filtered}</li>'


def _state(status: GatewayStatus) -> str:
    return "up" if status.up else ("not polled yet" if status.polls == 0 else "down")


def _failing_first(status: GatewayStatus) -> int:
    return {"down": 0, "not polled yet": 1}.get(_state(status), 2)


def _row(status: GatewayStatus, now: float, sessions_endpoint: bool) -> str:
    aggregates = status.aggregates if status.is_fresh(now) else None
    error = f"{status.error.reason}: {status.error.detail}" if status.error else ""
    name = status.gateway.name
    link = f'<a href="/sessions?gateway={quote(name)}">{escape(name)}</a>'
    cells = [
        link if sessions_endpoint else escape(name),
        escape(_state(status)),
        _last_answer(status, now),
        str(aggregates.total_perspective_sessions) if aggregates else "-",
        str(aggregates.total_client_sessions) if aggregates else "-",
        escape(error),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_landing(statuses: Sequence[GatewayStatus], now: float, version: str,
                   sessions_endpoint: bool = True) -> str:
    """Failing gateways first: they are why someone opens this page."""
    rows = "\n".join(_row(s, now, sessions_endpoint)
                     for s in sorted(statuses, key=_failing_first))
    session_links = _session_links(statuses, now) if sessions_endpoint else ""
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
<table><tr><th>gateway</th><th>state</th><th>last good answer</th><th>Perspective sessions</th>
<th>Vision clients and Designers</th><th>last error</th></tr>
{rows}
</table></body></html>
"""
