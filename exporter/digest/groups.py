"""One grouping of a poll's sessions, computed once and shared by everything that groups.

The metrics count sessions per (project, scope, username), sum their numbers per (project,
scope), follow their byte counters per (project, scope), and `/sessions` indexes them per
(username, project). Each of these, done on its own, hashes and compares every session's
strings again; and comparing them is most of the cost, because every decoded string is an
object of its own. So the sessions are grouped once, on the finest key, into small integer
codes; everything else works on the codes and on the few distinct keys.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # model.py builds its SessionIndex from Groups
    from exporter.model import ClientSession, Owner, PerspectiveSession, Snapshot

Key = tuple[Any, ...]
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
        keys = self.keys
        return {keys[code]: n for code, n in Counter(self.codes).items()}

    def owners(self, username_at: int, project_at: int) -> tuple[Owner, ...]:
        """Per code, the (username, project) of its key."""
        return tuple((key[username_at], key[project_at]) for key in self.keys)

    def sums(self, values: Iterable[float | None]) -> list[float]:
        """Per code, the sum of the items' values (one value per item; None counts as 0)."""
        out = [0] * len(self.keys)
        for code, value in zip(self.codes, values, strict=True):
            if value:
                out[code] += value
        return out


def shared(values: Sequence[Any]) -> tuple[Any, ...]:
    """The values with equal strings made one object, interned: every decoded string is an
    object of its own, and what outlives a poll (the /sessions index, the label values) would
    otherwise keep a copy per key. Costs a dictionary entry per distinct value."""
    one = {value: sys.intern(value) if type(value) is str else value for value in set(values)}
    return tuple(map(one.__getitem__, values))


@dataclass(frozen=True, slots=True)
class SnapshotGroups:
    """The groups of both of a snapshot's lists."""

    perspective: Groups
    clients: Groups

    @classmethod
    def of(cls, snapshot: Snapshot) -> SnapshotGroups:
        return cls(Groups.of_perspective(snapshot.perspective),
                   Groups.of_clients(snapshot.clients))
