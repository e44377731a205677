"""The cached /metrics body is byte for byte what prometheus_client renders from the collector,
and it changes exactly when the data does."""

from __future__ import annotations

import gzip
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, PlatformCollector
from prometheus_client.exposition import choose_encoder

from exporter.config import GatewayConfig
from exporter.polling.poller import GatewayPoller, GatewayStatus, Work
from exporter.polling.workers import WorkerProcesses
from exporter.reload import ReloadStatus
from exporter.sources import Reason
from exporter.web.collector import SessionCollector
from exporter.web.exposition import (
    ESCAPED,
    FORMATS,
    OPENMETRICS,
    RUNTIME_REFRESH_SECONDS,
    TEXT,
    Exposition,
    Format,
    Rendered,
    negotiate,
)
from tests.conftest import FakeClock, require_tool
from tests.fakes import ScriptedSource, down
from tests.payloads import document, perspective, snapshot_of, vision

GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=15, timeout=5,
                        stale_after=60)
ACCEPTS = ["", "application/openmetrics-text; version=1.0.0",
           "application/openmetrics-text; version=2.0.0; escaping=allow-utf-8",
           "text/plain;version=1.0.0;escaping=allow-utf-8"]


def platform_only() -> CollectorRegistry:
    """Runtime collectors whose output does not change (python_info), for byte comparisons."""
    registry = CollectorRegistry(auto_describe=False)
    PlatformCollector(registry=registry)
    return registry


RUNTIME = platform_only()


def reference(pollers: list[GatewayPoller], clock: FakeClock, accept: str,
              with_username: bool = True, reload: ReloadStatus | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [p.status for p in pollers], clock,
                                       with_username, lambda: reload or ReloadStatus()))
    registry.register(RUNTIME)
    encoder, _ = choose_encoder(accept)
    return encoder(registry)


SNAPSHOT = snapshot_of(document(
    [perspective("A", 'O"Brien\\', "Line 1", "Browser", total=5000, last_comm=90_000),
     perspective("B", "jürgen\nx", "Line 1", "ios", total=10)],
    [vision("op", "Line 1"), vision("eng", "Q", designer=True, client_id="7C01")]))


async def pollers_with_data(clock: FakeClock) -> list[GatewayPoller]:
    a = GatewayPoller(GATEWAY, ScriptedSource(clock, SNAPSHOT, down(Reason.HTTP)), idle_after=60,
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
    exposition = Exposition(with_username, runtime=RUNTIME)
    fmt = negotiate(accept)

    def body(compress: bool = False) -> bytes:
        return exposition.body([p.status for p in pollers], clock.time(), fmt, compress)

    assert body() == reference(pollers, clock, accept, with_username)
    assert gzip.decompress(body(compress=True)) == body()
    await pollers[0].poll_once()  # now down, data still fresh
    assert body() == reference(pollers, clock, accept, with_username)
    clock.advance(GATEWAY.stale_after + 1)  # stale: session series go
    assert body() == reference(pollers, clock, accept, with_username)
    assert b"ignition_perspective_sessions{" not in body()


async def test_body_is_reused_until_something_changes(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition(runtime=RUNTIME)
    first = exposition.body([p.status for p in pollers], clock.time(), TEXT, False)
    again = exposition.body([p.status for p in pollers], clock.time(), TEXT, False)
    assert again is first
    await pollers[1].poll_once()
    changed = exposition.body([p.status for p in pollers], clock.time(), TEXT, False)
    assert changed is not first
    assert b'ignition_exporter_poll_errors_total{gateway="plant-b",reason="timeout"} 2.0' \
        in changed


@pytest.mark.parametrize(("accept", "expected"), [
    ("", TEXT),
    ("application/openmetrics-text; version=1.0.0", OPENMETRICS),
    ("application/openmetrics-text; version=1.0.7", OPENMETRICS),
    ("application/openmetrics-text; version=+1.0.5", TEXT),
    ("application/openmetrics-text; version= 1.0.5", OPENMETRICS),
    ("application/openmetrics-text; version=7.3.1; escaping=dots",
     ESCAPED[("application/openmetrics-text", "dots")]),
    ("application/openmetrics-text", OPENMETRICS),
    ("application/openmetrics-text; version=0.0.1", TEXT),
    ("application/openmetrics-text; version=abc", TEXT),
    ("text/plain; version=\u00b2", TEXT),  # a digit to str.isdigit, not to int
    ("application/openmetrics-text; version=1.\u00b2", TEXT),
    ("application/openmetrics-text; version=\u0661.0.0", TEXT),  # not an ASCII digit
    ("application/openmetrics-text; version=abc, application/openmetrics-text", OPENMETRICS),
    ("text/plain;version=1.0.0;escaping=allow-utf-8", TEXT),
    ("text/plain;version=1.0.0;escaping=dots", ESCAPED[("text/plain", "dots")]),
    ("text/plain;version=0.0.4;escaping=dots", TEXT),
    ("application/openmetrics-text;version=1.0.0;escaping=values",
     ESCAPED[("application/openmetrics-text", "values")]),
    ("application/openmetrics-text;escaping=values", OPENMETRICS),
    ("text/plain;q=0.9, application/openmetrics-text;q=0.5", TEXT),
    ("application/openmetrics-text;q=0, text/plain", TEXT),
    ("Application/OpenMetrics-Text; version=1.0.0", OPENMETRICS),
    # What Prometheus 2 and 3 send by default.
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OPENMETRICS),
    ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
     "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
     "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", OPENMETRICS),
])
def test_negotiation_picks_one_of_the_formats(accept: str, expected: Format) -> None:
    assert negotiate(accept) == expected


