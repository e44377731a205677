"""Stand-ins for a source, for tests of the poller and of what is built from its statuses."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from functools import partial

from aiohttp.test_utils import TestServer

from exporter.model import Snapshot
from exporter.sources import Reason, SourceError
from exporter.standins.faults import CredentialTrap, Fault, FaultyGateway, faulty_app, trap_app
from exporter.standins.simulator import GatewaySimulator
from tests.conftest import FakeClock, ServerFactory


class ScriptedSource:
    """Answers each fetch with the next scripted snapshot or error; time passes per fetch."""

    def __init__(self, clock: FakeClock, *answers: Snapshot | SourceError,
                 takes: float = 0.25) -> None:
        self.clock = clock
        self.answers = deque(answers)
        self.takes = takes
        self.fetches = 0

    async def fetch(self) -> Callable[[], Snapshot]:
        self.fetches += 1
        self.clock.advance(self.takes)
        answer = self.answers.popleft() if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, SourceError):
            raise answer
        return partial(given, answer)


def given(snapshot: Snapshot) -> Snapshot:
    """A decode whose answer is already a snapshot (a function by name: it also travels to a
    worker process)."""
    return snapshot


def down(reason: Reason = Reason.CONNECT) -> SourceError:
    return SourceError("plant-a", reason, "refused")


async def redirecting_away(aiohttp_server: ServerFactory
                           ) -> tuple[FaultyGateway, TestServer, CredentialTrap, TestServer]:
    """A gateway stand-in that redirects every request to another origin, and that origin,
    which records any credentials it receives."""
    trap = CredentialTrap()
    elsewhere = await aiohttp_server(trap_app(trap))
    gateway = FaultyGateway(GatewaySimulator(seed=3), mode=Fault.REDIRECT_AWAY,
                            redirect_to=str(elsewhere.make_url("")).rstrip("/"))
    return gateway, await aiohttp_server(faulty_app(gateway)), trap, elsewhere


class SteppedClock(FakeClock):
    """A fake clock whose `sleep` waits until the test moves time past its end (`step`), so
    tasks that poll on a schedule run exactly as often as the test says, never in a spin."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.mono + seconds, wake))
        await wake

    @property
    def asleep(self) -> int:
        """How many tasks are sleeping on this clock now."""
        return sum(not wake.done() for _, wake in self._sleepers)

    async def step(self, seconds: float) -> None:
        """Move time forward and let every task whose sleep ended run until it waits again."""
        self.advance(seconds)
        due = [wake for at, wake in self._sleepers if at <= self.mono]
        self._sleepers = [(at, w) for at, w in self._sleepers if at > self.mono and not w.done()]
        for wake in due:
            if not wake.done():
                wake.set_result(None)
        for _ in range(20):
            await asyncio.sleep(0)
