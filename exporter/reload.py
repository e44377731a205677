"""Configuration reload, on SIGHUP and on `POST /-/reload`, as Prometheus does it.

A reload reads the files again and, only if all of it is valid, hands what it read to the
application, which applies it (the fleet keeps the pollers of unchanged gateways). A bad file
is refused whole with one log line, and the running configuration stays. Reloads never
overlap: SIGHUP and the HTTP endpoint go through one lock.

A signal handler cannot await, so SIGHUP only sets an event; one task that lives and dies with
the application waits on it and runs the reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from exporter.clock import Clock
from exporter.config import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
# Reads the configuration (raising ConfigError when it is not valid), and applies it (returning
# what changed, for the log line).
Load = Callable[[], T]
Apply = Callable[[T], Awaitable[Mapping[str, object]]]


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """What `ignition_exporter_config_last_reload_*` show; replaced whole on every attempt."""

    successful: bool = True
    last_success: float = 0.0


class Reloader(Generic[T]):
    def __init__(self, load: Load[T], apply: Apply[T], clock: Clock) -> None:
        self._load = load
        self._apply = apply
        self._clock = clock
        self._lock = asyncio.Lock()
        self._requested = asyncio.Event()
        # The configuration read at start-up is the first successful load, as in Prometheus.
        self.status = ReloadStatus(True, clock.time())

    async def reload(self) -> None:
        """Read and apply the configuration. A ConfigError means it was refused and nothing
        changed; any other exception is a bug, and is raised after being counted."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(self._load)
                changes = await self._apply(loaded)
            except ConfigError as exc:
                self.status = replace(self.status, successful=False)
                log.error("configuration reload refused, the running configuration stays",
                          extra={"error": "; ".join(exc.shown)})
                raise
            except Exception:
                self.status = replace(self.status, successful=False)
                raise
            self.status = ReloadStatus(True, self._clock.time())
            log.info("configuration reloaded", extra=dict(changes))

    def request(self) -> None:
        """Ask for a reload from a signal handler; `watch()` runs it."""
        self._requested.set()

    async def watch(self) -> None:
        """Run the requested reloads, one at a time, until cancelled."""
        while True:
            await self._requested.wait()
            self._requested.clear()
            try:
                await self.reload()
            except ConfigError:
                pass  # refused and logged; the running configuration stays
            except Exception:  # a bug must cost one reload, not every later one
                log.exception("configuration reload failed")
