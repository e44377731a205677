"""The poller with a fake clock and a scripted source: schedule, staleness, logging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import pytest

from exporter.config import GatewayConfig
from exporter.digest.budget import SeriesBudget
from exporter.model import Snapshot
from exporter.polling.poller import GatewayPoller, GatewayStatus
from exporter.polling.workers import WorkerProcesses
from exporter.sources import Reason
from tests.conftest import FakeClock
from tests.fakes import ScriptedSource, down, given
from tests.payloads import document, perspective, snapshot_of

GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=15, timeout=5,
                        stale_after=60)


GOOD = snapshot_of(document([perspective("A", total=5000), perspective("B", total=1000)]))


async def run_briefly(poller: GatewayPoller, turns: int) -> None:
    """Let `run()` go round the event loop `turns` times (the fake clock never waits)."""
    task = asyncio.create_task(poller.run())
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def poller(clock: FakeClock, source: ScriptedSource) -> GatewayPoller:
    return GatewayPoller(GATEWAY, source, idle_after=60, clock=clock)


async def test_success_then_failure_keeps_data_until_stale(clock: FakeClock) -> None:
    p = poller(clock, ScriptedSource(clock, GOOD, down()))
    status = await p.poll_once()
    assert status.up and status.last_duration == pytest.approx(0.25)
    assert status.current(clock.time()) is not None
    succeeded_at = status.last_success
    status = await p.poll_once()
    assert not status.up
    assert status.poll_errors[Reason.CONNECT] == 1
    assert status.last_success == succeeded_at
    clock.advance(59)
    assert status.current(clock.time()) is not None
    clock.advance(2)
    assert status.current(clock.time()) is None
    assert status.sent_bytes == {("Line1", "browser"): 6000}


async def test_errors_count_per_reason_and_start_at_zero(clock: FakeClock) -> None:
    p = poller(clock, ScriptedSource(clock, down(Reason.TIMEOUT), down(Reason.HTTP),
                                     down(Reason.HTTP)))
    assert p.status.poll_errors == dict.fromkeys(Reason, 0)
    for _ in range(3):
        await p.poll_once()
    assert p.status.poll_errors[Reason.TIMEOUT] == 1
    assert p.status.poll_errors[Reason.HTTP] == 2
    assert p.status.error is not None and p.status.error.reason is Reason.HTTP


async def test_one_log_line_per_state_change(clock: FakeClock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    p = poller(clock, ScriptedSource(clock, GOOD, GOOD, down(), down(), down(Reason.AUTH),
                                     GOOD, GOOD))
    caplog.set_level(logging.INFO, logger="exporter.polling.poller")
    for _ in range(7):
        await p.poll_once()
    lines = [(r.getMessage(), getattr(r, "reason", None)) for r in caplog.records]
    assert lines == [("gateway up", None), ("gateway down", "connect"),
                     ("gateway down", "auth"), ("gateway up", None)]


async def test_a_repeated_id_leaves_the_byte_counter_flat(clock: FakeClock) -> None:
    """One id listed twice with 1,000 and 400 bytes, never changing: 1,000 once, then flat
    (it used to grow by 600 every other poll)."""
    repeated = snapshot_of(document([perspective("A", total=1000), perspective("A", total=400)]))
    p = poller(clock, ScriptedSource(clock, repeated))
    totals = []
    for _ in range(5):
        status = await p.poll_once()
        totals.append(dict(status.sent_bytes))
    assert totals == [{("Line1", "browser"): 1000}] * 5
    assert status.invalid_sessions == 5  # the repeat, in each poll
    assert status.aggregates.total_perspective_sessions == 1


async def test_a_hanging_source_is_cut_by_the_poll_timeout() -> None:
    class Hanging:
        async def fetch(self) -> Callable[[], Snapshot]:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    from exporter.clock import SystemClock
    gateway = GatewayConfig(name="plant-a", url="http://gw", timeout=0.05)
    status = await GatewayPoller(gateway, Hanging(), idle_after=60,
                                 clock=SystemClock()).poll_once()
    assert status.error is not None and status.error.reason is Reason.TIMEOUT


async def test_an_unexpected_exception_costs_one_poll(clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    class Buggy:
        async def fetch(self) -> Callable[[], Snapshot]:
            def decode() -> Snapshot:
                raise KeyError("bug")
            return decode

    caplog.set_level(logging.INFO, logger="exporter.polling.poller")
    p = GatewayPoller(GATEWAY, Buggy(), idle_after=60, clock=clock)
    for _ in range(3):
        status = await p.poll_once()
    assert status.error is not None and status.error.reason is Reason.DECODE
    assert status.poll_errors[Reason.DECODE] == 3
    # One line for the change of state, with the exception named; no traceback, no ERROR.
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "gateway down")]
    assert caplog.records[0].detail == "unexpected KeyError while reading the answer: 'bug'"
    assert caplog.records[0].exc_info is None


async def test_schedule_is_fixed_rate_with_initial_jitter(clock: FakeClock) -> None:
    import random
    source = ScriptedSource(clock, GOOD, takes=2.0)
    p = GatewayPoller(GATEWAY, source, idle_after=60, clock=clock, rng=random.Random(7))
    await run_briefly(p, 20)
    jitter, *gaps = clock.sleeps
    assert 0 <= jitter <= GATEWAY.poll_interval * 0.1
    assert p.status.last_lag == 0.0
    # Each poll takes 2 s of the 15 s interval: the sleeps make up the rest exactly.
    assert gaps[:3] == [pytest.approx(13.0)] * 3


async def test_overrunning_poll_skips_missed_ticks(clock: FakeClock) -> None:
    source = ScriptedSource(clock, GOOD, takes=40.0)  # longer than two intervals
    await run_briefly(poller(clock, source), 6)
    gaps = clock.sleeps[1:]
    assert gaps[0] == pytest.approx(5.0)  # next tick on the 15 s grid, at 45 s
    assert all(0 < g <= 15 for g in gaps)


async def test_lag_is_how_late_a_poll_started() -> None:
    class OversleepingClock(FakeClock):
        """A busy event loop: every sleep ends 0.5 s after it should."""

        async def sleep(self, seconds: float) -> None:
            await super().sleep(seconds + 0.5)

    clock = OversleepingClock()
    p = poller(clock, ScriptedSource(clock, GOOD, takes=1.0))
    await run_briefly(p, 8)
    assert p.status.last_lag == pytest.approx(0.5)


def held_sessions(status: GatewayStatus) -> int:
    return len(status.perspective)


async def test_a_new_status_is_prepared_before_it_is_published(clock: FakeClock) -> None:
    seen: list[tuple[int, int, object]] = []
    poller: GatewayPoller

    class Readers:
        def work(self) -> Callable[[GatewayStatus], int]:
            return held_sessions

        def accept(self, status: GatewayStatus, prepared: object) -> None:
            seen.append((status.polls, poller.status.polls, prepared))

    poller = GatewayPoller(GATEWAY, ScriptedSource(clock, GOOD), idle_after=60, clock=clock,
                           prepare=Readers())
    await poller.poll_once()
    await poller.poll_once()
    # The work saw the digest's status; readers still saw the previous status meanwhile.
    assert seen == [(1, 0, 2), (2, 1, 2)]


async def test_a_shared_budget_serves_the_small_gateway_in_full(clock: FakeClock) -> None:
    big = snapshot_of(document([perspective(str(i), f"user{i}") for i in range(30)]))
    small = snapshot_of(document([perspective(f"s{i}", f"op{i}") for i in range(4)]))
    budget = SeriesBudget(20, ["big", "small"])
    pollers = [GatewayPoller(GatewayConfig(name=name, url="http://gw"),
                             ScriptedSource(clock, snap), idle_after=60, clock=clock,
                             max_series=budget)
               for name, snap in (("big", big), ("small", small))]
    for _ in range(3):
        statuses = [await p.poll_once() for p in pollers]
    big_status, small_status = statuses
    assert small_status.aggregates.folded["ignition_perspective_sessions"] == 0
    assert len(small_status.aggregates.perspective_sessions) == 4
    # The big one gets the 16 series the small one leaves, then folds the rest into one.
    assert big_status.aggregates.folded["ignition_perspective_sessions"] == 30 - 16
    assert len(big_status.aggregates.perspective_sessions) == 16 + 1


def spin() -> Snapshot:
    while True:
        pass


class SpinsOnce:
    """A source whose first answer takes for ever to digest; the next ones are GOOD."""

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self) -> Callable[[], Snapshot]:
        self.fetches += 1
        return spin if self.fetches == 1 else partial(given, GOOD)


async def test_a_digest_past_the_timeout_fails_the_poll_and_its_worker_carries_on(
        clock: FakeClock) -> None:
    workers = WorkerProcesses(1)
    gateway = replace(GATEWAY, timeout=0.3)
    poller = GatewayPoller(gateway, SpinsOnce(), idle_after=60, clock=clock, cpu=workers)
    try:
        failed = await poller.poll_once()
        recovered = await poller.poll_once()
    finally:
        await workers.close()
    assert failed.error is not None and failed.error.reason is Reason.TIMEOUT
    assert failed.error.detail == "digesting the answer took longer than 0.3s"
    assert recovered.up and len(recovered.perspective) == 2
    assert recovered.poll_errors[Reason.TIMEOUT] == 1


async def test_a_gateways_warnings_make_a_log_line_of_bounded_size(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The WebDev document's `warnings` are the gateway's text, logged whenever they change.
    Every other text a gateway sends is cut before it reaches a log line (a redirect's
    Location, an unexpected error's text); these were not: a broken or hostile gateway
    whose warnings change at every poll wrote a line as long as its answer (megabytes,
    escaped character by character on the event loop) at every poll."""
    from exporter.logs import LogfmtFormatter

    noisy = [replace(GOOD, warnings=(f"poll {n}: " + "\x07" * 500_000, *[f"w{i}" for i in
                                                                       range(10_000)]))
             for n in range(2)]
    p = poller(clock, ScriptedSource(clock, *noisy))
    with caplog.at_level(logging.WARNING):
        for _ in noisy:
            assert (await p.poll_once()).up
    lines = [LogfmtFormatter().format(r) for r in caplog.records
             if r.getMessage() == "gateway reports a problem"]
    assert len(lines) == 2
    longest = max(map(len, lines))
    assert longest < 10_000
