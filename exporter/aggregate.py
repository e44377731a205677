"""Pure functions from a snapshot to the numbers the metrics expose.

Run once per poll, never per scrape. Aggregation first groups by the raw values (cheap tuple
keys), then turns the few distinct keys into label values, so the per-session loop stays tight.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from exporter.model import ClientSession, PerspectiveSession, Snapshot

OTHER = "__other__"
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
    share a few hundred users and a handful of projects."""
    maps = [{raw: to_label(raw) for raw in {key[i] for key in grouped}}
            for i, to_label in enumerate(labelers)]
    out: dict[Any, V] = {}
    for key, value in grouped.items():
        new = tuple(m[raw] for m, raw in zip(maps, key, strict=True))
        out[new] = add(out[new], value) if new in out else value
    return out


def _username_label(username: Callable[[str], str]) -> Labeler:
    return lambda raw: username(label(raw))


def count_perspective(sessions: Iterable[PerspectiveSession],
                      username: Callable[[str], str] = _keep) -> dict[PerspectiveKey, int]:
    grouped = Counter((s.project, s.session_scope, s.username) for s in sessions)
    return _relabel(grouped, (label, scope_label, _username_label(username)),
                    operator.add)


def total_by_scope(sessions: Iterable[PerspectiveSession],
                   idle_after_ms: float) -> dict[ScopeKey, ScopeTotals]:
    grouped: dict[tuple[str | None, str | None], list[float]] = {}
    for s in sessions:
        acc = grouped.get((s.project, s.session_scope))
        if acc is None:
            acc = grouped[(s.project, s.session_scope)] = [0, 0.0, 0, 0.0]
        acc[0] += 1
        acc[1] += s.active_pages or 0
        if (s.last_comm or 0) > idle_after_ms:
            acc[2] += 1
        acc[3] += s.recent_bytes_sent or 0
    totals = {key: ScopeTotals(int(a[0]), a[1], int(a[2]), a[3]) for key, a in grouped.items()}
    return _relabel(totals, (label, scope_label), ScopeTotals.__add__)


def count_clients(clients: Iterable[ClientSession],
                  username: Callable[[str], str] = _keep) -> dict[ClientKey, int]:
    grouped = Counter((c.project, c.username, c.kind) for c in clients)
    return _relabel(grouped, (label, _username_label(username), str),
                    operator.add)


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
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:limit])
    for key, value in ranked[limit:]:
        other = (*key[:user_at], OTHER, *key[user_at + 1:])
        kept[other] = kept.get(other, 0) + value  # type: ignore[index]
    return kept, len(ranked) - limit


def aggregate(snapshot: Snapshot, idle_after_seconds: float,
              username: Callable[[str], str] = _keep,
              max_series: int | None = None) -> Aggregates:
    """`username` maps each username label value (the privacy policy: keep, hash, drop);
    `max_series` caps the series of each metric with a username label."""
    sessions = count_perspective(snapshot.perspective, username)
    clients = count_clients(snapshot.clients, username)
    folded: dict[str, int] = {}
    if max_series is not None:
        sessions, folded["ignition_perspective_sessions"] = fold(sessions, max_series, 2)
        clients, folded["ignition_client_sessions"] = fold(clients, max_series, 1)
    return Aggregates(
        perspective_sessions=sessions,
        scopes=total_by_scope(snapshot.perspective, idle_after_seconds * 1000),
        client_sessions=clients,
        folded=folded,
    )
