"""One grouping of a poll's sessions, computed once and shared by everything that groups.

The metrics count sessions per (project, scope, username), sum their numbers per (project,
scope), follow their byte counters per (project, scope), and `/sessions` indexes them per
(username, project). Each of these, done on its own, hashes and compares every session's
strings again; and comparing them is most of the cost, because every decoded string is an
object of its own. So the sessions are grouped once, on the finest key, into small integer
codes; everything else works on the codes and on the few distinct keys.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, islice
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # model.py builds its SessionIndex from Groups
    from exporter.model import ClientSession, PerspectiveSession, Snapshot

Key = tuple[Any, ...]
OTHER = "__other__"
# Distinct `sessionScope` values kept per gateway. Ignition has four (designer, browser, ios,
# android; capitalised in some versions): more is a broken gateway, whose extra scopes are
# folded into "__other__" so that it cannot multiply the exporter's series.
MAX_SCOPES = 16
# The finest keys: a Perspective session's (project, sessionScope, username) as sent, and a
# client's (project, username, isDesigner).
PERSPECTIVE_KEY = attrgetter("project", "session_scope", "username")
CLIENT_KEY = attrgetter("project", "username", "is_designer")


@dataclass(frozen=True, slots=True)
class Groups:
    """`codes[i]` is the code of item i's key; `keys[code]` is that key, in first-seen order."""

    keys: tuple[Key, ...]
    codes: list[int]

    @classmethod
    def of(cls, keys: Iterable[Key]) -> Groups:
        code_of: dict[Key, int] = {}
        codes = [code_of.setdefault(key, len(code_of)) for key in keys]
        return cls(tuple(code_of), codes)

    @classmethod
    def of_perspective(cls, sessions: Sequence[PerspectiveSession]) -> Groups:
        return cls.of(map(PERSPECTIVE_KEY, sessions))

    @classmethod
    def of_clients(cls, clients: Sequence[ClientSession]) -> Groups:
        return cls.of(map(CLIENT_KEY, clients))

    def counts(self) -> dict[Key, int]:
        """How many items hold each key."""
        return dict(zip(self.keys, self.sizes(), strict=True))

    def coarser(self, *positions: int) -> Groups:
        """The same items grouped by fewer of their key's values (those at `positions`, two
        or more), found from the codes rather than from the items again: thousands of keys
        (a username in each) make a handful of (project, scope) groups."""
        parts = list(map(itemgetter(*positions), self.keys))
        code_of = {part: code for code, part in enumerate(dict.fromkeys(parts))}
        of_key = list(map(code_of.__getitem__, parts))
        return Groups(tuple(code_of), list(map(of_key.__getitem__, self.codes)))

    def folded(self, at: int, limit: int, shown: Shown | None = None) -> tuple[Groups, int]:
        """These groups with the value at position `at` of the keys replaced by OTHER beyond
        `limit` values; and how many values were folded. The values the metrics show already
        (`shown`: seen within stale_after) count against the limit first, so a gateway
        renaming its values on every poll cannot show the limit's worth of new ones per
        poll; new values take the room left. Among each, those holding the most items are
        kept (ties by value, so the choice is the same on every poll for the same data).
        Free when the values and those shown are no more than `limit`, the usual case: then
        `self` comes back."""
        shown = shown or NOTHING_SHOWN
        taken = len(shown.labels - {OTHER})
        if len(set(map(itemgetter(at), self.keys))) + taken <= limit:
            return self, 0
        held: Counter[Any] = Counter()
        for key, size in zip(self.keys, self.sizes(), strict=True):
            held[key[at]] += size
        ranked = [value for value, _ in sorted(held.items(), key=_most_held_first)]
        known = list(map(shown.has, ranked))
        kept = {*islice(compress(ranked, known), limit),
                *islice(compress(ranked, map(operator.not_, known)), max(0, limit - taken))}
        if len(kept) == len(held):
            return self, 0
        merged = Groups.of(key if key[at] in kept else (*key[:at], OTHER, *key[at + 1:])
                           for key in self.keys)
        return Groups(merged.keys, list(map(merged.codes.__getitem__, self.codes))), \
            len(held) - len(kept)

    def sizes(self) -> list[int]:
        """Per code, how many items hold it."""
        return list(map(Counter(self.codes).__getitem__, range(len(self.keys))))

    def sums(self, values: Iterable[float | None]) -> list[float]:
        """Per code, the sum of the items' values (one value per item; None counts as 0)."""
        out = [0] * len(self.keys)
        for code, value in zip(self.codes, values, strict=True):
            if value:
                out[code] += value
        return out


