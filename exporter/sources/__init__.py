"""Where snapshots come from. One module per kind of gateway endpoint.

A source works in two steps, kept apart because they want different places to run:
`fetch()` does the network part on the event loop and returns a `Decode`, a function that
does the CPU part (JSON to `Snapshot`) wherever the poller chooses, typically a worker
thread. Either step raises `SourceError` with a reason. Nothing else in the exporter knows
which endpoint a gateway speaks, so a new source touches only this package and the config's
list of source names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import aiohttp

from exporter.clock import Clock
from exporter.config import GatewayConfig
from exporter.model import Snapshot
from exporter.sources.errors import Reason, SourceError
from exporter.sources.http import GatewayClient

__all__ = ["Decode", "Reason", "Source", "SourceError", "make_source"]

Decode = Callable[[], Snapshot]


class Source(Protocol):
    async def fetch(self) -> Decode:
        """Ask the gateway once; return the function that decodes its answer."""
        ...


def make_source(gateway: GatewayConfig, session: aiohttp.ClientSession, clock: Clock) -> Source:
    from exporter.sources.rest import RestSource
    from exporter.sources.webdev import WebDevSource

    client = GatewayClient(gateway, session)
    if gateway.source == "rest":
        return RestSource(gateway, client, clock)
    return WebDevSource(gateway, client)
