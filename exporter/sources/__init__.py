"""Where snapshots come from. One module per kind of gateway endpoint.

A source works in two steps, kept apart because they want different places to run:
`fetch()` does the network part on the event loop and returns a `Decode`, a function that
does the CPU part (JSON to `Snapshot`) wherever the poller chooses, typically a worker
process. Either step raises `SourceError` with a reason. CPU work a fetch cannot leave to
the decode (a REST page to split before the next one is asked for) goes to the same workers
through `offload`. Nothing else in the exporter knows
which endpoint a gateway speaks, so a new source touches only this package and the config's
list of source names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from exporter.clock import Clock
from exporter.config import GatewayConfig
from exporter.model import Snapshot
from exporter.sources.errors import Reason, SourceError
from exporter.sources.http import GatewayClient

__all__ = ["Decode", "Offload", "Reason", "Source", "SourceError", "make_source"]

Decode = Callable[[], Snapshot]
# `offload(work, *arguments)`: `work(*arguments)` in the workers that decode and digest, so
# that no Python work in proportion to an answer runs in the event loop's process.
Offload = Callable[..., Awaitable[Any]]


class Source(Protocol):
    async def fetch(self) -> Decode:
        """Ask the gateway once; return the function that decodes its answer."""
        ...


def make_source(gateway: GatewayConfig, session: aiohttp.ClientSession, clock: Clock,
                offload: Offload | None = None) -> Source:
    """The gateway's source; without `offload`, what it would offload runs in place."""
    from exporter.sources.rest import RestSource
    from exporter.sources.webdev import WebDevSource

    client = GatewayClient(gateway, session)
    if gateway.source == "rest":
        return RestSource(gateway, client, clock, offload)
    return WebDevSource(gateway, client)
