"""The series budget shared by need: water-filling, stability, and small gateways first."""

from __future__ import annotations

import random

from exporter.digest.budget import TOLERANCE, SeriesBudget, allocate, water_fill


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
