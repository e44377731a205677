from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.digest.sent_bytes import GRACE_POLLS, SentBytes
from exporter.model import PerspectiveSession


class Counter:
    """Feeds polls to a `SentBytes` in order, as a poller does, keeping the latest state."""

    def __init__(self, remember: int | None = None) -> None:
        self.state = SentBytes() if remember is None else SentBytes(remember=remember)

    def observe(self, sessions: Sequence[PerspectiveSession]) -> Mapping[tuple[str, str], float]:
        self.state = self.state.after(sessions)
        return self.state.totals


def s(id: str, total: float | None, project: str = "P", scope: str = "browser"
      ) -> PerspectiveSession:
    return PerspectiveSession(id=id, project=project, session_scope=scope,
                              total_bytes_sent=total)


def test_example_from_the_contract() -> None:
    counter = Counter()
    assert counter.observe([s("A", 5000), s("B", 1000)]) == {("P", "browser"): 6000}
    assert counter.observe([s("A", 7000), s("C", 50)]) == {("P", "browser"): 8050}


def test_reset_adds_the_new_value() -> None:
    counter = Counter()
    counter.observe([s("A", 5000)])
    assert counter.observe([s("A", 300)]) == {("P", "browser"): 5300}
    assert counter.observe([]) == {("P", "browser"): 5300}
    # A came back within the grace: only its growth since it was last seen counts.
    assert counter.observe([s("A", 400)]) == {("P", "browser"): 5400}


def test_never_decreases_and_keeps_idle_keys() -> None:
    counter = Counter()
    totals = counter.observe([s("A", 100, scope="Browser"), s("B", 10, project="Q")])
    assert totals == {("P", "browser"): 100, ("Q", "browser"): 10}
    totals = counter.observe([s("A", 100, scope="Browser")])
    assert totals == {("P", "browser"): 100, ("Q", "browser"): 10}


def test_sessions_without_id_or_total_are_skipped() -> None:
    counter = Counter()
    assert counter.observe([s("A", None), PerspectiveSession(total_bytes_sent=99),
                            s("B", -5)]) == {}


def test_returned_totals_do_not_change_afterwards() -> None:
    counter = Counter()
    first = counter.observe([s("A", 10)])
    counter.observe([s("A", 30)])
    assert first == {("P", "browser"): 10}


def test_a_gateway_inventing_projects_cannot_grow_the_totals_for_ever() -> None:
    """Live label sets are always kept; of those without a session, only the `remember`
    most recently seen keep their totals (as for the lifecycle counters), so a gateway
    putting a new project name in every answer holds memory and series to a bound."""
    counter = Counter(remember=3)
    for poll in range(50):
        totals = counter.observe([s(f"x{poll}", 10, project=f"made-up-{poll}"),
                                  s("steady", 100 + poll)])
    assert len(totals) == 1 + 1 + 3  # the live made-up one, P, and three gone ones
    assert totals[("P", "browser")] == 149
    assert {key for key in totals if key[0].startswith("made-up-")} == {
        (f"made-up-{poll}", "browser") for poll in (46, 47, 48, 49)}


def test_integer_ids_whose_hashes_collide_keep_their_own_totals() -> None:
    """hash(-1) == hash(-2) in Python: with the bare hash, these two unchanging sessions
    shared one remembered total and the counter grew by 600 at every poll."""
    counter = Counter()
    sessions = [s(-1, 1000), s(-2, 400)]  # type: ignore[arg-type]
    assert counter.observe(sessions) == {("P", "browser"): 1400}
    assert counter.observe(sessions) == {("P", "browser"): 1400}


def test_a_state_is_never_changed_by_the_next_poll() -> None:
    """A failed poll keeps the state it had: `after` must leave its state as it was."""
    first = SentBytes().after([s("A", 10)])
    first.after([s("A", 30), s("B", 5)])
    assert first.totals == {("P", "browser"): 10}
    assert first.after([s("A", 30)]).totals == {("P", "browser"): 30}


def test_a_session_missing_for_a_few_polls_is_not_counted_again_when_back() -> None:
    """A list that drops a session for a poll or two (REST pages shifting while read) must
    not add the session's whole total again when it reappears."""
    counter = Counter()
    counter.observe([s("A", 5000), s("B", 100)])
    counter.observe([s("B", 100)])
    counter.observe([s("B", 100)])
    assert counter.observe([s("A", 5200), s("B", 100)]) == {("P", "browser"): 5300}


def test_a_gateway_alternating_two_lists_does_not_inflate_the_counter() -> None:
    counter = Counter()
    first, second = [s("A", 1000), s("B", 1000)], [s("C", 1000), s("D", 1000)]
    for _ in range(10):
        counter.observe(first)
        totals = counter.observe(second)
    assert totals == {("P", "browser"): 4000}


def test_a_session_missing_longer_than_the_grace_is_forgotten() -> None:
    counter = Counter()
    counter.observe([s("A", 5000)])
    for _ in range(GRACE_POLLS):
        counter.observe([])
    assert len(counter.state.missing_ids) == 1  # still followed
    counter.observe([])
    assert len(counter.state.missing_ids) == 0
    assert counter.observe([s("A", 5000)]) == {("P", "browser"): 10_000}  # new, in full


def test_a_gateway_renewing_every_id_holds_at_most_the_grace_of_missing_sessions() -> None:
    counter = Counter()
    for poll in range(20):
        counter.observe([s(f"{poll}-{i}", 10) for i in range(100)])
    assert len(counter.state.missing_ids) == GRACE_POLLS * 100
