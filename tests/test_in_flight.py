"""The budgets of /sessions answers under way."""

from __future__ import annotations

import pytest

from exporter.web.in_flight import Busy, InFlight


def test_answers_fit_within_both_budgets() -> None:
    in_flight = InFlight(budget=10, per_client=6)
    with in_flight.slot("a", 6), in_flight.slot("b", 4):
        assert in_flight.total == 10
        with pytest.raises(Busy) as refused, in_flight.slot("c", 1):
            pytest.fail("admitted past its budget")
        assert refused.value.client is None  # the budget, not the client's share
    with in_flight.slot("a", 4):
        with pytest.raises(Busy) as refused, in_flight.slot("a", 3):
            pytest.fail("admitted past its budget")
        assert refused.value.client == "a"
        with in_flight.slot("b", 6):  # another client's share is its own
            assert in_flight.total == 10
    assert in_flight.total == 0


def test_an_answer_alone_is_sent_whatever_its_size() -> None:
    """Past the budget only beside others: any answer can be had, one at a time."""
    in_flight = InFlight(budget=10, per_client=5)
    with in_flight.slot("a", 100), pytest.raises(Busy), in_flight.slot("b", 1):
        pytest.fail("admitted past its budget")
    assert in_flight.total == 0


def test_an_answer_that_fails_gives_its_room_back() -> None:
    in_flight = InFlight(budget=10, per_client=10)
    with pytest.raises(ConnectionError), in_flight.slot("a", 7):
        raise ConnectionError
    with in_flight.slot("b", 10):
        assert in_flight.total == 10
