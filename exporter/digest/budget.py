"""The series budget (`max_series_per_metric`) shared among gateways by need.

Each gateway's demand is the number of series it had for a metric on its last poll, before
folding. The budget is water-filled over the demands: every gateway gets its demand up to one
common level, the level as high as the budget allows. So a gateway needing no more than an
equal share always keeps all its series, and what small gateways leave unused goes to the big
ones. To keep series from flapping between their own name and `__other__` as demands move
from poll to poll, an allocation is kept while it stays fair enough (see `allocate`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

# A kept allocation may fall this far below the water-filled one for a folded gateway before
# it is recomputed.
TOLERANCE = 0.1
# Room to grow: a gateway's demand is its last poll's series, so a share of exactly that would
# fold the next user who logs in (for a poll, until the share follows). What the demands leave
# of the budget goes first to this much more for each (a share of its demand, at least
# HEADROOM_MIN series), then evenly to all: a fleet within its budget folds nothing as it grows.
HEADROOM_SHARE = 0.1
HEADROOM_MIN = 10


def water_fill(demands: Mapping[str, int], budget: int) -> dict[str, int]:
    """Each gateway's share: min(demand, level), the level the highest the budget allows.

    Integer shares: the units left below the next level go one each to the gateways still
    short, in name order, so the result depends on the demands alone."""
    shares = dict.fromkeys(demands, 0)
    remaining = budget
    short = sorted(demands, key=lambda name: (demands[name], name))
    while short:
        level = remaining // len(short)
        if demands[short[0]] > level:
            break  # everyone left wants more than an equal part of what is left
        name = short.pop(0)
        shares[name] = demands[name]
        remaining -= demands[name]
    if short:
        level, extra = divmod(remaining, len(short))
        for index, name in enumerate(sorted(short)):
            shares[name] = level + (1 if index < extra else 0)
    return shares


def allocate(demands: Mapping[str, int], budget: int,
             current: Mapping[str, int] | None = None) -> dict[str, int]:
    """The shares water-filled with room to grow, or `current` while it is still acceptable:
    within the budget, every gateway the water-filling serves in full served in full, and
    every other gateway at least (1 - TOLERANCE) of its water-filled share."""
    ideal = _ideal(demands, budget)
    if current is not None and _acceptable(current, ideal, demands, budget):
        return dict(current)
    return ideal


def _ideal(demands: Mapping[str, int], budget: int) -> dict[str, int]:
    """Water-filled on the demands; then room to grow, water-filled out of what that leaves
    (so it costs no gateway a series, and moves by a series when a demand does); then what is
    still left, spread evenly."""
    plain = water_fill(demands, budget)
    room = water_fill({name: _headroom(demand) for name, demand in demands.items()},
                      budget - sum(plain.values()))
    return _spread({name: plain[name] + room[name] for name in plain}, budget)


def _headroom(demand: int) -> int:
    return max(HEADROOM_MIN, math.ceil(demand * HEADROOM_SHARE))


def _spread(shares: dict[str, int], budget: int) -> dict[str, int]:
    """`shares` with what they leave of the budget shared evenly, the units left over one
    each in name order (as in `water_fill`)."""
    if not shares:
        return shares
    level, extra = divmod(budget - sum(shares.values()), len(shares))
    return {name: shares[name] + level + (1 if index < extra else 0)
            for index, name in enumerate(sorted(shares))}


def _acceptable(current: Mapping[str, int], ideal: Mapping[str, int],
                demands: Mapping[str, int], budget: int) -> bool:
    if current.keys() != ideal.keys() or sum(current.values()) > budget:
        return False
    for name, share in ideal.items():
        wanted = demands[name] if share >= demands[name] else share * (1 - TOLERANCE)
        if current[name] < wanted:
            return False
    return True


class BudgetTooSmall(ValueError):
    """A budget of fewer series than there are gateways to share it."""

    def __init__(self, budget: int, gateways: int) -> None:
        super().__init__(f"a budget of {budget} series cannot give each of {gateways} "
                         "gateways one")
        self.budget = budget
        self.gateways = gateways


class SeriesBudget:
    """One fleet's budget, per metric, fed each gateway's demands after each of its polls.

    A gateway not heard from yet is assumed to want an equal share: the first polls split
    the budget equally, and need takes over as gateways report. The limits never sum above
    the budget: a budget of fewer series than gateways is refused (the configuration checks
    it first), since an equal share of it would be none."""

    def __init__(self, budget: int, gateways: Iterable[str]) -> None:
        self.budget = budget
        self._gateways = tuple(gateways)
        if budget < len(self._gateways):
            raise BudgetTooSmall(budget, len(self._gateways))
        self._equal = budget // max(1, len(self._gateways))
        self._demands: dict[str, dict[str, int]] = {}
        self._shares: dict[str, dict[str, int]] = {}

    def limit(self, gateway: str, metric: str) -> int:
        """The gateway's current share of the metric's budget. It is 0 only for a gateway
        whose last poll had no series of the metric, in a fleet whose demands take the whole
        budget: no series of another gateway is folded to keep one free for it (a floor of
        one series here made the limits sum above the budget)."""
        shares = self._shares.get(metric)
        return self._equal if shares is None else shares[gateway]

    def report(self, gateway: str, demands: Mapping[str, int]) -> None:
        """The series the gateway's last poll had per metric, before folding."""
        for metric, demand in demands.items():
            known = self._demands.setdefault(metric, {})
            known[gateway] = demand
            everyone = {name: known.get(name, self._equal) for name in self._gateways}
            self._shares[metric] = allocate(everyone, self.budget, self._shares.get(metric))

    def carried(self, budget: int, gateways: Iterable[str]) -> SeriesBudget:
        """The budget of a reloaded fleet: the gateways it keeps keep what their polls said
        they need, and their shares while those still fit (a reload that changes nothing
        changes no share); new gateways are assumed to want an equal share, as at start."""
        new = SeriesBudget(budget, gateways)
        for metric, known in self._demands.items():
            kept = {name: demand for name, demand in known.items() if name in new._gateways}
            if kept:
                new._demands[metric] = kept
                everyone = {name: kept.get(name, new._equal) for name in new._gateways}
                new._shares[metric] = allocate(everyone, budget, self._shares.get(metric))
        return new
