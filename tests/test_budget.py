"""The series budget shared by need: water-filling, stability, and small gateways first."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.digest.budget import (
    TOLERANCE,
    BudgetTooSmall,
    SeriesBudget,
    allocate,
    water_fill,
)


def test_water_filling_serves_small_demands_in_full_and_splits_the_rest() -> None:
    shares = water_fill({"big": 20_000, "small-a": 300, "small-b": 700}, 10_000)
    assert shares == {"big": 9_000, "small-a": 300, "small-b": 700}


def test_under_budget_everyone_gets_everything() -> None:
    demands = {"a": 10, "b": 20, "c": 30}
    assert water_fill(demands, 100) == demands


def test_the_remainder_goes_one_each_in_name_order() -> None:
    assert water_fill({"c": 50, "a": 50, "b": 50}, 10) == {"a": 4, "b": 3, "c": 3}
    # The order the demands arrive in changes nothing.
    assert water_fill({"a": 50, "b": 50, "c": 50}, 10) == {"a": 4, "b": 3, "c": 3}


def test_properties_over_random_demands() -> None:
    rng = random.Random(7)
    for _ in range(500):
        names = [f"gw{i}" for i in range(rng.randint(1, 8))]
        demands = {name: rng.choice([0, 1, rng.randint(0, 50), rng.randint(0, 5_000)])
                   for name in names}
        budget = rng.randint(len(names), 6_000)
        shares = water_fill(demands, budget)
        fair = budget // len(names)
        assert sum(shares.values()) <= budget
        assert sum(shares.values()) == min(budget, sum(demands.values()))  # nothing wasted
        for name in names:
            assert shares[name] <= demands[name]
            if demands[name] <= fair:  # a gateway within an equal share keeps every series
                assert shares[name] == demands[name]
        assert water_fill(dict(reversed(demands.items())), budget) == shares


def test_a_kept_allocation_stays_while_demands_wobble() -> None:
    budget = 10_000
    current = allocate({"big": 20_000, "small": 1_000}, budget)
    assert current == {"big": 9_000, "small": 1_000}
    for wobble in (980, 1_000, 700, 995, 1_000):
        again = allocate({"big": 20_000 + wobble, "small": wobble}, budget, current)
        assert again == current  # no series flaps between its name and __other__


def test_a_small_gateway_that_grows_gets_its_series_at_once() -> None:
    current = allocate({"big": 20_000, "small": 1_000}, 10_000)
    grown = allocate({"big": 20_000, "small": 2_000}, 10_000, current)
    assert grown == {"big": 8_000, "small": 2_000}


def test_a_big_gateway_gets_back_what_others_freed_beyond_the_tolerance() -> None:
    current = allocate({"big": 20_000, "small": 3_000}, 10_000)
    assert current["big"] == 7_000
    slightly = allocate({"big": 20_000, "small": 2_500}, 10_000, current)
    assert slightly == current  # 7,000 is within TOLERANCE of 7,500
    much = allocate({"big": 20_000, "small": 500}, 10_000, current)
    assert much == {"big": 9_500, "small": 500}
    assert 9_500 * (1 - TOLERANCE) > 7_000


def test_fleet_budget_starts_equal_then_follows_need() -> None:
    budget = SeriesBudget(9_000, ["a", "b", "c"])
    assert budget.limit("a", "m") == 3_000
    budget.report("a", {"m": 20_000})
    budget.report("b", {"m": 100})
    # c has not reported: it is assumed to want an equal share, and gets it.
    assert (budget.limit("a", "m"), budget.limit("b", "m"), budget.limit("c", "m")) == (
        5_900, 100, 3_000)
    budget.report("c", {"m": 50})
    assert budget.limit("a", "m") == 8_850
    assert budget.limit("c", "m") == 50


def test_a_fleet_within_its_budget_folds_nothing_as_it_grows() -> None:
    """A share of exactly the last poll's series would fold the next user to log in."""
    budget = SeriesBudget(10_000, ["a", "b"])
    budget.report("a", {"m": 34})
    budget.report("b", {"m": 34})
    assert budget.limit("a", "m") + budget.limit("b", "m") == 10_000  # nothing left unused
    assert budget.limit("a", "m") >= 169


def test_room_to_grow_comes_out_of_what_the_demands_leave() -> None:
    current = allocate({"big": 5_000, "small": 50}, 10_000)
    # 4,950 left: 500 and 10 of room to grow, then 2,220 each.
    assert current == {"big": 7_720, "small": 2_280}
    assert allocate({"big": 5_400, "small": 61}, 10_000, current) == current
    # Nothing left: no room for anyone, and no series of the big one for the small one's.
    assert allocate({"big": 20_000, "small": 50}, 10_000) == {"big": 9_950, "small": 50}


def test_room_to_grow_never_costs_another_gateway_its_series() -> None:
    assert allocate({"a": 0, "b": 40}, 40) == {"a": 0, "b": 40}


def folded(demands: dict[str, int], shares: dict[str, int]) -> int:
    return sum(max(0, demand - shares[name]) for name, demand in demands.items())


def test_room_to_grow_costs_a_folded_gateway_nothing() -> None:
    """199 gateways with one user each beside one with 10,000: the headroom the small ones
    do not use must not fold the big one's users (the budget would be left unused)."""
    demands = {f"small{i:03}": 1 for i in range(199)} | {"big": 10_000}
    shares = allocate(demands, 2_000)
    assert shares["big"] == 2_000 - 199
    assert folded(demands, shares) == sum(demands.values()) - 2_000


