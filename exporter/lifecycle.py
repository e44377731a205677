"""Sessions starting and ending, counted by comparing one successful poll with the next.

A gateway only ever reports the sessions open at the instant it is asked. Comparing two
successive lists by session id says which sessions are new (started), which are gone (ended)
and how long the gone ones had lasted (their last observed age). Everything here is pure: a
`Lifecycle` is one gateway's state as of its last successful poll, and `Lifecycle.after`
returns the next one; the poller keeps it in its status, the collector reads it.

Rules (the README states them for users):
- The first successful poll counts nothing as started: those sessions were already there.
- A failed poll changes nothing; the next success is compared with the last one held.
- A session without an id is not counted; a repeated id counts once (its first occurrence).
- A session that moves to another project or scope keeps its id: it is counted where it ends.
- A label set is shown at 0 on the poll before it first counts, so `increase()` sees the
  first login; counts that land in a label set the exposition did not show are held back one
  poll for that reason. A label set with no session for `stale_after` is no longer shown, but
  its totals are kept: counters never go down while the process runs.

What is held between polls is compact, because it is paid per session: a 64-bit hash of each
id (Python's `hash`, keyed per process), a reference to its label set (shared), and its age.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.aggregate import label, scope_key
from exporter.model import ClientSession, PerspectiveSession, Snapshot

# Seconds: a quick look, five minutes, a quarter hour, an hour, half a shift, a shift, twelve
# hours, a day, three days, a week (a wall screen that never closes), and beyond.
BUCKETS: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 14400.0, 28800.0, 43200.0,
                              86400.0, 259200.0, 604800.0)
UNKNOWN = -1.0  # the age of a session whose gateway did not say when it started
# An age above this (about 30 years) is a broken value, not a session.
_MAX_AGE_SECONDS = 1e9

LabelSet = tuple[str, str]  # (project, scope) for Perspective, (project, kind) for clients


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts (one per bound in BUCKETS, then +Inf = the count) and sum."""

    buckets: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    total: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Histogram:
        ordered = sorted(values)
        return cls((*(bisect_right(ordered, bound) for bound in BUCKETS), len(ordered)),
                   sum(ordered))

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
                         self.total + other.total)

    @property
    def count(self) -> int:
        return self.buckets[-1]


NO_VALUES = Histogram()


@dataclass(frozen=True, slots=True)
class Counts:
    """Sessions started and ended in one label set, and the durations of the ended ones."""

    started: int = 0
    ended: int = 0
    durations: Histogram = NO_VALUES

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.started + other.started, self.ended + other.ended,
                      self.durations + other.durations)


ZERO = Counts()


@dataclass(frozen=True, slots=True)
class Held:
    """The sessions of one successful poll, as compactly as comparing them needs.

    Position i is one session: `ids[i]` the hash of its id, `labels[i]` its label set,
    `ages[i]` seconds since it started as of that poll (UNKNOWN if not known). Ids are unique.
    """

    ids: array = field(default_factory=lambda: array("q"))
    labels: tuple[LabelSet, ...] = ()
    ages: array = field(default_factory=lambda: array("d"))

    @classmethod
    def of(cls, ids: Sequence[str | int | None], labels: Sequence[LabelSet],
           ages: Sequence[float]) -> Held:
        """Sessions without an id are dropped; of a repeated id only the first is kept."""
        keys = [hash(i) for i in ids]
        # Position of each id's first occurrence (later ones overwrite earlier in a dict, so
        # the list is walked backwards).
        first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
        if len(first) == len(keys) and None not in ids:
            return cls(array("q", keys), tuple(labels), array("d", ages))
        kept = sorted(i for i in first.values() if ids[i] is not None)
        return cls(array("q", (keys[i] for i in kept)), tuple(labels[i] for i in kept),
                   array("d", (ages[i] for i in kept)))

    def __len__(self) -> int:
        return len(self.ids)


def _age(value: float | None, scale: float = 1.0) -> float:
    """`value` (in units of `scale` seconds) as an age in seconds, or UNKNOWN if unusable."""
    if value is None:
        return UNKNOWN
    seconds = value * scale
    return seconds if 0 <= seconds < _MAX_AGE_SECONDS else UNKNOWN


def perspective_held(sessions: Sequence[PerspectiveSession]) -> Held:
    """Perspective sessions by `id`, labelled (project, scope); `uptime` is in ms."""
    raws = [(s.project, s.session_scope) for s in sessions]
    keys = {raw: scope_key(raw) for raw in set(raws)}
    return Held.of([s.id for s in sessions], [keys[raw] for raw in raws],
                   [_age(s.uptime, 0.001) for s in sessions])


def client_held(clients: Sequence[ClientSession], at: float) -> Held:
    """Vision clients and Designers by client id, labelled (project, kind); their age is
    `at` (the poll's time, epoch seconds) minus `creationTime` (epoch ms)."""
    raws = [(c.project, c.kind) for c in clients]
    keys = {raw: (label(raw[0]), raw[1]) for raw in set(raws)}
    return Held.of([c.client_id for c in clients], [keys[raw] for raw in raws],
                   [UNKNOWN if c.creation_time is None else _age(at - c.creation_time / 1000)
                    for c in clients])


