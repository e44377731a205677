"""Pure functions from a snapshot to the numbers the metrics expose.

Run once per poll, never per scrape. Aggregation first groups by the raw values (cheap tuple
keys), then turns the few distinct keys into label values, so the per-session loop stays tight.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

from exporter.digest.groups import OTHER, Groups, SnapshotGroups, one_copy
from exporter.model import PerspectiveSession, Snapshot

# Label values longer than this are cut: a megabyte-long "username" from a broken gateway must
# not become a megabyte in every scrape and in Prometheus' index.
LABEL_MAX_CHARS = 256

PerspectiveKey = tuple[str, str, str]  # project, scope, username
ScopeKey = tuple[str, str]  # project, scope
ClientKey = tuple[str, str, str]  # project, username, kind


@dataclass(frozen=True, slots=True)
class ScopeTotals:
    sessions: int = 0
    active_pages: float = 0.0
    idle_sessions: int = 0
    recent_sent_bytes: float = 0.0

    def __add__(self, other: ScopeTotals) -> ScopeTotals:
        return ScopeTotals(self.sessions + other.sessions,
                           self.active_pages + other.active_pages,
                           self.idle_sessions + other.idle_sessions,
                           self.recent_sent_bytes + other.recent_sent_bytes)


@dataclass(frozen=True, slots=True)
class Aggregates:
    perspective_sessions: Mapping[PerspectiveKey, int]
    scopes: Mapping[ScopeKey, ScopeTotals]
    client_sessions: Mapping[ClientKey, int]
    # Series folded into username="__other__" by this poll, per metric name.
    folded: Mapping[str, int] = field(default_factory=dict)
    # Series this poll had before folding, per capped metric: the gateway's demand on the
    # series budget.
    demand: Mapping[str, int] = field(default_factory=dict)
    # Distinct values of the project and scope labels this poll folded into "__other__"
    # (groups.SnapshotGroups.capped).
    folded_values: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_perspective_sessions(self) -> int:
        return sum(self.perspective_sessions.values())

    @property
    def total_client_sessions(self) -> int:
        return sum(self.client_sessions.values())


EMPTY = Aggregates({}, {}, {})


def label(value: object) -> str:
    """A label value from a gateway field: absent becomes empty, over-long is cut."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= LABEL_MAX_CHARS else text[:LABEL_MAX_CHARS]


def scope_label(value: str | None) -> str:
    """Ignition versions disagree on capitalisation (`browser`, `Browser`): one label value."""
    return label(value).lower()


def scope_key(raw: tuple[str | None, str | None]) -> ScopeKey:
    """Label values for a raw (project, sessionScope) pair."""
    return label(raw[0]), scope_label(raw[1])


V = TypeVar("V")
Labeler = Callable[[Any], str]


def _keep(username: str) -> str:
    return username


def _relabel(grouped: Mapping[tuple[Any, ...], V], labelers: Sequence[Labeler],
             add: Callable[[V, V], V]) -> dict[Any, V]:
    """Raw keys to label keys, merging the values of keys whose labels collide (after a cut,
    say). Each position's label is computed once per distinct raw value: thousands of keys
    share a few hundred users and a handful of projects. Labels are made one object with
    equal ones (`groups.one_copy`): they outlive the poll, and equal ones across gateways
    share it."""
    if not grouped:
        return {}
    columns = list(zip(*grouped, strict=True))
    labelled = [map({raw: one_copy(to_label(raw)) for raw in set(column)}.__getitem__, column)
                for column, to_label in zip(columns, labelers, strict=True)]
    keys = list(zip(*labelled, strict=True))
    out = dict(zip(keys, grouped.values(), strict=True))
    if len(out) == len(keys):
        return out  # no two keys' labels collide: the usual case
    out = {}
    for key, value in zip(keys, grouped.values(), strict=True):
        out[key] = add(out[key], value) if key in out else value
    return out


def _username_label(username: Callable[[str], str]) -> Labeler:
    return lambda raw: username(label(raw))


def count_perspective(groups: Groups, username: Callable[[str], str] = _keep
                      ) -> dict[PerspectiveKey, int]:
    return _relabel(groups.counts(), (label, scope_label, _username_label(username)),
                    operator.add)