def test_content_types_are_the_exporters_own() -> None:
    assert [f.content_type for f in FORMATS] == [
        "text/plain; version=0.0.4; charset=utf-8",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "text/plain; version=1.0.0; charset=utf-8; escaping=dots",
        "text/plain; version=1.0.0; charset=utf-8; escaping=values",
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=dots",
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=values"]


@pytest.mark.parametrize(("accept", "served_as"), [
    ("text/plain;version=1.0.0;escaping=allow-utf-8", ""),
    ("text/plain;version=1.0.0;escaping=underscores", ""),
    ("application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
     "application/openmetrics-text"),
    ("application/openmetrics-text; version=2.0.0; escaping=allow-utf-8",
     "application/openmetrics-text"),
    ("application/openmetrics-text; version=2.0.0; escaping=dots",
     "application/openmetrics-text; version=1.0.0; escaping=dots"),
])
async def test_folded_renderings_are_identical(clock: FakeClock, accept: str,
                                               served_as: str) -> None:
    """Why there are so few formats: for this exporter's metrics the library renders these
    requests byte for byte as another one. If a new prometheus_client renders one of them
    differently, it needs a `Format` of its own."""
    pollers = await pollers_with_data(clock)
    assert reference(pollers, clock, accept) == reference(pollers, clock, served_as)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
async def test_every_format_renders_as_the_library(clock: FakeClock, fmt: Format) -> None:
    pollers = await pollers_with_data(clock)
    accept = fmt.content_type.replace("; charset=utf-8", "")
    assert Exposition(runtime=RUNTIME).body([p.status for p in pollers], clock.time(), fmt, False) \
        == reference(pollers, clock, accept)
    assert negotiate(accept) == fmt


async def test_clients_cannot_grow_the_cache(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition(runtime=RUNTIME)
    statuses = [p.status for p in pollers]
    first = exposition.body(statuses, clock.time(), OPENMETRICS, False)
    assert first == reference(pollers, clock, "application/openmetrics-text; version=1.0.0")
    for minor in range(1, 50):  # what used to add an entry each: made-up versions
        for accept in (f"application/openmetrics-text; version=1.0.{minor}",
                       f"application/openmetrics-text; version=+1.0.{minor}",
                       f"application/openmetrics-text; version= 1.0.{minor}",
                       f"text/plain; version=1.0.{minor}; escaping=dots"):
            fmt = negotiate(accept)
            exposition.body(statuses, clock.time(), fmt, minor % 2 == 0)
            assert exposition.cached_bodies <= len(FORMATS)
    assert exposition.body(statuses, clock.time(), OPENMETRICS, False) is first
    assert exposition.cached_bodies == 3  # OpenMetrics, text 0.0.4, text with dots


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
    exposition = Exposition(runtime=RUNTIME)
    for accept in ACCEPTS + [f.content_type.replace("; charset=utf-8", "") for f in FORMATS]:
        body = exposition.body([p.status for p in pollers], clock.time(), negotiate(accept),
                               False)
        assert body == reference(pollers, clock, accept)
    text = exposition.body([p.status for p in pollers], clock.time(), TEXT, False)
    assert text.count(b"# HELP ignition_perspective_session_age_seconds_gcount ") == 1
    assert b"(every 15s to 30s, by gateway)" in text
    assert b'ignition_perspective_sessions_ended_total{gateway="plant-b",project="Q"' in text
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


class CountingRuntime(CollectorRegistry):
    """Stands in for the process collectors: counts how often they are rendered."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self.renders = 0

    def collect(self):  # type: ignore[no-untyped-def]
        self.renders += 1
        yield from platform_only().collect()


async def test_runtime_metrics_are_rendered_at_most_once_a_second(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    runtime = CountingRuntime()
    exposition = Exposition(runtime=runtime)
    statuses = [p.status for p in pollers]
    bodies = [exposition.body(statuses, clock.time(), TEXT, compress)
              for compress in (False, True) for _ in range(20)]
    assert runtime.renders == 1
    assert gzip.decompress(bodies[-1]) == bodies[0]
    clock.advance(RUNTIME_REFRESH_SECONDS)
    plain = exposition.body(statuses, clock.time(), TEXT, False)
    zipped = exposition.body(statuses, clock.time(), TEXT, True)
    assert runtime.renders == 2 and plain is not bodies[0]
    assert gzip.decompress(zipped) == plain == bodies[0]  # python_info did not change
    clock.now -= 3600  # the wall clock stepped back: render again rather than never
    exposition.body(statuses, clock.time(), TEXT, False)
    assert runtime.renders == 3


async def test_default_runtime_has_process_and_python_metrics(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    body = Exposition().body([p.status for p in pollers], clock.time(), TEXT, False).decode()
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "python_info", "python_gc_objects_collected_total"):
        assert f"\n{family}" in body, family
    openmetrics = Exposition().body([p.status for p in pollers], clock.time(), OPENMETRICS,
                                    True)
    assert gzip.decompress(openmetrics).endswith(b"# EOF\n")


async def test_reload_status_changes_the_body(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition(runtime=RUNTIME)
    statuses = [p.status for p in pollers]
    ok = ReloadStatus(True, 1_795_000_000.0)
    first = exposition.body(statuses, clock.time(), TEXT, False, ok)
    assert b"ignition_exporter_config_last_reload_successful 1.0" in first
    failed = ReloadStatus(False, ok.last_success)
    second = exposition.body(statuses, clock.time(), TEXT, False, failed)
    assert b"ignition_exporter_config_last_reload_successful 0.0" in second
    assert second == reference(pollers, clock, "", reload=failed)
    assert b"ignition_exporter_config_last_reload_success_timestamp_seconds 1.795e+09" in second


async def test_removed_gateways_are_forgotten(clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition(runtime=RUNTIME)
    exposition.body([p.status for p in pollers], clock.time(), TEXT, False)
    body = exposition.body([pollers[0].status], clock.time(), TEXT, False)
    assert b'gateway="plant-b"' not in body
    assert body == reference(pollers[:1], clock, "")
    # Its rendered samples are not kept alive either: the only fragment left is plant-a's.
    assert {name for name, _ in exposition._fragments} == {"plant-a"}


class Recording:
    """The exposition as a poller's `Prepare`, recording what its workers rendered."""

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition
        self.accepted: list[object] = []

    def work(self) -> Work | None:
        return self.exposition.work()

    def accept(self, status: GatewayStatus, prepared: object) -> None:
        self.accepted.append(prepared)
        self.exposition.accept(status, prepared)


@pytest.mark.parametrize("with_username", [True, False])
async def test_samples_rendered_in_a_worker_process_are_the_librarys(
        clock: FakeClock, with_username: bool) -> None:
    exposition = Exposition(with_username, runtime=RUNTIME)
    recording = Recording(exposition)
    workers = WorkerProcesses(1)
    pollers = await pollers_with_data(clock)
    a = GatewayPoller(GATEWAY, ScriptedSource(clock, SNAPSHOT),
                      idle_after=60, clock=clock, cpu=workers, prepare=recording)
    try:
        await a.poll_once()  # nothing served yet: nothing to render
        statuses = [a.status, pollers[1].status]
        exposition.body(statuses, clock.time(), OPENMETRICS, False)
        assert exposition.body(statuses, clock.time(), TEXT, False) \
            == reference([a, pollers[1]], clock, "", with_username)
        await a.poll_once()
    finally:
        await workers.close()
    assert [type(r) for r in recording.accepted] == [Rendered]
    assert sorted(recording.accepted[0].lines) == ["openmetrics", "text"]  # type: ignore
    for accept in ("", "application/openmetrics-text; version=1.0.0"):
        assert exposition.body([a.status, pollers[1].status], clock.time(), negotiate(accept),
                               False) == reference([a, pollers[1]], clock, accept,
                                                   with_username)


async def test_a_rendering_made_under_another_username_policy_is_not_used(
        clock: FakeClock) -> None:
    pollers = await pollers_with_data(clock)
    exposition = Exposition(True, runtime=RUNTIME)
    exposition.body([p.status for p in pollers], clock.time(), TEXT, False)
    work = exposition.work()
    assert work is not None
    made = work(pollers[0].status)
    exposition.configure(with_username=False)  # a reload, while the worker rendered
    exposition.accept(pollers[0].status, made)
    assert exposition.body([p.status for p in pollers], clock.time(), TEXT, False) \
        == reference(pollers, clock, "", with_username=False)
