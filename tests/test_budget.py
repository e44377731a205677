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
    assert current == {"big": 8_900, "small": 1_100}  # the small one has room to grow
    for wobble in (980, 1_000, 700, 995, 1_000):
        again = allocate({"big": 20_000 + wobble, "small": wobble}, budget, current)
        assert again == current  # no series flaps between its name and __other__


def test_a_small_gateway_that_grows_gets_its_series_at_once() -> None:
    current = allocate({"big": 20_000, "small": 1_000}, 10_000)
    grown = allocate({"big": 20_000, "small": 2_000}, 10_000, current)
    assert grown == {"big": 7_800, "small": 2_200}


def test_a_big_gateway_gets_back_what_others_freed_beyond_the_tolerance() -> None:
    current = allocate({"big": 20_000, "small": 3_000}, 10_000)
    assert current["big"] == 6_700
    slightly = allocate({"big": 20_000, "small": 2_500}, 10_000, current)
    assert slightly == current  # 6,700 is within TOLERANCE of 7,250
    much = allocate({"big": 20_000, "small": 500}, 10_000, current)
    assert much == {"big": 9_450, "small": 550}
    assert 9_450 * (1 - TOLERANCE) > 6_700


def test_fleet_budget_starts_equal_then_follows_need() -> None:
    budget = SeriesBudget(9_000, ["a", "b", "c"])
    assert budget.limit("a", "m") == 3_000
    budget.report("a", {"m": 20_000})
    budget.report("b", {"m": 100})
    # c has not reported: it is assumed to want an equal share, and gets it (with room to
    # grow, as everyone).
    assert (budget.limit("a", "m"), budget.limit("b", "m"), budget.limit("c", "m")) == (
        5_590, 110, 3_300)
    budget.report("c", {"m": 50})
    assert budget.limit("a", "m") == 8_830
    assert budget.limit("c", "m") == 60


def test_a_fleet_within_its_budget_folds_nothing_as_it_grows() -> None:
    """A share of exactly the last poll's series would fold the next user to log in."""
    budget = SeriesBudget(10_000, ["a", "b"])
    budget.report("a", {"m": 34})
    budget.report("b", {"m": 34})
    assert budget.limit("a", "m") + budget.limit("b", "m") == 10_000  # nothing left unused
    assert budget.limit("a", "m") >= 169


def test_a_small_gateway_beside_a_big_one_has_room_for_new_users() -> None:
    current = allocate({"big": 20_000, "small": 50}, 10_000)
    assert current == {"big": 9_940, "small": 60}
    assert allocate({"big": 20_000, "small": 60}, 10_000, current) == current
    grown = allocate({"big": 20_000, "small": 61}, 10_000, current)
    assert grown["small"] >= 61 and sum(grown.values()) == 10_000


def test_shares_never_exceed_the_budget_over_random_demands() -> None:
    rng = random.Random(7)
    for _ in range(300):
        demands = {f"g{i}": rng.choice([0, 1, 5, 50, 500, 5_000, 50_000])
                   for i in range(rng.randint(1, 12))}
        budget = rng.randint(len(demands), 60_000)
        shares, plain = allocate(demands, budget), water_fill(demands, budget)
        assert sum(shares.values()) == budget
        # Room to grow never costs a gateway what it would keep without.
        assert all(shares[name] >= demand for name, demand in demands.items()
                   if plain[name] >= demand)


def test_room_to_grow_is_left_out_where_it_would_cost_another_gateway_its_series() -> None:
    assert allocate({"a": 0, "b": 40}, 40) == {"a": 0, "b": 40}
