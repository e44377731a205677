"""The cached /metrics body is byte for byte what prometheus_client renders from the collector,
and it changes exactly when the data does."""

from __future__ import annotations

import gzip
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.collector import SessionCollector
from exporter.config import GatewayConfig
from exporter.exposition import Exposition, negotiate
from exporter.poller import GatewayPoller
from exporter.sources import Reason
from tests.conftest import FakeClock, require_tool
from tests.fakes import ScriptedSource, down
from tests.payloads import document, perspective, snapshot_of, vision

GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=15, timeout=5,
                        stale_after=60)
ACCEPTS = ["", "application/openmetrics-text; version=1.0.0",
           "text/plain;version=1.0.0;escaping=allow-utf-8"]


def reference(pollers: list[GatewayPoller], clock: FakeClock, accept: str,
              with_username: bool = True) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [p.status for p in pollers], clock,
                                       with_username))
    encoder, _ = choose_encoder(accept)
    return encoder(registry)


async def pollers_with_data(clock: FakeClock) -> list[GatewayPoller]:
    snap = snapshot_of(document(
        [perspective("A", 'O"Brien\\', "Line 1", "Browser", total=5000, last_comm=90_000),
         perspective("B", "jürgen\nx", "Line 1", "ios", total=10)],
        [vision("op", "Line 1"), vision("eng", "Q", designer=True, client_id="7C01")]))
    a = GatewayPoller(GATEWAY, ScriptedSource(clock, snap, down(Reason.HTTP)), idle_after=60,
                      clock=clock)
    b = GatewayPoller(replace(GATEWAY, name="plant-b", session_limit=50),
                      ScriptedSource(clock, down(Reason.TIMEOUT)), idle_after=60, clock=clock)
    await a.poll_once()
    await b.poll_once()
    return [a, b]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("with_username", [True, False])
async def test_same_bytes_as_prometheus_client(clock: FakeClock, accept: str,
                                               with_username: bool) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition(with_username)
    encoder, content_type = choose_encoder(accept)

    def body(compress: bool = False) -> bytes:
        return exposition.body([p.status for p in pollers], clock.time(), encoder, content_type,
                               compress)

    assert body() == reference(pollers, clock, accept, with_username)
    assert gzip.decompress(body(compress=True)) == body()
    await pollers[0].poll_once()  # now down, data still fresh
    assert body() == reference(pollers, clock, accept, with_username)
    clock.advance(GATEWAY.stale_after + 1)  # stale: session series go
    assert body() == reference(pollers, clock, accept, with_username)
    assert b"ignition_perspective_sessions{" not in body()


async def test_body_is_reused_until_something_changes(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition()
    encoder, content_type = choose_encoder("")
    first = exposition.body([p.status for p in pollers], clock.time(), encoder, content_type,
                            False)
    again = exposition.body([p.status for p in pollers], clock.time(), encoder, content_type,
                            False)
    assert again is first
    await pollers[1].poll_once()
    changed = exposition.body([p.status for p in pollers], clock.time(), encoder, content_type,
                              False)
    assert changed is not first
    assert b'ignition_exporter_poll_errors_total{gateway="plant-b",reason="timeout"} 2.0' \
        in changed


@pytest.mark.parametrize(("accept", "expected"), [
    ("", "text/plain; version=0.0.4; charset=utf-8"),
    ("application/openmetrics-text; version=1.0.0",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("application/openmetrics-text; version=1.0.7",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("application/openmetrics-text; version=7.3.1; escaping=dots",
     "application/openmetrics-text; version=2.0.0; charset=utf-8; escaping=dots"),
    ("text/plain;version=1.0.0;escaping=allow-utf-8",
     "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
])
def test_negotiation_reduces_made_up_versions(accept: str, expected: str) -> None:
    assert negotiate(accept)[1] == expected


async def test_clients_cannot_grow_the_cache_with_versions(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition()
    statuses = [p.status for p in pollers]
    canonical = negotiate("application/openmetrics-text; version=1.0.0")
    first = exposition.body(statuses, clock.time(), *canonical, False)
    assert first == reference(pollers, clock, "application/openmetrics-text; version=1.0.0")
    for minor in range(1, 50):  # each made-up version is served the one cached body
        encoder, content_type = negotiate(f"application/openmetrics-text; version=1.0.{minor}")
        assert exposition.body(statuses, clock.time(), encoder, content_type, False) is first


async def test_lifecycle_families_of_several_gateways(clock: FakeClock) -> None:
    """Two gateways with lifecycle data and different poll intervals: same bytes as
    prometheus_client in every format (the text format renders the age's _gcount and _gsum
    as gauges of their own), and promtool accepts the text."""
    first = snapshot_of(document([perspective("A", project="P"), perspective("B", project="Q")]))
    second = snapshot_of(document([perspective("A", project="P"), perspective("C")]))
    pollers = [GatewayPoller(replace(GATEWAY, name=name, poll_interval=interval),
                             ScriptedSource(clock, first, second), idle_after=60, clock=clock)
               for name, interval in (("plant-a", 15), ("plant-b", 30))]
    for _ in range(2):
        for poller in pollers:
            await poller.poll_once()
    exposition = Exposition()
    for accept in ACCEPTS:
        encoder, content_type = choose_encoder(accept)
        body = exposition.body([p.status for p in pollers], clock.time(), encoder,
                               content_type, False)
        assert body == reference(pollers, clock, accept)
    text = exposition.body([p.status for p in pollers], clock.time(), *choose_encoder(""),
                           False)
    assert text.count(b"# HELP ignition_perspective_session_age_seconds_gcount ") == 1
    assert b"(every 15s to 30s, by gateway)" in text
    assert b'ignition_perspective_sessions_ended_total{gateway="plant-b",project="Q"' in text
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
