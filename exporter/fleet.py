"""All the gateway pollers of one exporter, and the asyncio tasks that run them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp

from exporter.budget import SeriesBudget
from exporter.clock import Clock
from exporter.config import Config
from exporter.poller import GatewayPoller, GatewayStatus
from exporter.sources import make_source

SWITCH_INTERVAL = 0.001  # seconds; Python's default is 0.005


class Fleet:
    """Starts one task per gateway and keeps every task, so `stop()` can await them all."""

    def __init__(self, config: Config, clock: Clock, rng: random.Random | None = None,
                 prepare: Callable[[GatewayStatus], None] | None = None) -> None:
        self.config = config
        self._prepare = prepare  # readers' work on each new status, before it is published
        self._clock = clock
        self._rng = rng or random.Random()
        self.pollers: tuple[GatewayPoller, ...] = ()
        # Before start() every gateway is simply not up yet; made once, so readers that
        # cache by status identity (the /metrics body) see one unchanging status each.
        self._not_started = [GatewayStatus(gateway) for gateway in config.gateways]
        self._tasks: list[asyncio.Task[None]] = []
        self._cpu: ThreadPoolExecutor | None = None

    def start(self, session: aiohttp.ClientSession) -> None:
        # The series budget is shared by need (budget.py), so the total stays bounded.
        budget = SeriesBudget(self.config.max_series_per_metric,
                              [gateway.name for gateway in self.config.gateways])
        # One thread for every gateway's decoding and aggregation: the work is CPU-bound
        # Python, so more threads would only contend for the GIL; one keeps the event loop
        # free for scrapes while gateways are digested.
        self._cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest")
        # While that thread digests, the event loop's thread waits for the interpreter after
        # every socket read; by default up to 5 ms each time. At 1 ms a round of 20 gateways
        # measured 20 % faster and scrapes during it 2-10 times quicker.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.pollers = tuple(
            GatewayPoller(gateway, make_source(gateway, session, self._clock),
                          idle_after=self.config.idle_after, clock=self._clock, rng=self._rng,
                          privacy=self.config.privacy, max_series=budget, cpu=self._cpu,
                          prepare=self._prepare)
            for gateway in self.config.gateways
        )
        self._tasks = [asyncio.create_task(poller.run(), name=f"poll {poller.gateway.name}")
                       for poller in self.pollers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._cpu is not None:  # wait for a digest under way without blocking the loop
            await asyncio.to_thread(self._cpu.shutdown, wait=True, cancel_futures=True)
            self._cpu = None

    def statuses(self) -> list[GatewayStatus]:
        if not self.pollers:
            return list(self._not_started)
        return [poller.status for poller in self.pollers]
