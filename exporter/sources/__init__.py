"""Where snapshots come from. One module per kind of gateway endpoint.

A source turns one gateway's HTTP answer into a `Snapshot` or raises `SourceError`. Nothing
else in the exporter knows which endpoint a gateway speaks, so a new source touches only this
package and the config's list of source names.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from exporter.clock import Clock
from exporter.config import GatewayConfig
from exporter.model import Snapshot
from exporter.sources.errors import Reason, SourceError
from exporter.sources.http import GatewayClient

__all__ = ["Reason", "Source", "SourceError", "make_source"]


class Source(Protocol):
    async def fetch(self) -> Snapshot:
        """Poll the gateway once. Raises `SourceError` with a reason on any failure."""
        ...


def make_source(gateway: GatewayConfig, session: aiohttp.ClientSession, clock: Clock) -> Source:
    from exporter.sources.rest import RestSource
    from exporter.sources.webdev import WebDevSource

    client = GatewayClient(gateway, session)
    if gateway.source == "rest":
        return RestSource(gateway, client, clock)
    return WebDevSource(gateway, client)