class _Tally:
    """Mutable per-label-set counts while one comparison runs."""

    def __init__(self) -> None:
        self.started: dict[LabelSet, int] = {}
        self.ended: dict[LabelSet, int] = {}
        self.durations: dict[LabelSet, list[float]] = {}

    def start(self, labels: LabelSet) -> None:
        self.started[labels] = self.started.get(labels, 0) + 1

    def end(self, labels: LabelSet, age: float) -> None:
        self.ended[labels] = self.ended.get(labels, 0) + 1
        observed = self.durations.setdefault(labels, [])
        if age >= 0:  # an unknown age ends the session but is not observed
            observed.append(age)

    def counts(self) -> dict[LabelSet, Counts]:
        return {labels: Counts(self.started.get(labels, 0), self.ended.get(labels, 0),
                               Histogram.of(self.durations.get(labels, ())))
                for labels in self.started.keys() | self.ended.keys()}


def compare(previous: Held | None, current: Held) -> dict[LabelSet, Counts]:
    """What changed between two successful polls, per label set.

    Started: ids in `current` and not in `previous`, counted in their current label set.
    Ended: ids in `previous` and not in `current`, counted in the label set they had there,
    with their age there as the duration. Without a previous poll nothing is counted.
    """
    if previous is None or previous.ids == current.ids:
        return {}
    before = dict(zip(previous.ids, range(len(previous)), strict=True))
    now = dict(zip(current.ids, range(len(current)), strict=True))
    tally = _Tally()
    for key in now.keys() - before.keys():
        tally.start(current.labels[now[key]])
    for key in before.keys() - now.keys():
        position = before[key]
        tally.end(previous.labels[position], previous.ages[position])
    return tally.counts()


def _merge(*changes: Mapping[LabelSet, Counts]) -> dict[LabelSet, Counts]:
    merged: dict[LabelSet, Counts] = {}
    for change in changes:
        for labels, counts in change.items():
            merged[labels] = merged.get(labels, ZERO) + counts
    return merged


def ages_of(held: Held) -> dict[LabelSet, Histogram]:
    """The age distribution of the held sessions per label set (known ages only)."""
    grouped: dict[LabelSet, list[float]] = {labels: [] for labels in set(held.labels)}
    for labels, age in zip(held.labels, held.ages, strict=True):
        if age >= 0:
            grouped[labels].append(age)
    return {labels: Histogram.of(ages) for labels, ages in grouped.items()}


_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Mapping[Any, Any]:
    return _EMPTY


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One list of one gateway (Perspective, or clients) as of its last successful poll.

    `shown` is what the metrics show: every label set that held a session (or counted one)
    within `stale_after`, with its totals; `ages` the current sessions' ages per label set.
    """

    held: Held | None = None
    at: float | None = None  # time of the poll `held` is from
    totals: Mapping[LabelSet, Counts] = field(default_factory=_empty)
    pending: Mapping[LabelSet, Counts] = field(default_factory=_empty)
    last_seen: Mapping[LabelSet, float] = field(default_factory=_empty)
    shown: Mapping[LabelSet, Counts] = field(default_factory=_empty)
    ages: Mapping[LabelSet, Histogram] = field(default_factory=_empty)
    change: Mapping[LabelSet, Counts] = field(default_factory=_empty)

    def after(self, current: Held, now: float, stale_after: float) -> Lifecycle:
        """The state after a successful poll at `now` that saw `current`."""
        change = compare(self.held, current)
        visible = (self.shown.keys() if self.at is not None and now - self.at <= stale_after
                   else frozenset())
        totals = dict(self.totals)
        pending: dict[LabelSet, Counts] = {}
        for labels, counts in _merge(self.pending, change).items():
            if labels in visible:
                totals[labels] = totals.get(labels, ZERO) + counts
            else:  # shown at its old total (0 if new) now, counted from the next poll
                pending[labels] = counts
        last_seen = dict(self.last_seen)
        for labels in set(current.labels).union(change):
            last_seen[labels] = now
        shown = {labels: totals.get(labels, ZERO) for labels, seen in last_seen.items()
                 if now - seen <= stale_after}
        return Lifecycle(current, now, MappingProxyType(totals), MappingProxyType(pending),
                         MappingProxyType(last_seen), MappingProxyType(shown),
                         MappingProxyType(ages_of(current)), MappingProxyType(change))


@dataclass(frozen=True, slots=True)
class GatewayLifecycle:
    """Both lists of one gateway."""

    perspective: Lifecycle = Lifecycle()
    clients: Lifecycle = Lifecycle()

    def after(self, snapshot: Snapshot, now: float, stale_after: float) -> GatewayLifecycle:
        at = snapshot.collected_at if snapshot.collected_at is not None else now
        return GatewayLifecycle(
            self.perspective.after(perspective_held(snapshot.perspective), now, stale_after),
            self.clients.after(client_held(snapshot.clients, at), now, stale_after))


NOTHING_YET = GatewayLifecycle()
