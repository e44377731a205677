"""Pure functions from a snapshot to the numbers the metrics expose.

Run once per poll, never per scrape. Aggregation first groups by the raw values (cheap tuple
keys), then turns the few distinct keys into label values, so the per-session loop stays tight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from exporter.model import ClientSession, PerspectiveSession, Snapshot

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


K = TypeVar("K", bound=Hashable)
L = TypeVar("L", bound=Hashable)
V = TypeVar("V")


def _relabel(
    grouped: Mapping[K, V], to_label: Callable[[K], L], add: Callable[[V, V], V]
) -> dict[L, V]:
    """Map raw keys to label keys, merging values whose labels collide (e.g. after a cut)."""
    out: dict[L, V] = {}
    for key, value in grouped.items():
        new = to_label(key)
        out[new] = add(out[new], value) if new in out else value
    return out


def _add_int(a: int, b: int) -> int:
    return a + b


def _keep(username: str) -> str:
    return username


def count_perspective(sessions: Iterable[PerspectiveSession],
                      username: Callable[[str], str] = _keep) -> dict[PerspectiveKey, int]:
    grouped = Counter((s.project, s.session_scope, s.username) for s in sessions)
    return _relabel(grouped, lambda k: (label(k[0]), scope_label(k[1]), username(label(k[2]))),
                    _add_int)


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
    return _relabel(totals, scope_key, ScopeTotals.__add__)


def count_clients(clients: Iterable[ClientSession],
                  username: Callable[[str], str] = _keep) -> dict[ClientKey, int]:
    grouped = Counter((c.project, c.username, c.kind) for c in clients)
    return _relabel(grouped, lambda k: (label(k[0]), username(label(k[1])), k[2]), _add_int)


def aggregate(snapshot: Snapshot, idle_after_seconds: float,
              username: Callable[[str], str] = _keep) -> Aggregates:
    """`username` maps each username label value (the privacy policy: keep, hash, drop)."""
    return Aggregates(
        perspective_sessions=count_perspective(snapshot.perspective, username),
        scopes=total_by_scope(snapshot.perspective, idle_after_seconds * 1000),
        client_sessions=count_clients(snapshot.clients, username),
    )