@dataclass(frozen=True, slots=True)
class Shown:
    """The values of one label the metrics show already (seen within stale_after), and how
    a raw value becomes a label value (cut, lower-cased): what `Groups.folded` counts first."""

    labels: frozenset[str] = frozenset()
    label: Callable[[Any], str] = str

    def has(self, value: Any) -> bool:
        return self.label(value) in self.labels


NOTHING_SHOWN = Shown()


def _most_held_first(item: tuple[Any, int]) -> tuple[int, str]:
    value, held = item
    return -held, "" if value is None else str(value)


# Strings made one object across polls and gateways (`one_copy`), at most this many, each
# of at most MAX_SHARED_CHARS. Not sys.intern: on Python 3.12.0 to 3.12.5 and on free-threaded
# builds its strings are immortal, so a gateway sending a new name on every poll would grow
# the process for ever. Past the bound the table starts afresh (strings in use live on as any
# others do): at most about 10 MB, and a usual fleet's names fit many times over.
SHARED_STRINGS = 50_000
MAX_SHARED_CHARS = 64
_SHARED: dict[str, str] = {}


def one_copy(value: Any) -> Any:
    """The one object kept for a string equal to `value` (`value` itself the first time);
    anything else, and longer strings, as they are."""
    if type(value) is not str or len(value) > MAX_SHARED_CHARS:
        return value
    if len(_SHARED) >= SHARED_STRINGS:
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


def shared(values: Sequence[Any]) -> tuple[Any, ...]:
    """The values with equal strings made one object (`one_copy`): every decoded string is
    an object of its own, and what outlives a poll (the /sessions index, the label values)
    would otherwise keep a copy per key. Costs a dictionary entry per distinct value."""
    one = {value: one_copy(value) for value in set(values)}
    return tuple(map(one.__getitem__, values))


@dataclass(frozen=True, slots=True)
class ShownLabels:
    """What a gateway's metrics show already, per label `SnapshotGroups.capped` folds."""

    projects: Shown = NOTHING_SHOWN
    scopes: Shown = NOTHING_SHOWN
    client_projects: Shown = NOTHING_SHOWN


@dataclass(frozen=True, slots=True)
class SnapshotGroups:
    """The groups of both of a snapshot's lists, by their finest keys and, found from those,
    by the two values every label set is made of: (project, sessionScope) for Perspective,
    (project, isDesigner) for clients."""

    perspective: Groups
    clients: Groups
    scopes: Groups
    kinds: Groups

    @classmethod
    def of(cls, snapshot: Snapshot) -> SnapshotGroups:
        return cls.grouped(Groups.of_perspective(snapshot.perspective),
                           Groups.of_clients(snapshot.clients))

    @classmethod
    def grouped(cls, perspective: Groups, clients: Groups) -> SnapshotGroups:
        return cls(perspective, clients, perspective.coarser(0, 1), clients.coarser(0, 2))

    def capped(self, max_projects: int, shown: ShownLabels | None = None
               ) -> tuple[SnapshotGroups, dict[str, int]]:
        """The groups the label values are made from: a gateway's projects beyond
        `max_projects`, and its scopes beyond MAX_SCOPES, folded into "__other__" (those
        `shown` already first, then the busiest: `Groups.folded`), so that no gateway can
        make the series of every metric with a project or scope label grow without bound.
        Returns them and how many values of each label were folded. (`/sessions` keeps the
        real values: it indexes the groups before this.)"""
        shown = shown or ShownLabels()
        perspective, projects = self.perspective.folded(0, max_projects, shown.projects)
        perspective, scopes = perspective.folded(1, MAX_SCOPES, shown.scopes)
        clients, client_projects = self.clients.folded(0, max_projects, shown.client_projects)
        folded = {"project": max(projects, client_projects), "scope": scopes}
        if not any(folded.values()):
            return self, folded
        return SnapshotGroups.grouped(perspective, clients), folded
