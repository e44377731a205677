"""A whole poll's digest: every label made from the same capped groups, /sessions untouched."""

from __future__ import annotations

import json

from exporter.digest.aggregate import aggregate
from exporter.digest.lifecycle import NOTHING_YET
from exporter.digest.poll import DigestSettings, digest
from exporter.digest.sent_bytes import SentBytes
from exporter.model import Snapshot
from tests.payloads import document, perspective, snapshot_of, vision

NOW = 1_795_000_000.0


def settings(max_projects: int = 500) -> DigestSettings:
    return DigestSettings(idle_after=60, stale_after=300, username=str, max_projects=max_projects)


def invented(count: int) -> Snapshot:
    """A gateway putting every session in a project and a scope of its own; the busier
    projects first (session i of project `busy-j` for j < 3 holds 3 - j sessions more)."""
    sessions = [perspective(f"s{i}", f"user{i}", f"invented-{i}", f"scope-{i}")
                for i in range(count)]
    sessions += [perspective(f"b{j}-{k}", "b", f"busy-{j}", "browser")
                 for j in range(3) for k in range(4 - j)]
    return snapshot_of(document(sessions, [vision("op", f"own-{i}", client_id=str(i))
                                           for i in range(count)]))


def test_a_gateway_inventing_projects_makes_a_bounded_number_of_label_sets() -> None:
    snap = invented(200)
    result = digest(snap, NOTHING_YET, SentBytes(), settings(max_projects=10), NOW)
    aggregates = result.aggregates
    projects = {key[0] for key in aggregates.perspective_sessions}
    assert {"busy-0", "busy-1", "busy-2", "__other__"} <= projects and len(projects) == 11
    assert len({key[1] for key in aggregates.scopes}) <= 16 + 1
    assert aggregates.total_perspective_sessions == len(snap.perspective)
    assert len({key[0] for key in aggregates.client_sessions}) == 11
    assert aggregates.folded_values == {"project": 203 - 10, "scope": 201 - 16}
    assert len(result.sent_bytes.totals) == len(aggregates.scopes) <= 11 * 17
    assert sum(result.sent_bytes.totals.values()) == 50_000 * len(snap.perspective)
    assert result.lifecycle.perspective.ages.keys() == aggregates.scopes.keys()


def test_sessions_keep_the_projects_the_gateway_sent() -> None:
    result = digest(invented(50), NOTHING_YET, SentBytes(), settings(max_projects=2), NOW)
    chosen = result.perspective.select(lambda _, project: project == "invented-7")
    assert [json.loads(bytes(raw))["id"] for raw in chosen] == ["s7"]


def test_the_same_answer_folds_the_same_way_every_poll() -> None:
    snap = invented(100)
    first = digest(snap, NOTHING_YET, SentBytes(), settings(max_projects=20), NOW)
    second = digest(snap, first.lifecycle, first.sent_bytes, settings(max_projects=20), NOW + 5)
    assert second.aggregates.perspective_sessions == first.aggregates.perspective_sessions
    assert second.sent_bytes.totals == first.sent_bytes.totals  # nothing grew
    assert all(counts.started == counts.ended == 0
               for counts in second.lifecycle.perspective.shown.values())


def test_a_real_gateway_is_not_touched_by_the_cap() -> None:
    snap = snapshot_of(document([perspective(str(i), f"u{i % 3}", f"Line{i % 2}")
                                 for i in range(10)], [vision()]))
    result = digest(snap, NOTHING_YET, SentBytes(), settings(), NOW)
    assert result.aggregates.folded_values == {"project": 0, "scope": 0}
    assert result.aggregates.perspective_sessions == aggregate(snap, 60).perspective_sessions
    assert result.about.perspective == () and result.about.version == "8.1.33"


def renamed(poll: int, count: int) -> Snapshot:
    """The same sessions and clients, in projects and scopes renamed on every poll."""
    return snapshot_of(document(
        [perspective(f"s{i}", "u", f"p{poll}-{i}", f"scope{poll}-{i}") for i in range(count)],
        [vision("op", f"c{poll}-{i}", client_id=str(i)) for i in range(count)]))


def test_a_gateway_renaming_its_projects_every_poll_stays_within_the_cap() -> None:
    """Each poll was folded on its own, so the lifecycle families, which show every label
    set seen within stale_after, showed the cap's worth of new projects for every poll in
    that time: 2,000 with the defaults (a 4 MB /metrics from one gateway of 2,000 sessions).
    Values shown within stale_after now count against the cap; new ones take what is left."""
    state = digest(renamed(0, 30), NOTHING_YET, SentBytes(), settings(max_projects=10), NOW)
    for poll in range(1, 8):
        state = digest(renamed(poll, 30), state.lifecycle, state.sent_bytes,
                       settings(max_projects=10), NOW + 15 * poll)
        for shown in (state.lifecycle.perspective.shown, state.lifecycle.clients.shown):
            assert len({project for project, _ in shown}) <= 10 + 1, poll
        assert len({scope for _, scope in state.lifecycle.perspective.shown}) <= 16 + 1
        assert state.aggregates.total_perspective_sessions == 30
        assert state.aggregates.total_client_sessions == 30