def test_a_fresh_allocation_uses_the_budget_and_folds_only_what_exceeds_it() -> None:
    rng = random.Random(11)
    for _ in range(300):
        demands = {f"g{i}": rng.choice([0, 1, 5, 50, 500, 5_000, 50_000])
                   for i in range(rng.randint(1, 40))}
        budget = rng.randint(len(demands), 120_000)
        shares, plain = allocate(demands, budget), water_fill(demands, budget)
        assert sum(shares.values()) == budget, (demands, budget)
        assert folded(demands, shares) == max(0, sum(demands.values()) - budget), \
            (demands, budget)
        # Room to grow never costs a gateway what it would keep without.
        assert all(shares[name] >= min(demand, plain[name])
                   for name, demand in demands.items())


def test_one_user_on_a_small_gateway_flaps_no_series_of_a_big_one() -> None:
    """A plant exactly at its budget: one user logging in and out on one of 100 small
    gateways must move one series, not thousands of the big gateway's."""
    demands = {f"small{i:02}": 400 for i in range(100)} | {"big": 20_000}
    current = None
    shown = []
    for small in (400, 401, 400, 401):
        current = allocate(demands | {"small00": small}, 60_000, current)
        shown.append(min(current["big"], 20_000))
    assert min(shown) >= 20_000 - 1, shown


def test_one_more_series_folds_at_most_one_more_anywhere() -> None:
    """Demands that wobble by one series on one gateway: however the shares move, no more
    than that one series may fold in the whole fleet at each step (seeded walks over fleets
    of 2 to 200 gateways, budgets from the number of gateways to far above the demands)."""
    rng = random.Random(5)
    for _ in range(150):
        names = [f"g{i:03}" for i in range(rng.choice([2, 3, 5, 20, 100, 200]))]
        demands = {name: rng.choice([0, 1, 5, 40, 400, 5_000, 20_000]) for name in names}
        total = sum(demands.values())
        budget = max(len(names), rng.choice([total - 1, total, total + 1, 10_000, 100_000]))
        mover = rng.choice(names)
        current = allocate(demands, budget)
        for _ in range(40):
            before = folded(demands, current)
            demands[mover] = max(0, demands[mover] + rng.choice([-1, 1]))
            current = allocate(demands, budget, current)
            assert folded(demands, current) <= before + 1, (len(names), budget, mover)


def test_a_reload_carries_the_kept_gateways_demands_and_shares() -> None:
    budget = SeriesBudget(9_000, ["a", "b", "c"])
    budget.report("a", {"m": 20_000})
    budget.report("b", {"m": 100})
    budget.report("c", {"m": 50})
    same = budget.carried(9_000, ["a", "b", "c"])
    assert [same.limit(name, "m") for name in "abc"] == [budget.limit(name, "m")
                                                         for name in "abc"]
    # c is gone, d is new (assumed to want an equal share), a and b keep their need.
    changed = budget.carried(9_000, ["a", "b", "d"])
    assert [changed.limit(name, "m") for name in "abd"] == [5_900, 100, 3_000]


METRICS = ("m", "n", "never-reported")
demand = st.sampled_from([0, 1, 2, 9, 10, 11, 400]) | st.integers(0, 50_000)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[str], int]:
    """Gateways and a budget of at least one series each: often exactly that, or a few
    more, where a floor on a share tips the sum over; sometimes far more."""
    names = [f"g{i:02}" for i in range(draw(st.integers(1, 40)))]
    extra = draw(st.sampled_from([0, 1, 2, len(names)]) | st.integers(0, 100_000))
    return names, len(names) + extra


reports = st.lists(st.tuples(st.integers(0, 39), st.dictionaries(
    st.sampled_from(METRICS[:2]), demand, min_size=1)), max_size=30)


def play(budget: SeriesBudget, names: list[str],
         polls: list[tuple[int, dict[str, int]]]) -> SeriesBudget:
    """Feed the polls' demands to the budget, checking the limits before and after each."""
    for index, demands in [(0, {}), *polls]:
        budget.report(names[index % len(names)], demands)
        for metric in METRICS:
            limits = [budget.limit(name, metric) for name in names]
            assert sum(limits) <= budget.budget, (metric, limits, budget.budget)
            assert min(limits) >= 0
    return budget


@settings(max_examples=300, deadline=None)
@given(fleet=fleets(), polls=reports, reloaded=fleets(), later=reports)
def test_the_limits_never_sum_above_the_budget(fleet: tuple[list[str], int],
                                              polls: list[tuple[int, dict[str, int]]],
                                              reloaded: tuple[list[str], int],
                                              later: list[tuple[int, dict[str, int]]]) -> None:
    """Whatever the gateways report, in any order, before and after a reload to another
    fleet and budget: the shares of a metric together never exceed the budget, so
    `max_series_per_metric` bounds the fleet's series (a floor of one series per share used
    to make a gateway with no series cost one more than the budget)."""
    budget = play(SeriesBudget(fleet[1], fleet[0]), fleet[0], polls)
    play(budget.carried(reloaded[1], reloaded[0]), reloaded[0], later)


def test_a_gateway_with_no_series_costs_nothing_of_a_full_budget() -> None:
    """The case the floor broke: 2 series for 2 gateways, one of them with no users."""
    budget = SeriesBudget(2, ["idle", "busy"])
    budget.report("idle", {"m": 0})
    budget.report("busy", {"m": 5})
    assert (budget.limit("idle", "m"), budget.limit("busy", "m")) == (0, 2)


def test_fewer_series_than_gateways_is_not_a_budget() -> None:
    with pytest.raises(BudgetTooSmall, match="a budget of 2 series cannot give each of 3 "
                                             "gateways one"):
        SeriesBudget(2, ["a", "b", "c"])
    with pytest.raises(BudgetTooSmall):
        SeriesBudget(3, ["a", "b", "c"]).carried(3, ["a", "b", "c", "d"])
