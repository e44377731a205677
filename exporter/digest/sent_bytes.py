"""A true monotonic byte counter built from sessions that come and go.

The gateway reports `totalBytesSent` per session; summing it per project would drop whenever a
busy session ends. Instead, per gateway, the last total of every live session is remembered and
only growth is added: the delta for a known session, the whole total for a new one, and the new
total when a session's count went down (the gateway reset it).

The totals of every (project, scope) stay, also once it holds no session, so the counter never
goes down; but only the REMEMBERED_LABEL_SETS most recently seen of those without a session
are kept, as for the lifecycle counters, so that a gateway inventing project names cannot grow
the exporter's memory and series for ever.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Mapping, Sequence
from itertools import islice, repeat
from operator import attrgetter
from types import MappingProxyType

from exporter.digest.aggregate import ScopeKey, scope_key
from exporter.digest.groups import Groups
from exporter.digest.lifecycle import REMEMBERED_LABEL_SETS
from exporter.model import Number, PerspectiveSession, id_hashes


class SentBytesCounter:
    """Owned by one gateway's poller; fed every successful snapshot in order.

    The live sessions' last totals are held as two flat arrays, keyed by the hash of the
    session id: 16 bytes a session rather than a dictionary entry, an id string and a float
    object (about 150). Two ids whose 64-bit hashes collide would share a counter (by chance
    only: `id_hashes` is keyed, for integer ids too)."""

    def __init__(self, remember: int = REMEMBERED_LABEL_SETS) -> None:
        self._ids = array("q")
        self._last = array("d")
        self._totals: dict[ScopeKey, float] = {}  # least recently seen first
        self._remember = remember

    def observe(self, sessions: Sequence[PerspectiveSession], groups: Groups | None = None
                ) -> Mapping[ScopeKey, float]:
        """Add this poll's growth; sessions absent from it are forgotten. Returns the totals.
        `groups` are the sessions' (`Groups.of_perspective`), when the caller has them."""
        groups = groups or Groups.of_perspective(sessions)
        growth_by_scope: dict[tuple[str | None, str | None], float] = {}
        for (project, scope, _), grown in zip(groups.keys, self._growth(sessions, groups),
                                              strict=True):
            growth_by_scope[project, scope] = growth_by_scope.get((project, scope), 0) + grown
        live: dict[ScopeKey, float] = {}
        for raw_key, grown in growth_by_scope.items():
            key = scope_key(raw_key)
            live[key] = live.get(key, 0.0) + grown
        for key, grown in live.items():  # moved to the end: seen most recently
            if grown or key in self._totals:
                self._totals[key] = self._totals.pop(key, 0.0) + grown
        excess = len(self._totals) - len(live.keys() & self._totals.keys()) - self._remember
        for key in list(islice(self._totals, max(0, excess))):
            del self._totals[key]
        return MappingProxyType(dict(self._totals))

    def _growth(self, sessions: Sequence[PerspectiveSession], groups: Groups) -> list[float]:
        """Per group code, the growth of its sessions' totals; remembers this poll's totals."""
        ids = list(map(_ID, sessions))
        currents = list(map(_TOTAL, sessions))
        hashes = id_hashes(ids)
        last = dict(zip(self._ids, self._last, strict=True))
        if None in ids or None in currents or min(currents, default=0) < 0:
            return self._growth_skipping(groups, ids, hashes, currents, last)
        # Every session counts: growth is current - previous where previous <= current, and
        # current in full otherwise (new, or reset), computed without a Python-level loop.
        previous = list(map(last.get, hashes, repeat(0.0)))
        kept = map(operator.mul, previous, map(operator.le, previous, currents))
        self._ids, self._last = array("q", hashes), array("d", currents)
        return groups.sums(map(operator.sub, currents, kept))

    def _growth_skipping(self, groups: Groups, ids: list[str | int | None], hashes: list[int],
                         currents: list[Number | None], last: dict[int, float]) -> list[float]:
        """The same, for a poll where some sessions lack an id or a usable total."""
        kept_ids, kept_totals = array("q"), array("d")
        growth = [0.0] * len(groups.keys)
        for code, id_, key, current in zip(groups.codes, ids, hashes, currents, strict=True):
            if id_ is None or current is None or current < 0:
                continue  # without an id or a total there is nothing to follow
            previous = last.get(key)
            growth[code] += current if previous is None or current < previous \
                else current - previous
            kept_ids.append(key)
            kept_totals.append(current)
        self._ids, self._last = kept_ids, kept_totals
        return growth


_ID = attrgetter("id")
_TOTAL = attrgetter("total_bytes_sent")
