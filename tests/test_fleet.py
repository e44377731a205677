"""The fleet: one task per gateway, and the worker thread or processes for every gateway's
CPU work."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from exporter.clock import Clock, SystemClock
from exporter.config import Config, GatewayConfig
from exporter.digest.privacy import Privacy
from exporter.model import Snapshot
from exporter.polling.fleet import Fleet
from exporter.polling.poller import GatewayStatus
from exporter.sources import Decode, Offload, Reason, Source, make_source, webdev
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from tests.conftest import FakeClock, ServerFactory, eventually
from tests.fakes import ScriptedSource, SteppedClock, down
from tests.payloads import document, perspective, snapshot_of
from tests.processes import digest_workers, running


async def test_gateways_decode_off_the_event_loop_and_stop_cleanly(
        aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await aiohttp_server(simulator_app(GatewaySimulator(clock=FakeClock())))
    url = str(server.make_url(WEBDEV_PATH))
    config = Config(gateways=tuple(GatewayConfig(name=f"gw{i}", url=url, poll_interval=0.2,
                                                 timeout=0.2) for i in range(3)))
    threads: set[str] = set()
    real = webdev.decode_webdev

    def recording(body: bytes, gateway: str) -> object:
        threads.add(threading.current_thread().name)
        return real(body, gateway)

    monkeypatch.setattr(webdev, "decode_webdev", recording)
    fleet = Fleet(config, SystemClock())
    assert [s.up for s in fleet.statuses()] == [False, False, False]
    async with aiohttp.ClientSession() as http:
        fleet.start(http)
        await eventually(lambda: all(s.polls >= 2 for s in fleet.statuses()), what="polls")
        await fleet.stop()
    assert all(s.up for s in fleet.statuses())
    assert threads == {"digest_0"}  # every poll's decoding, none on the event loop
    assert not any(t.name.startswith("digest") for t in threading.enumerate())


async def test_worker_processes_live_and_die_with_the_fleet(
        aiohttp_server: ServerFactory) -> None:
    server = await aiohttp_server(simulator_app(GatewaySimulator(clock=FakeClock())))
    url = str(server.make_url(WEBDEV_PATH))
    config = Config(gateways=tuple(GatewayConfig(name=f"gw{i}", url=url, poll_interval=0.2,
                                                 timeout=0.2) for i in range(3)),
                    digest_processes=2)
    fleet = Fleet(config, SystemClock())
    async with aiohttp.ClientSession() as http:
        fleet.start(http)
        await eventually(lambda: all(s.polls >= 2 for s in fleet.statuses()), what="polls")
        workers = set(digest_workers())
        await fleet.stop()
    assert all(s.up for s in fleet.statuses())
    assert 1 <= len(workers) <= 2 and os.getpid() not in workers
    assert not any(map(running, workers))
    # The threads that handed polls over and shut the pools down end just after saying so.
    await eventually(lambda: not any(t.name.startswith("digest")
                                     for t in threading.enumerate()), what="threads to end")


def stall_when_armed(directory: str, decode: Decode) -> Snapshot:
    """Runs in a worker process. Once the test has created `armed`, the first digest writes
    its worker's pid and waits there to be killed; the others decode."""
    folder = Path(directory)
    if (folder / "armed").exists() and not (folder / "pid").exists():
        (folder / "pid").write_text(str(os.getpid()))
        time.sleep(600)
    return decode()


