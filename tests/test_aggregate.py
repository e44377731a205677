from __future__ import annotations

import secrets
import sys

from exporter.digest.aggregate import LABEL_MAX_CHARS, ScopeTotals, aggregate, label
from tests.payloads import document, perspective, snapshot_of, vision


def test_counts_per_project_scope_and_user() -> None:
    snap = snapshot_of(document([
        perspective("1", "jsmith", "Line1", "browser", active_pages=2, recent=100),
        perspective("2", "jsmith", "Line1", "Browser", active_pages=1, recent=50,
                    last_comm=120_000),
        perspective("3", "Unauthenticated", "Line1", "ios", active_pages=1),
        perspective("4", "eng", "Line2", "designer"),
    ], [
        vision("operator1", "Line1"), vision("operator1", "Line1", client_id="2"),
        vision("eng", "Line2", designer=True, client_id="3"),
    ]))
    result = aggregate(snap, idle_after_seconds=60)
    assert result.perspective_sessions == {
        ("Line1", "browser", "jsmith"): 2,
        ("Line1", "ios", "Unauthenticated"): 1,
        ("Line2", "designer", "eng"): 1,
    }
    assert result.scopes[("Line1", "browser")] == ScopeTotals(
        sessions=2, active_pages=3, idle_sessions=1, recent_sent_bytes=150)
    assert result.scopes[("Line1", "ios")].idle_sessions == 0
    assert result.client_sessions == {
        ("Line1", "operator1", "vision"): 2,
        ("Line2", "eng", "designer"): 1,
    }
    assert result.total_perspective_sessions == 4
    assert result.total_client_sessions == 3


def test_missing_and_null_fields_are_tolerated_per_field() -> None:
    old = {"id": "x", "username": "u", "project": "P", "sessionScope": "browser"}
    nulls = perspective("y", "u", "P", "browser", active_pages=None, recent=None,
                        last_comm=None, total=None)
    snap = snapshot_of(document([old, nulls, {"id": "z"}]))
    assert snap.invalid_sessions == 0
    result = aggregate(snap, 60)
    assert result.perspective_sessions == {("P", "browser", "u"): 2, ("", "", ""): 1}
    assert result.scopes[("P", "browser")] == ScopeTotals(2, 0, 0, 0)


def test_over_long_label_values_are_cut_and_merged() -> None:
    long_a, long_b = "a" * 5000 + "1", "a" * 5000 + "2"
    snap = snapshot_of(document([perspective("1", long_a), perspective("2", long_b)]))
    result = aggregate(snap, 60)
    assert result.perspective_sessions == {("Line1", "browser", "a" * LABEL_MAX_CHARS): 2}


def test_label() -> None:
    assert label(None) == ""
    assert label(42) == "42"
    assert label("x" * 300) == "x" * LABEL_MAX_CHARS


def test_fold_keeps_the_largest_series_and_folds_the_rest() -> None:
    from exporter.digest.aggregate import fold
    counts = {("P", "browser", "a"): 5, ("P", "browser", "b"): 1, ("P", "ios", "c"): 1,
              ("Q", "browser", "d"): 3, ("P", "browser", "e"): 1}
    kept, folded = fold(counts, limit=2, user_at=2)
    assert folded == 3
    assert kept == {("P", "browser", "a"): 5, ("Q", "browser", "d"): 3,
                    ("P", "browser", "__other__"): 2, ("P", "ios", "__other__"): 1}
    assert sum(kept.values()) == sum(counts.values())
    assert fold(dict(reversed(list(counts.items()))), limit=2, user_at=2) == (kept, 3)
    assert fold(counts, limit=5, user_at=2) == (counts, 0)


def test_aggregate_applies_the_cap_to_both_username_metrics() -> None:
    snap = snapshot_of(document(
        [perspective(str(i), f"user{i}") for i in range(30)],
        [vision(f"op{i}", client_id=str(i)) for i in range(12)]))
    result = aggregate(snap, 60, max_series=10)
    assert len(result.perspective_sessions) == 11  # ten kept, one __other__
    assert result.perspective_sessions[("Line1", "browser", "__other__")] == 20
    assert result.folded == {"ignition_perspective_sessions": 20, "ignition_client_sessions": 2}
    assert sum(result.client_sessions.values()) == 12


def test_label_values_are_not_interned() -> None:
    """Interned strings are immortal on Python 3.12.0 to 3.12.5 and on free-threaded builds:
    a gateway inventing a project and a username every poll would grow the exporter for
    ever."""
    project, user = f"p-{secrets.token_hex(8)}", f"u-{secrets.token_hex(8)}"
    result = aggregate(snapshot_of(document([perspective(project=project, username=user)])),
                       300)
    (label_project, _, label_user), = result.perspective_sessions
    assert sys.intern("".join([project[:1], project[1:]])) is not label_project
    assert sys.intern("".join([user[:1], user[1:]])) is not label_user
