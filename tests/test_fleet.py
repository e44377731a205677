"""The fleet: one task per gateway, one worker thread for every gateway's CPU work."""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from exporter.clock import SystemClock
from exporter.config import Config, GatewayConfig
from exporter.digest.privacy import Privacy
from exporter.polling.fleet import Fleet
from exporter.polling.poller import GatewayStatus
from exporter.sources import Reason, webdev
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from tests.conftest import FakeClock, ServerFactory, eventually
from tests.fakes import ScriptedSource, SteppedClock, down
from tests.payloads import document, perspective, snapshot_of


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

    def __call__(self, config: GatewayConfig, _: aiohttp.ClientSession,
                 __: object) -> ScriptedSource:
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