class Stalling:
    """The real source of each gateway; the named gateway's digests go through
    `stall_when_armed`."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory

    def __call__(self, config: GatewayConfig, session: aiohttp.ClientSession,
                 clock: Clock, offload: Offload | None) -> Source:
        source = make_source(config, session, clock, offload)
        return self._stalling(source) if config.name == self.name else source

    def _stalling(self, source: Source) -> Source:
        directory = str(self.directory)

        class StallingSource:
            async def fetch(self) -> Decode:
                return partial(stall_when_armed, directory, await source.fetch())

        return StallingSource()


def lifecycle_totals(status: GatewayStatus) -> tuple[int, int]:
    counts = [c for lc in (status.lifecycle.perspective, status.lifecycle.clients)
              for c in lc.shown.values()]
    return sum(c.started for c in counts), sum(c.ended for c in counts)


async def test_a_killed_worker_costs_one_poll_and_no_counter(
        aiohttp_server: ServerFactory, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A real gateway stand-in over loopback, real worker processes: the one digesting
    plant-a's poll is killed. That poll fails, plant-b carries on, and plant-a's next poll
    continues from the state of its last good one: the population does not change, so a
    state lost or hashed anew would count every session again."""
    server = await aiohttp_server(simulator_app(GatewaySimulator(clock=FakeClock(), seed=5,
                                                                 target_sessions=30)))
    url = str(server.make_url(WEBDEV_PATH))
    clock = SteppedClock()
    config = Config(gateways=(GatewayConfig(name="plant-a", url=url, poll_interval=10),
                              GatewayConfig(name="plant-b", url=url, poll_interval=10)),
                    digest_processes=2)
    fleet = Fleet(config, clock, random.Random(1), sources=Stalling("plant-a", tmp_path))
    async with aiohttp.ClientSession() as http:
        fleet.start(http)
        try:
            for seconds in (0, 10, 10):  # the first polls' random start, then two polls
                await settle(clock, fleet, seconds)
            good = by_name(fleet)
            (tmp_path / "armed").touch()
            await clock.step(10)
            await eventually((tmp_path / "pid").exists, what="plant-a's digest to start")
            await eventually(lambda: by_name(fleet)["plant-b"].polls == 3,
                             what="plant-b, meanwhile")
            os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
            await eventually(lambda: clock.asleep == 2, what="the poll to end")
            failed = by_name(fleet)["plant-a"]
            await settle(clock, fleet, 10)
            recovered = by_name(fleet)
        finally:
            await fleet.stop()
    assert good["plant-a"].up and good["plant-a"].polls == 2
    assert not failed.up and failed.error is not None
    assert failed.error.reason is Reason.DECODE and "worker process" in failed.error.detail
    assert failed.poll_errors[Reason.DECODE] == 1
    assert failed.lifecycle is good["plant-a"].lifecycle  # the state held stays as it was
    assert failed.sent_bytes is good["plant-a"].sent_bytes
    a = recovered["plant-a"]
    assert a.up and a.polls == 4 and a.poll_errors[Reason.DECODE] == 1
    assert a.sent_bytes == good["plant-a"].sent_bytes and sum(a.sent_bytes.values()) > 0
    assert lifecycle_totals(a) == lifecycle_totals(good["plant-a"]) == (0, 0)
    assert recovered["plant-b"].up and recovered["plant-b"].polls == 4
    died = [r for r in caplog.records if r.getMessage().startswith("a digest worker")]
    assert len(died) == 1 and died[0].levelno == logging.WARNING


# --- reload ------------------------------------------------------------------------------------

def gateway(name: str, timeout: float = 5) -> GatewayConfig:
    return GatewayConfig(name=name, url=f"http://{name}/sessions", poll_interval=10,
                         timeout=timeout, stale_after=40)


IDLE_ONE = snapshot_of(document([perspective("s1", "jsmith", "Line 1", "browser",
                                             last_comm=90_000)]))


class Sources:
    """Scripted sources by gateway name: `fail` ones refuse every poll, the rest answer."""

    def __init__(self, clock: SteppedClock, fail: set[str]) -> None:
        self.clock = clock
        self.fail = fail
        self.made: list[str] = []

    def __call__(self, config: GatewayConfig, _: aiohttp.ClientSession, __: object,
                 ___: object) -> ScriptedSource:
        self.made.append(config.name)
        answer = down() if config.name in self.fail else IDLE_ONE
        return ScriptedSource(self.clock, answer, takes=0)


FleetMaker = Callable[[Config, SteppedClock, Sources], Awaitable[Fleet]]


