"""All the gateway pollers of one exporter, and the asyncio tasks that run them.

The fleet also holds the running `Config`: the one place readers consult, replaced whole by
`reload()`. A reload keeps what did not change: a gateway whose settings are equal keeps its
poller, so its counters, its held sessions and its schedule carry on; removed gateways' tasks
are cancelled and awaited, and their series disappear with their statuses; added and changed
ones get a new poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Callable, Iterable
from functools import partial

import aiohttp

from exporter.clock import Clock
from exporter.config import Config, GatewayConfig
from exporter.digest.budget import SeriesBudget
from exporter.polling.poller import GatewayPoller, GatewayStatus, Prepare
from exporter.polling.workers import Workers, workers
from exporter.sources import Offload, Source, make_source

log = logging.getLogger(__name__)
SourceFactory = Callable[[GatewayConfig, aiohttp.ClientSession, Clock, Offload | None], Source]


def _same_labels(old: Config, new: Config) -> bool:
    """Whether the pollers' username labels are made the same way under both."""
    return (old.privacy.username_label, old.privacy.hash_key) \
        == (new.privacy.username_label, new.privacy.hash_key)


def series_budget(config: Config) -> SeriesBudget:
    """The series budget is shared by need (budget.py), so the total stays bounded; a reload
    carries it over to the new set of gateways (`SeriesBudget.carried`)."""
    return SeriesBudget(config.max_series_per_metric,
                        [gateway.name for gateway in config.gateways])


def _summary(kept: Iterable[GatewayConfig], started: Iterable[GatewayConfig],
             gone: Iterable[GatewayPoller]) -> dict[str, int]:
    """What a reload did, for its log line: a gateway both started and gone was changed."""
    gone_names = {poller.gateway.name for poller in gone}
    started_names = {gateway.name for gateway in started}
    return {"kept": len(list(kept)), "added": len(started_names - gone_names),
            "changed": len(started_names & gone_names),
            "removed": len(gone_names - started_names)}


SWITCH_INTERVAL = 0.001  # seconds; Python's default is 0.005
# What worker processes import before their first poll: the digest and the sources' decoders.
PRELOAD = ("exporter.polling.poller", "exporter.sources.webdev", "exporter.sources.rest")


class Fleet:
    """Starts one task per gateway and keeps every task, so `stop()` can await them all."""

    def __init__(self, config: Config, clock: Clock, rng: random.Random | None = None,
                 prepare: Prepare | None = None,
                 sources: SourceFactory = make_source) -> None:
        self.config = config
        self._prepare = prepare  # readers' work on each new status, before it is published
        self._clock = clock
        self._rng = rng or random.Random()
        self._sources = sources
        self.pollers: tuple[GatewayPoller, ...] = ()
        self._not_started = self._not_started_statuses(config)
        self._tasks: dict[GatewayPoller, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._cpu: Workers | None = None
        self._processes = config.digest_processes  # the running workers' number, once started
        self._budget = series_budget(config)

    @staticmethod
    def _not_started_statuses(config: Config) -> list[GatewayStatus]:
        # Before start() every gateway is simply not up yet; made once, so readers that
        # cache by status identity (the /metrics body) see one unchanging status each.
        return [GatewayStatus(gateway) for gateway in config.gateways]

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._budget = series_budget(self.config)
        self._processes = self.config.digest_processes
        # The module of the readers' work is preloaded too: the workers run it.
        preload = PRELOAD + ((type(self._prepare).__module__,) if self._prepare else ())
        self._cpu = workers(self._processes, preload)
        # While that thread digests, the event loop's thread waits for the interpreter after
        # every socket read; by default up to 5 ms each time. At 1 ms a round of 20 gateways
        # measured 20 % faster and scrapes during it 2-10 times quicker.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.pollers = tuple(self._poller(gateway) for gateway in self.config.gateways)
        self._run(self.pollers)

    def _poller(self, gateway: GatewayConfig) -> GatewayPoller:
        assert self._session is not None, "start() first"
        offload = partial(self._cpu.run, gateway.timeout) if self._cpu is not None else None
        return GatewayPoller(gateway, self._sources(gateway, self._session, self._clock, offload),
                             idle_after=self.config.idle_after, clock=self._clock,
                             rng=self._rng, privacy=self.config.privacy,
                             max_series=self._budget,
                             max_projects=self.config.max_projects_per_gateway,
                             cpu=self._cpu, prepare=self._prepare)

    def _run(self, pollers: Iterable[GatewayPoller]) -> None:
        for poller in pollers:
            self._tasks[poller] = asyncio.create_task(poller.run(),
                                                      name=f"poll {poller.gateway.name}")

    async def _cancel(self, pollers: Iterable[GatewayPoller]) -> None:
        tasks = [self._tasks.pop(poller) for poller in pollers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reload(self, config: Config) -> dict[str, int]:
        """Switch to `config`, keeping the pollers of gateways whose settings are equal.

        Username labels made another way (`username_label`, the hash key) change every
        gateway's data, so then no poller is kept.
        Returns how many gateways were kept, added, changed and removed.
        """
        same_labels = _same_labels(self.config, config)
        if self._cpu is not None and config.digest_processes != self._processes:
            log.warning("digest_processes changes at the next start; the running workers stay",
                        extra={"digest_processes": config.digest_processes,
                               "running": self._processes})
        self.config = config
        self._not_started = self._not_started_statuses(config)
        if self._session is None:  # not started yet: start() will use the new config
            return {"gateways": len(config.gateways)}
        self._budget = self._budget.carried(config.max_series_per_metric,
                                            [gateway.name for gateway in config.gateways])
        running = {poller.gateway: poller for poller in self.pollers} if same_labels else {}
        kept = {gateway: running.pop(gateway) for gateway in config.gateways
                if gateway in running}
        for poller in kept.values():
            poller.retune(idle_after=config.idle_after, max_series=self._budget,
                          max_projects=config.max_projects_per_gateway)
        fresh = {gateway: self._poller(gateway) for gateway in config.gateways
                 if gateway not in kept}
        staying = set(kept.values())
        gone = [poller for poller in self.pollers if poller not in staying]
        # Readers switch to the new set at once; then the old tasks are awaited.
        self.pollers = tuple(kept.get(g) or fresh[g] for g in config.gateways)
        self._run(fresh.values())
        await self._cancel(gone)
        return _summary(kept, fresh, gone)

    async def stop(self) -> None:
        self._session = None
        await self._cancel(list(self._tasks))
        if self._cpu is not None:  # waits for a digest under way, not blocking the loop
            await self._cpu.close()
            self._cpu = None

    def statuses(self) -> list[GatewayStatus]:
        if not self.pollers:
            return list(self._not_started)
        return [poller.status for poller in self.pollers]
