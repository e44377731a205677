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
  its totals are kept (up to REMEMBERED_LABEL_SETS of them, the most recently seen): counters
  never go down while the process runs, unless that many label sets leave after one (a
  gateway inventing names), which then starts again from 0.

What is held between polls is compact, because it is paid per session: a 64-bit hash of each
id (`model.id_hashes`: Python's `hash`, keyed per process, for integer ids too), the index
of its label set, and its age.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from exporter.digest.aggregate import label, scope_key
from exporter.digest.groups import Groups, SnapshotGroups
from exporter.model import ClientSession, PerspectiveSession, Snapshot, id_hashes

# Seconds: a quick look, five minutes, a quarter hour, an hour, half a shift, a shift, twelve
# hours, a day, three days, a week (a wall screen that never closes), and beyond.
BUCKETS: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 14400.0, 28800.0, 43200.0,
                              86400.0, 259200.0, 604800.0)
_BUCKETS_MS = tuple(bound * 1000 for bound in BUCKETS)
UNKNOWN = -1.0  # the age of a session whose gateway did not say when it started
# An age above this (about 30 years, in ms) is a broken value, not a session: not observed.
_MAX_AGE_MS = 1e12

LabelSet = tuple[str, str]  # (project, scope) for Perspective, (project, kind) for clients
# Label sets no longer shown whose totals are kept, per list of a gateway (about 300 bytes
# each), in case they come back.
REMEMBERED_LABEL_SETS = 10_000


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts (one per bound in BUCKETS, then +Inf = the count) and the
    sum, in seconds."""

    buckets: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    total: float = 0.0

    @classmethod
    def of_ages(cls, ages_ms: Iterable[float]) -> Histogram:
        """The ages that are known (0 to about 30 years; UNKNOWN and broken values are
        left out), given in milliseconds."""
        ordered = sorted(ages_ms)
        known = ordered[bisect_left(ordered, 0.0):bisect_right(ordered, _MAX_AGE_MS)]
        return cls((*(bisect_right(known, bound) for bound in _BUCKETS_MS), len(known)),
                   sum(known) / 1000)

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
    """The sessions of one successful poll, as compactly as comparing them with the next
    poll's needs: 20 bytes a session.

    Position i is one session: `ids[i]` the hash of its id, `label_sets[labels[i]]` its label
    set, `ages[i]` milliseconds since it started as of that poll (UNKNOWN if not known).
    Ids are unique. `age_histograms` are the ages per label set that holds a session.
    """

    ids: array = field(default_factory=lambda: array("q"))
    labels: array = field(default_factory=lambda: array("I"))
    ages: array = field(default_factory=lambda: array("d"))
    label_sets: tuple[LabelSet, ...] = ()
    age_histograms: Mapping[LabelSet, Histogram] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Sequence[R], fields: Fields[R], groups: Groups) -> Held:
        """The sessions of one list, grouped by their two raw label values (`groups`:
        `SnapshotGroups.scopes` or `kinds`). Sessions without an id are dropped; of a
        repeated id only the first is kept. This runs over every session of every poll: the
        label sets are found once per raw pair of label values, and the only Python loop
        over the sessions sorts their ages by label set."""
        ids = list(map(fields.id, records))
        keys = id_hashes(ids)
        codes: Sequence[int] = groups.codes
        if len(set(keys)) != len(keys) or None in ids:
            kept = _first_with_id(ids, keys)
            records, keys = [records[i] for i in kept], [keys[i] for i in kept]
            codes = [codes[i] for i in kept]
        ages = list(map(fields.age, records))
        if None in ages:
            ages = [UNKNOWN if age is None else age for age in ages]
        order: dict[LabelSet, int] = {}
        of_code = [order.setdefault(fields.label(raw), len(order)) for raw in groups.keys]
        labels = list(map(of_code.__getitem__, codes))
        by_label: list[list[float]] = [[] for _ in order]
        for position, age in zip(labels, ages, strict=True):
            by_label[position].append(age)
        return cls(array("q", keys), array("I", labels), _ages_array(ages), tuple(order),
                   MappingProxyType({label_set: Histogram.of_ages(group) for label_set, group
                                     in zip(order, by_label, strict=True) if group}))

    def __len__(self) -> int:
        return len(self.ids)


def _first_with_id(ids: Sequence[object], keys: Sequence[int]) -> list[int]:
    """Positions of each id's first occurrence, sessions without an id left out."""
    # In a dict later positions overwrite earlier ones, so the list is walked backwards.
    first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
    return sorted(i for i in first.values() if ids[i] is not None)


def _float(value: float) -> float:
    """A number as a float; an integer too large for one (a broken gateway) is UNKNOWN."""
    try:
        return float(value)
    except OverflowError:
        return UNKNOWN


def _ages_array(ages: Sequence[float]) -> array:
    try:
        return array("d", ages)
    except OverflowError:
        return array("d", map(_float, ages))


def _since(at_ms: float, created_ms: float | None) -> float | None:
    return None if created_ms is None else at_ms - _float(created_ms)


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Fields(Generic[R]):
    """How to read one kind of record: its id, its age in ms (None if unknown), and the
    label set its two raw label values make (the keys of `SnapshotGroups.scopes` and
    `SnapshotGroups.kinds`)."""

    id: Callable[[R], str | int | None]
    age: Callable[[R], float | None]
    label: Callable[[tuple[Any, Any]], LabelSet]