@pytest.fixture
async def fleet_of() -> AsyncIterator[FleetMaker]:
    """Makes started fleets on a stepped clock, and stops them after the test."""
    fleets: list[Fleet] = []
    async with aiohttp.ClientSession() as http:
        async def make(config: Config, clock: SteppedClock, sources: Sources) -> Fleet:
            fleet = Fleet(config, clock, random.Random(1), sources=sources)
            fleet.start(http)
            fleets.append(fleet)
            await settle(clock, fleet, 0)  # every task waits for its first poll
            return fleet

        yield make
        for fleet in fleets:
            await fleet.stop()


async def settle(clock: SteppedClock, fleet: Fleet, seconds: float) -> None:
    """Move time, then wait (in real time: digests run in the worker thread) until every
    poller has finished what it had to do and sleeps again."""
    await clock.step(seconds)
    await eventually(lambda: clock.asleep == len(fleet.pollers), what="pollers asleep")


def by_name(fleet: Fleet) -> dict[str, GatewayStatus]:
    return {status.gateway.name: status for status in fleet.statuses()}


async def test_reload_keeps_unchanged_gateways_and_replaces_the_rest(
        fleet_of: FleetMaker) -> None:
    clock = SteppedClock()
    sources = Sources(clock, fail={"b"})
    fleet = await fleet_of(Config(gateways=(gateway("a"), gateway("b"), gateway("c"))), clock,
                           sources)
    for _ in range(3):
        await settle(clock, fleet, 10)
    before = by_name(fleet)
    assert before["b"].poll_errors[Reason.CONNECT] == 3 and before["a"].up
    kept_a, kept_b = fleet.pollers[0], fleet.pollers[1]
    tasks = dict(fleet._tasks)

    changes = await fleet.reload(Config(gateways=(
        gateway("b"), gateway("a"), gateway("c", timeout=2), gateway("d"))))

    assert changes == {"kept": 2, "added": 1, "changed": 1, "removed": 0}
    assert [p.gateway.name for p in fleet.pollers] == ["b", "a", "c", "d"]
    assert fleet.pollers[0] is kept_b and fleet.pollers[1] is kept_a
    after = by_name(fleet)
    # Kept: the same statuses, counters and held sessions, until their next poll.
    assert after["a"] is before["a"] and after["b"] is before["b"]
    assert after["c"].polls == 0 and after["c"].gateway.timeout == 2  # changed: a new poller
    assert after["d"].polls == 0
    assert fleet._tasks[kept_b] is tasks[kept_b]  # the same task runs on
    assert sources.made == ["a", "b", "c", "c", "d"]
    await settle(clock, fleet, 10)
    after = by_name(fleet)
    assert after["b"].poll_errors[Reason.CONNECT] == 4  # counted on, not from zero
    assert after["a"].polls == 4 and after["c"].up and after["d"].up


async def test_reload_removes_gateways_and_their_tasks(fleet_of: FleetMaker) -> None:
    clock = SteppedClock()
    fleet = await fleet_of(Config(gateways=(gateway("a"), gateway("b"))), clock,
                           Sources(clock, fail=set()))
    await settle(clock, fleet, 10)
    task_b = fleet._tasks[fleet.pollers[1]]
    changes = await fleet.reload(Config(gateways=(gateway("a"),)))
    assert changes == {"kept": 1, "added": 0, "changed": 0, "removed": 1}
    assert list(by_name(fleet)) == ["a"]
    assert task_b.cancelled()  # cancelled and awaited by reload() itself
    assert len(fleet._tasks) == 1


async def test_top_level_settings_apply_to_kept_pollers(fleet_of: FleetMaker) -> None:
    clock = SteppedClock()
    fleet = await fleet_of(Config(gateways=(gateway("a"),), idle_after=60), clock,
                           Sources(clock, fail=set()))
    await settle(clock, fleet, 10)
    poller = fleet.pollers[0]
    assert poller.status.aggregates.scopes[("Line 1", "browser")].idle_sessions == 1
    await fleet.reload(Config(gateways=(gateway("a"),), idle_after=120,
                              sessions_endpoint=False))
    assert fleet.pollers[0] is poller and fleet.config.sessions_endpoint is False
    await settle(clock, fleet, 10)
    assert poller.status.aggregates.scopes[("Line 1", "browser")].idle_sessions == 0


