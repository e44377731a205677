"""The simulated gateway's sessions log in and out with realistic durations, the same way for
the same seed. (Kept apart from the simulator's other tests, which are about its shapes.)"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from exporter.standins.simulator import GatewaySimulator
from tests.conftest import FakeClock


def run(seed: int, polls: int, every: float = 5.0) -> list[dict[str, object]]:
    """The WebDev documents a gateway answers to `polls` polls `every` seconds apart."""
    clock = FakeClock()
    simulator = GatewaySimulator(seed=seed, clock=clock, target_sessions=40)
    documents = [simulator.document()]
    for _ in range(polls):
        clock.advance(every)
        simulator.advance()
        documents.append(simulator.document())
    return documents


def ids(document: dict[str, object]) -> set[str]:
    return {s["id"] for s in document["perspective"]}  # type: ignore[attr-defined]


def test_same_seed_same_logins_and_logouts() -> None:
    assert run(3, 30) == run(3, 30)
    assert ids(run(3, 30)[-1]) != ids(run(4, 30)[-1])


def test_sessions_come_and_go_within_a_few_polls() -> None:
    documents = run(0, 24)  # two minutes at the demo's 5 s
    logins = sum(len(ids(b) - ids(a)) for a, b in pairwise(documents))
    logouts = sum(len(ids(a) - ids(b)) for a, b in pairwise(documents))
    assert logins >= 3 and logouts >= 3
    assert 30 <= len(ids(documents[-1])) <= 40  # the population stays near its target


def test_ages_range_from_a_minute_to_days() -> None:
    ages = [s["uptime"] / 1000 for d in (run(seed, 0)[0] for seed in range(5))
            for s in d["perspective"]]  # type: ignore[attr-defined]
    assert min(ages) < 60
    assert any(3600 < a < 86_400 for a in ages)
    assert max(ages) > 86_400
    clients = [s for seed in range(5) for s in run(seed, 0)[0]["vision"]]  # type: ignore[attr-defined]
    collected = run(0, 0)[0]["collectedAt"]
    assert all(c["creationTime"] <= collected for c in clients)


def test_no_user_holds_more_sessions_than_the_limit() -> None:
    clock = FakeClock()
    users = ("ann", "bob", "cy", "Unauthenticated", *(f"op{i}" for i in range(8)))
    simulator = GatewaySimulator(seed=2, clock=clock, target_sessions=40, users=users,
                                 max_sessions_per_user=4)
    most, sizes = 0, []
    for _ in range(200):
        clock.advance(5.0)
        simulator.advance()
        held = Counter(simulator.iter_usernames())
        most = max(most, *held.values())
        sizes.append(sum(held.values()))
    assert most == 4, "the limit binds, and holds"
    assert min(sizes[20:]) >= 30 and max(sizes) <= 40


def test_when_every_user_is_at_the_limit_nobody_more_logs_in() -> None:
    simulator = GatewaySimulator(seed=2, clock=FakeClock(), target_sessions=40,
                                 users=("ann", "Unauthenticated"), max_sessions_per_user=3)
    assert Counter(simulator.iter_usernames()) == {"ann": 3, "Unauthenticated": 3}


def test_users_filled_to_the_limit_each_hold_exactly_the_limit() -> None:
    # 1,000 users with 4 each is exactly 4,000: the last logins find nearly everyone at the
    # limit, where a few random draws no longer find a user below it.
    users = tuple(f"op{i:04d}" for i in range(1000))
    simulator = GatewaySimulator(seed=5, clock=FakeClock(), target_sessions=4000, users=users,
                                 max_sessions_per_user=4)
    assert Counter(Counter(simulator.iter_usernames()).values()) == {4: 1000}


def test_a_large_population_stays_near_its_target_and_keeps_changing() -> None:
    """`simulate --sessions 2000` fell from 1,989 to 1,419 in three minutes: one login a second
    at most could not replace the sessions found open as they ended. Each missing session now
    has its chance every second, so any target is held, and the sessions still come and go."""
    clock = FakeClock()
    simulator = GatewaySimulator(seed=1, clock=clock, target_sessions=2000, target_clients=200)
    before = ids(simulator.document())
    sessions, clients = [], []
    for _ in range(120):  # ten minutes at 5 s
        clock.advance(5.0)
        simulator.advance()
        document = simulator.document()
        sessions.append(len(document["perspective"]))  # type: ignore[arg-type]
        clients.append(len(document["vision"]))  # type: ignore[arg-type]
    assert min(sessions) >= 1980 and max(sessions) == 2000
    assert min(clients) >= 190 and max(clients) == 200
    assert len(before - ids(document)) >= 200, "sessions ended, and others took their place"


def test_a_gateway_of_anonymous_sessions_alone_starts_with_a_limit() -> None:
    """Wall screens and kiosks run Perspective without a login. A Designer session needs
    one, so it draws from no user at all: with a limit per user that was "nobody logs in";
    drawing before looking for users below the limit raised IndexError instead."""
    simulator = GatewaySimulator(seed=2, clock=FakeClock(), target_sessions=20,
                                 target_clients=0, users=("Unauthenticated",),
                                 max_sessions_per_user=3)
    assert Counter(simulator.iter_usernames()) == {"Unauthenticated": 3}