def total_by_scope(sessions: Sequence[PerspectiveSession], scopes: Groups,
                   idle_after_ms: float) -> dict[ScopeKey, ScopeTotals]:
    """Sums per raw (project, scope) in one pass over the sessions, then per label set.
    `scopes` are the sessions grouped by (project, sessionScope) (`SnapshotGroups.scopes`)."""
    pages, idle, recent = _scope_columns(sessions, scopes, idle_after_ms)
    totals = {key: ScopeTotals(count, pages[code], idle[code], recent[code])
              for code, (key, count) in enumerate(zip(scopes.keys, scopes.sizes(), strict=True))}
    return _relabel(totals, (label, scope_label), ScopeTotals.__add__)


def _scope_columns(sessions: Sequence[PerspectiveSession], groups: Groups,
                   idle_after_ms: float) -> tuple[list[float], list[int], list[float]]:
    """Per group code: active pages, idle sessions, recent bytes."""
    size = len(groups.keys)
    pages, idle, recent = [0.0] * size, [0] * size, [0.0] * size
    for code, page_count, last_comm, recent_bytes in zip(
            groups.codes, map(_ACTIVE_PAGES, sessions), map(_LAST_COMM, sessions),
            map(_RECENT_BYTES, sessions), strict=True):
        if page_count:
            pages[code] += page_count
        if last_comm is not None and last_comm > idle_after_ms:
            idle[code] += 1
        if recent_bytes:
            recent[code] += recent_bytes
    return pages, idle, recent


_ACTIVE_PAGES = attrgetter("active_pages")
_LAST_COMM = attrgetter("last_comm")
_RECENT_BYTES = attrgetter("recent_bytes_sent")


def _kind(is_designer: bool | None) -> str:
    return "designer" if is_designer else "vision"


def count_clients(groups: Groups, username: Callable[[str], str] = _keep
                  ) -> dict[ClientKey, int]:
    return _relabel(groups.counts(), (label, _username_label(username), _kind), operator.add)


_LABELS = operator.itemgetter(0)
_COUNT = operator.itemgetter(1)


def fold(counts: Mapping[tuple[str, str, str], int], limit: int, user_at: int
         ) -> tuple[dict[tuple[str, str, str], int], int]:
    """Keep at most `limit` series; fold the rest into username `__other__`.

    The series kept are the largest, ties broken by their labels, so the choice is the same
    on every poll for the same data. The rest are summed per their other labels (one
    `__other__` series per project and scope, or project and kind). Returns the counts and
    how many series were folded.
    """
    if len(counts) <= limit:
        return dict(counts), 0
    # Largest first, ties by labels: two sorts with C-level keys (the second is stable, and
    # a reversed sort keeps equal items in order), several times faster than one with a
    # Python key when thousands of series are ranked on every poll.
    ranked = sorted(counts.items(), key=_LABELS)
    ranked.sort(key=_COUNT, reverse=True)
    kept = dict(ranked[:limit])
    for key, value in ranked[limit:]:
        other = (*key[:user_at], OTHER, *key[user_at + 1:])
        kept[other] = kept.get(other, 0) + value  # type: ignore[index]
    return kept, len(ranked) - limit


PERSPECTIVE_SESSIONS = "ignition_perspective_sessions"
CLIENT_SESSIONS = "ignition_client_sessions"
CAPPED = (PERSPECTIVE_SESSIONS, CLIENT_SESSIONS)  # the metrics with a username label


def aggregate(snapshot: Snapshot, idle_after_seconds: float,
              username: Callable[[str], str] = _keep,
              max_series: int | Mapping[str, int] | None = None,
              groups: SnapshotGroups | None = None) -> Aggregates:
    """`username` maps each username label value (the privacy policy: keep, hash, drop);
    `max_series` caps the series of each metric with a username label (one cap for both, or
    one per metric name); `groups` are the snapshot's, when the caller has them already."""
    groups = groups or SnapshotGroups.of(snapshot)
    sessions = count_perspective(groups.perspective, username)
    clients = count_clients(groups.clients, username)
    demand = {PERSPECTIVE_SESSIONS: len(sessions), CLIENT_SESSIONS: len(clients)}
    folded: dict[str, int] = {}
    if max_series is not None:
        caps = dict.fromkeys(CAPPED, max_series) if isinstance(max_series, int) else max_series
        sessions, folded[PERSPECTIVE_SESSIONS] = fold(sessions, caps[PERSPECTIVE_SESSIONS], 2)
        clients, folded[CLIENT_SESSIONS] = fold(clients, caps[CLIENT_SESSIONS], 1)
    return Aggregates(
        perspective_sessions=sessions,
        scopes=total_by_scope(snapshot.perspective, groups.scopes,
                              float(idle_after_seconds * 1000)),
        client_sessions=clients,
        folded=folded,
        demand=demand,
    )