async def test_a_new_username_policy_replaces_every_poller(
        fleet_of: FleetMaker) -> None:
    clock = SteppedClock()
    fleet = await fleet_of(Config(gateways=(gateway("a"), gateway("b"))), clock,
                           Sources(clock, fail=set()))
    await settle(clock, fleet, 10)
    old = fleet.pollers
    masked = await fleet.reload(Config(gateways=(gateway("a"), gateway("b")),
                                       privacy=Privacy(mask_addresses=True)))
    assert masked["kept"] == 2  # masking applies to /sessions as it answers: pollers stay
    assert fleet.pollers == old
    changes = await fleet.reload(Config(gateways=(gateway("a"), gateway("b")),
                                        privacy=Privacy(username_label="drop")))
    assert changes == {"kept": 0, "added": 0, "changed": 2, "removed": 0}
    assert not set(old) & set(fleet.pollers)
    await settle(clock, fleet, 10)
    labels = set(fleet.pollers[0].status.aggregates.perspective_sessions)
    assert labels == {("Line 1", "browser", "")}


async def test_reload_before_start_only_replaces_the_config() -> None:
    fleet = Fleet(Config(gateways=(gateway("a"),)), SteppedClock())
    await fleet.reload(Config(gateways=(gateway("x"), gateway("y"))))
    assert [s.gateway.name for s in fleet.statuses()] == ["x", "y"]
    assert not fleet.pollers


async def test_another_number_of_digest_processes_waits_for_a_restart(
        fleet_of: FleetMaker, caplog: pytest.LogCaptureFixture) -> None:
    clock = SteppedClock()
    fleet = await fleet_of(Config(gateways=(gateway("a"),)), clock, Sources(clock, fail=set()))
    changes = await fleet.reload(Config(gateways=(gateway("a"),), digest_processes=2))
    assert changes["kept"] == 1
    await settle(clock, fleet, 10)
    assert fleet.pollers[0].status.up
    assert not digest_workers()  # still the worker thread
    [warning] = [r for r in caplog.records if r.name == "exporter.polling.fleet"]
    assert warning.getMessage() == "digest_processes changes at the next start; the running " \
                                   "workers stay"
    assert (warning.digest_processes, warning.running) == (2, 0)  # type: ignore[attr-defined]


BIG = snapshot_of(document([perspective(str(i), f"user{i}") for i in range(30)]))
SMALL = snapshot_of(document([perspective(f"s{i}", f"op{i}") for i in range(4)]))


class Plant:
    """A big gateway and a small one, answering the same every poll."""

    def __init__(self, clock: SteppedClock) -> None:
        self.clock = clock

    def __call__(self, config: GatewayConfig, _: aiohttp.ClientSession, __: object,
                 ___: object) -> ScriptedSource:
        return ScriptedSource(self.clock, BIG if config.name == "big" else SMALL, takes=0)


def named_series(status: GatewayStatus) -> int:
    return sum(1 for key in status.aggregates.perspective_sessions if "__other__" not in key)


async def test_a_reload_that_changes_nothing_folds_no_more_series(
        fleet_of: FleetMaker) -> None:
    """The series budget is shared by need, learnt from each gateway's polls. A reload (a
    SIGHUP from configuration management, with nothing changed) must not send it back to
    equal shares: the big gateway's series would flap into __other__ and back."""
    clock = SteppedClock()
    config = Config(gateways=(gateway("big"), gateway("small")), max_series_per_metric=40)
    fleet = await fleet_of(config, clock, Plant(clock))  # type: ignore[arg-type]
    for _ in range(3):
        await settle(clock, fleet, 10)
    before = named_series(by_name(fleet)["big"])
    assert before > 40 // 2  # more than an equal share: the small one needs less
    await fleet.reload(config)
    shown = []
    for _ in range(3):
        await settle(clock, fleet, 10)
        shown.append(named_series(by_name(fleet)["big"]))
    assert shown == [before] * 3