PERSPECTIVE: Fields[PerspectiveSession] = Fields(attrgetter("id"), attrgetter("uptime"),
                                                 scope_key)


def perspective_held(sessions: Sequence[PerspectiveSession], scopes: Groups | None = None
                     ) -> Held:
    """Perspective sessions by `id`, labelled (project, scope), aged by `uptime` (ms).
    `scopes` are the sessions grouped by (project, sessionScope), when the caller has them."""
    return Held.of(sessions, PERSPECTIVE,
                   scopes or Groups.of_perspective(sessions).coarser(0, 1))


def _client_label(raw: tuple[str | None, bool | None]) -> LabelSet:
    """(project, kind) from a (project, isDesigner) pair."""
    return label(raw[0]), "designer" if raw[1] else "vision"


def client_held(clients: Sequence[ClientSession], at: float, kinds: Groups | None = None
                ) -> Held:
    """Vision clients and Designers by client id, labelled (project, kind); their age is
    `at` (the poll's time, epoch seconds) minus `creationTime` (epoch ms). `kinds` are the
    clients grouped by (project, isDesigner), when the caller has them."""
    at_ms = at * 1000
    return Held.of(clients, Fields(
        attrgetter("client_id"), lambda client: _since(at_ms, client.creation_time),
        _client_label), kinds or Groups.of_clients(clients).coarser(0, 2))


class _Tally:
    """Mutable per-label-set counts while one comparison runs."""

    def __init__(self) -> None:
        self.started: dict[LabelSet, int] = {}
        self.ended: dict[LabelSet, int] = {}
        self.durations: dict[LabelSet, list[float]] = {}

    def start(self, labels: LabelSet) -> None:
        self.started[labels] = self.started.get(labels, 0) + 1

    def end(self, labels: LabelSet, age_ms: float) -> None:
        """An unknown age ends the session but is not observed (Histogram leaves it out)."""
        self.ended[labels] = self.ended.get(labels, 0) + 1
        self.durations.setdefault(labels, []).append(age_ms)

    def counts(self) -> dict[LabelSet, Counts]:
        return {labels: Counts(self.started.get(labels, 0), self.ended.get(labels, 0),
                               Histogram.of_ages(self.durations.get(labels, ())))
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
        tally.start(current.label_sets[current.labels[now[key]]])
    for key in before.keys() - now.keys():
        position = before[key]
        tally.end(previous.label_sets[previous.labels[position]], previous.ages[position])
    return tally.counts()


def _merge(*changes: Mapping[LabelSet, Counts]) -> dict[LabelSet, Counts]:
    merged: dict[LabelSet, Counts] = {}
    for change in changes:
        for labels, counts in change.items():
            merged[labels] = merged.get(labels, ZERO) + counts
    return merged


def _forget(last_seen: dict[LabelSet, float], totals: dict[LabelSet, Counts],
            pending: dict[LabelSet, Counts], shown: Mapping[LabelSet, Counts],
            remember: int) -> None:
    """Drop the label sets not shown for the longest, so that `remember` of them are left: a
    gateway inventing project names must not grow the exporter's memory for ever. Only then
    can a counter restart from 0, after its series has been gone for a long time (which
    `rate()` reads as a reset)."""
    hidden = sorted((seen, labels) for labels, seen in last_seen.items() if labels not in shown)
    for _, labels in hidden[:len(hidden) - remember]:
        del last_seen[labels]
        totals.pop(labels, None)
        pending.pop(labels, None)


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

    def after(self, current: Held, now: float, stale_after: float,
              remember: int = REMEMBERED_LABEL_SETS) -> Lifecycle:
        """The state after a successful poll at `now` that saw `current`. Of the label sets
        no longer shown, at most `remember` (the most recently seen) keep their totals."""
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
        for labels in current.age_histograms.keys() | change.keys():
            last_seen[labels] = now
        shown = {labels: totals.get(labels, ZERO) for labels, seen in last_seen.items()
                 if now - seen <= stale_after}
        if len(last_seen) - len(shown) > remember:
            _forget(last_seen, totals, pending, shown, remember)
        return Lifecycle(current, now, MappingProxyType(totals), MappingProxyType(pending),
                         MappingProxyType(last_seen), MappingProxyType(shown),
                         current.age_histograms, MappingProxyType(change))


@dataclass(frozen=True, slots=True)
class GatewayLifecycle:
    """Both lists of one gateway."""

    perspective: Lifecycle = Lifecycle()
    clients: Lifecycle = Lifecycle()

    def after(self, snapshot: Snapshot, now: float, stale_after: float,
              groups: SnapshotGroups | None = None) -> GatewayLifecycle:
        """`groups` are the snapshot's, when the caller has them."""
        at = snapshot.collected_at if snapshot.collected_at is not None else now
        groups = groups or SnapshotGroups.of(snapshot)
        return GatewayLifecycle(
            self.perspective.after(perspective_held(snapshot.perspective, groups.scopes),
                                   now, stale_after),
            self.clients.after(client_held(snapshot.clients, at, groups.kinds), now,
                               stale_after))


NOTHING_YET = GatewayLifecycle()
