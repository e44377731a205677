"""A true monotonic byte counter built from sessions that come and go.

The gateway reports `totalBytesSent` per session; summing it per project would drop whenever a
busy session ends. Instead, per gateway, the last total of every live session is remembered and
only growth is added: the delta for a known session, the whole total for a new one, and the new
total when a session's count went down (the gateway reset it).

A session missing from a poll is followed for GRACE_POLLS more successful polls before it is
forgotten: a list that drops a session for a poll (REST pages shifting while they are read, a
gateway answering from a half-updated list) must not have its whole total counted again when
it is back.

A (project, scope) is exported while it holds a session or held one within `stale_after`,
the rule and the clock (the poll's time) of the lifecycle counters: a project that went away
must not cost every scrape a series for as long as the process runs. Its total is kept once
it is no longer exported, so that if it comes back its counter continues from there and never
goes down while the process runs; but only the REMEMBERED_LABEL_SETS most recently seen of
those are kept, so that a gateway inventing project names cannot grow the exporter's memory
for ever.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, islice, repeat
from operator import attrgetter
from types import MappingProxyType

from exporter.digest.aggregate import ScopeKey, scope_key
from exporter.digest.groups import Groups
from exporter.digest.lifecycle import REMEMBERED_LABEL_SETS
from exporter.model import Number, PerspectiveSession, id_hashes

GRACE_POLLS = 3


_NOTHING: Mapping[ScopeKey, float] = MappingProxyType({})


def _nothing() -> Mapping[ScopeKey, float]:
    return _NOTHING


@dataclass(frozen=True, slots=True)
class LabelTotals:
    """The byte totals per (project, scope) as of one poll. `shown` are those exported: the
    label sets that held a session within `stale_after` of the poll (`last_seen`: when each
    last did, the poll's time). `hidden` are the totals of those no longer exported, kept in
    case they come back, least recently seen first and at most `remember` of them. A poll
    looks at each label set shown or holding a session; the hidden ones are copied only
    when one of them comes back or another joins them."""

    shown: Mapping[ScopeKey, float] = field(default_factory=_nothing)
    last_seen: Mapping[ScopeKey, float] = field(default_factory=_nothing)
    hidden: Mapping[ScopeKey, float] = field(default_factory=_nothing)
    remember: int = REMEMBERED_LABEL_SETS

    def after(self, live: Mapping[ScopeKey, float], now: float, stale_after: float
              ) -> LabelTotals:
        """The totals after a poll at `now` whose growth per label set holding a session is
        `live` (0 included). A label set is shown from its first growth on; one coming back
        from `hidden` continues from its kept total."""
        shown, last_seen = dict(self.shown), dict(self.last_seen)
        back = live.keys() & self.hidden.keys()
        for key, grown in live.items():
            if grown or key in shown or key in back:
                shown[key] = shown.get(key, self.hidden.get(key, 0.0)) + grown
                last_seen[key] = now
        gone = sorted((key for key, seen in last_seen.items() if now - seen > stale_after),
                      key=last_seen.__getitem__)
        hidden = self._hidden_after(back, {key: shown.pop(key) for key in gone}) \
            if back or gone else self.hidden
        for key in gone:
            del last_seen[key]
        return LabelTotals(MappingProxyType(shown), MappingProxyType(last_seen), hidden,
                           self.remember)

    def _hidden_after(self, back: set[ScopeKey], gone: dict[ScopeKey, float]
                      ) -> Mapping[ScopeKey, float]:
        """`hidden` without the label sets `back` in sight, with those `gone` from it now
        (least recently seen first) at the end; of those, the `remember` seen last. A
        gateway inventing project names must not grow the exporter's memory for ever: only
        a label set dropped here can start again from 0 (a reset, for Prometheus), and only
        churn drops one: `remember` label sets leaving after it."""
        kept = {key: total for key, total in self.hidden.items() if key not in back}
        kept.update(gone)
        if len(kept) > self.remember:
            kept = dict(islice(kept.items(), len(kept) - self.remember, None))
        return MappingProxyType(kept)


@dataclass(frozen=True, slots=True)
class SentBytes:
    """One gateway's byte counter as of its last successful poll; `after` gives the next.

    Immutable, so it travels with a poll's digest wherever that runs (another thread or
    process) and a failed poll simply keeps the old one. The live sessions' last totals are
    held as two flat arrays, keyed by the hash of the session id: 16 bytes a session rather
    than a dictionary entry, an id string and a float object (about 150). Two ids whose
    64-bit hashes collide would share a counter (by chance only: `id_hashes` is keyed, for
    integer ids too). The sessions missing from the last poll but not yet forgotten are held
    the same way (`missing_*`), with how many polls in a row each has been missing. `labels`
    are the totals per (project, scope); `totals` those exported."""

    ids: array = field(default_factory=lambda: array("q"))
    last: array = field(default_factory=lambda: array("d"))
    missing_ids: array = field(default_factory=lambda: array("q"))
    missing_last: array = field(default_factory=lambda: array("d"))
    missing_polls: array = field(default_factory=lambda: array("B"))
    labels: LabelTotals = LabelTotals()

    @property
    def totals(self) -> Mapping[ScopeKey, float]:
        """The totals exported: the label sets that held a session within `stale_after`."""
        return self.labels.shown

    def after(self, sessions: Sequence[PerspectiveSession], scopes: Groups | None = None, *,
              now: float, stale_after: float) -> SentBytes:
        """Add the growth of a poll made at `now` (epoch seconds); sessions absent from it
        are followed for GRACE_POLLS more polls, then forgotten. `scopes` are the sessions
        grouped by (project, sessionScope) (`SnapshotGroups.scopes`, folded), when the
        caller has them."""
        scopes = scopes or Groups.of_perspective(sessions).coarser(0, 1)
        ids, last, growth = self._growth(sessions, scopes)
        return SentBytes(ids, last, *self._missing_after(ids),
                         self.labels.after(_per_label_set(scopes.keys, growth), now,
                                           stale_after))

    def _missing_after(self, live: array) -> tuple[array, array, array]:
        """The sessions to follow while missing, after a poll that saw `live`: those of the
        previous poll not in it, and those missing before, not back and not missing for
        GRACE_POLLS polls yet. C loops only: this runs over every session of every poll."""
        seen = set(live)
        gone = list(map(operator.not_, map(seen.__contains__, self.ids)))
        still = list(map(operator.and_, map(operator.not_, map(seen.__contains__,
                                                                self.missing_ids)),
                         map(GRACE_POLLS.__gt__, self.missing_polls)))
        return (array("q", [*compress(self.ids, gone), *compress(self.missing_ids, still)]),
                array("d", [*compress(self.last, gone), *compress(self.missing_last, still)]),
                array("B", [*repeat(1, sum(gone)),
                            *map((1).__add__, compress(self.missing_polls, still))]))

    def _growth(self, sessions: Sequence[PerspectiveSession], groups: Groups
                ) -> tuple[array, array, list[float]]:
        """This poll's ids and totals to remember, and per code of `groups` the growth of
        its sessions' totals."""
        ids = list(map(_ID, sessions))
        currents = list(map(_TOTAL, sessions))
        hashes = id_hashes(ids)
        last = dict(zip(self.missing_ids, self.missing_last, strict=True))
        last.update(zip(self.ids, self.last, strict=True))
        if None in ids or None in currents or min(currents, default=0) < 0:
            return _growth_skipping(groups, ids, hashes, currents, last)
        # Every session counts: growth is current - previous where previous <= current, and
        # current in full otherwise (new, or reset), computed without a Python-level loop.
        previous = list(map(last.get, hashes, repeat(0.0)))
        kept = map(operator.mul, previous, map(operator.le, previous, currents))
        return (array("q", hashes), array("d", currents),
                groups.sums(map(operator.sub, currents, kept)))


def _per_label_set(keys: Sequence[tuple[object, ...]], growth: Sequence[float]
                   ) -> dict[ScopeKey, float]:
    """The growth per label set of each holding a session: raw pairs that make one label set
    (`scope_key`: cut, lower-cased) add up."""
    live: dict[ScopeKey, float] = {}
    for raw_key, grown in zip(keys, growth, strict=True):
        key = scope_key(raw_key)
        live[key] = live.get(key, 0.0) + grown
    return live


def _growth_skipping(groups: Groups, ids: list[str | int | None], hashes: list[int],
                     currents: list[Number | None], last: dict[int, float]
                     ) -> tuple[array, array, list[float]]:
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
    return kept_ids, kept_totals, growth


_ID = attrgetter("id")
_TOTAL = attrgetter("total_bytes_sent")
