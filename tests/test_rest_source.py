"""The Ignition 8.3 REST API source against the simulator's REST stand-in, over real HTTP.

The stand-in answers with the shapes captured from live 8.3 gateways
(see `exporter/standins/simulator.py`): the `{"items", "metadata": {"total"}}` envelope,
Vision and Designer items with `user`/`id`/`uptime`, a JSON 404 for a module that is not
installed, Jetty's HTML error pages, `/welcome` for an uncommissioned gateway, API keys as
`<name>:<secret>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from exporter.config import GatewayConfig
from exporter.digest.aggregate import aggregate
from exporter.model import PerspectiveSession
from exporter.polling.fleet import PRELOAD
from exporter.polling.poller import GatewayPoller
from exporter.polling.workers import Workers, workers
from exporter.sources import Reason, SourceError, make_source
from exporter.sources.rest import (
    FORBIDDEN,
    NOT_RECOGNISED,
    creation_time,
    normalise_last_comm,
)
from exporter.standins.faults import Fault, FaultyGateway, faulty_app
from exporter.standins.simulator import REST_PATHS, WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.web.collector import SessionCollector
from tests.conftest import FakeClock, ServerFactory, eventually, poll_source
from tests.fakes import redirecting_away
from tests.metrics import samples
from tests.payloads import document, encode, perspective, rest_designer, rest_page, rest_vision

VERSION = "8.3.6 (b2026042713)"
KEY = "exporter:Zq3v9XbT0kP2wL7m"  # an 8.3 API key: its name, a colon, its secret


def rest_gateway(url: str, **options: Any) -> GatewayConfig:
    settings: dict[str, Any] = {"source": "rest", "timeout": 5.0, "page_size": 7,
                                "token_header": "X-Ignition-API-Token"}
    settings.update(options)
    return GatewayConfig(name="plant-83", url=url, **settings)


def simulator(clock: FakeClock, **options: Any) -> GatewaySimulator:
    settings: dict[str, Any] = {"seed": 2, "clock": clock, "version": VERSION,
                                "target_sessions": 30, "target_clients": 12}
    settings.update(options)
    return GatewaySimulator(**settings)


class CountingRequests:
    """Remembers each request's path and query, to check the paging."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.query)))
        return await handler(request)


async def rest_server(aiohttp_server: ServerFactory, sim: GatewaySimulator,
                      **options: Any) -> tuple[str, CountingRequests]:
    app = simulator_app(sim, shape="rest", **options)
    counter = CountingRequests()
    app.middlewares.append(counter.middleware)
    server = await aiohttp_server(app)
    return str(server.make_url("/")), counter


async def poll_standin(aiohttp_server: ServerFactory, http: aiohttp.ClientSession,
                       clock: FakeClock, **options: Any) -> tuple[GatewaySimulator, Any]:
    """A REST stand-in built with `options`, and the snapshot of one poll of it."""
    sim = simulator(clock, **options)
    url, _ = await rest_server(aiohttp_server, sim)
    return sim, await poll_source(make_source(rest_gateway(url), http, clock))


async def test_vision_and_designer_sessions_carry_their_usernames(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    sim, snapshot = await poll_standin(aiohttp_server, http, clock)
    vision = sim.rest_client_items(designer=False)
    designers = sim.rest_client_items(designer=True)
    assert vision and designers
    got = {(c.client_id, c.username, c.project, c.kind) for c in snapshot.clients}
    assert got == ({(i["id"], i["user"], i["project"], "vision") for i in vision}
                   | {(i["id"], i["user"], i["project"], "designer") for i in designers})
    assert all(c.username for c in snapshot.clients)
    uptimes = {i["id"]: i["uptime"] for i in vision + designers}
    assert {c.client_id: clock.time() * 1000 - c.creation_time for c in snapshot.clients} \
        == uptimes
    numbers = aggregate(snapshot, 60)
    assert sum(numbers.client_sessions.values()) == len(vision) + len(designers)


async def test_the_captured_client_shapes(aiohttp_server: ServerFactory,
                                         http: aiohttp.ClientSession) -> None:
    """The items of a live 8.3.6 gateway, as captured: `user`, `id`, `uptime` in ms."""
    answers = {REST_PATHS["perspective"]: rest_page([]),
               REST_PATHS["vision"]: rest_page([rest_vision()]),
               REST_PATHS["designer"]: rest_page([rest_designer()]),
               "/data/api/v1/gateway-info": {"name": "ign-live", "redundancyRole": "Independent",
                                             "ignitionVersion": VERSION}}
    def answer(body: Any) -> Any:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response(body)
        return handler

    app = web.Application()
    for path, body in answers.items():
        app.router.add_get(path, answer(body))
    server = await aiohttp_server(app)
    clock = FakeClock()
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             clock))
    now_ms = clock.time() * 1000
    assert [(c.client_id, c.username, c.project, c.address, c.kind, c.creation_time)
            for c in snapshot.clients] == [
        ("v-1", "operator", "PlantFloor", "10.0.0.9:443", "vision", now_ms - 120_000),
        ("d-1", "admin", "MyProject", "192.168.1.50:52526", "designer", now_ms - 600_000)]
    assert (snapshot.reported_name, snapshot.version, snapshot.redundancy_role) == (
        "ign-live", VERSION, "Independent")


async def test_rest_clients_are_kept_for_sessions_as_the_gateway_sent_them(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    sim, snapshot = await poll_standin(aiohttp_server, http, FakeClock())
    sent = sim.rest_client_items(designer=False) + sim.rest_client_items(designer=True)
    assert [json.loads(bytes(raw)) for raw in snapshot.clients_json] == sent
    assert [json.loads(bytes(raw)) for raw in snapshot.perspective_json] \
        == sim.rest_perspective_items()


async def test_pages_until_metadata_total(aiohttp_server: ServerFactory,
                                          http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    sim = simulator(clock)
    url, counter = await rest_server(aiohttp_server, sim)
    snapshot = await poll_source(make_source(rest_gateway(url), http, clock))
    assert len(snapshot.perspective) == 30
    offsets = [q["offset"] for path, q in counter.seen if path == REST_PATHS["perspective"]]
    assert offsets == ["0", "7", "14", "21", "28"]  # 5 pages of 7 for 30: no 6th request
    assert all(q["limit"] == "7" for path, q in counter.seen if path in REST_PATHS.values())


def _api(answer: Callable[[int, int], Any], info: dict[str, Any] | None = None
         ) -> web.Application:
    """A gateway whose three lists answer `answer(limit, offset)`, as JSON."""
    async def handler(request: web.Request) -> web.Response:
        limit, offset = int(request.query["limit"]), int(request.query["offset"])
        return web.json_response(answer(limit, offset))

    async def gateway_info(_: web.Request) -> web.Response:
        return web.json_response(info or {"name": "gw", "ignitionVersion": VERSION,
                                          "redundancyRole": "Independent"})

    app = web.Application()
    for path in REST_PATHS.values():
        app.router.add_get(path, handler)
    app.router.add_get("/data/api/v1/gateway-info", gateway_info)
    return app


def _sessions(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": str(i), "username": "u", "project": "P", "sessionScope": "browser"}
            for i in range(start, start + count)]


async def test_a_gateway_capping_page_size_is_paged_by_its_total(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """Asked for 7, it answers 3 at a time: the total, not a short page, says when to stop."""
    every = _sessions(10)

    def capped(limit: int, offset: int) -> Any:
        return {"items": every[offset:offset + min(limit, 3)], "metadata": {"total": 10}}

    server = await aiohttp_server(_api(capped))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             FakeClock()))
    assert [s.id for s in snapshot.perspective] == [str(i) for i in range(10)]


async def test_a_bare_list_is_still_read(aiohttp_server: ServerFactory,
                                         http: aiohttp.ClientSession) -> None:
    every = _sessions(10)
    server = await aiohttp_server(_api(lambda limit, offset: every[offset:offset + limit]))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             FakeClock()))
    assert len(snapshot.perspective) == 10


async def test_a_gateway_that_ignores_limit_is_read_once(aiohttp_server: ServerFactory,
                                                         http: aiohttp.ClientSession) -> None:
    every = _sessions(20)
    server = await aiohttp_server(_api(lambda limit, offset: {
        "items": every, "metadata": {"total": 20}}))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                 FakeClock()))
    assert len(snapshot.perspective) == 20


async def test_a_gateway_that_ignores_offset_is_a_schema_error(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await aiohttp_server(_api(lambda limit, offset: {
        "items": _sessions(limit), "metadata": {"total": 100}}))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, FakeClock()))
    assert caught.value.reason is Reason.SCHEMA
    assert "ignores offset" in caught.value.detail


@pytest.mark.parametrize(("page", "reason"), [
    ({"total": 3}, Reason.SCHEMA), ({"items": {"a": 1}}, Reason.SCHEMA), ("text", Reason.SCHEMA),
    ({"data": []}, Reason.SCHEMA),
])
async def test_unusable_pages(aiohttp_server: ServerFactory, http: aiohttp.ClientSession,
                              page: Any, reason: Reason) -> None:
    server = await aiohttp_server(_api(lambda limit, offset: page))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, FakeClock()))
    assert caught.value.reason is reason


async def poll_metrics(gateway: GatewayConfig, http: aiohttp.ClientSession,
                       clock: FakeClock) -> tuple[GatewayPoller, str]:
    """One poll through the real poller; the exposition the exporter would serve."""
    poller = GatewayPoller(gateway, make_source(gateway, http, clock), idle_after=60,
                           clock=clock)
    await poller.poll_once()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [poller.status], clock))
    return poller, generate_latest(registry).decode()


async def test_a_gateway_without_vision_stays_up_with_a_warning(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    sim = simulator(clock, vision_module=False)
    url, _ = await rest_server(aiohttp_server, sim)
    poller, text = await poll_metrics(rest_gateway(url), http, clock)
    assert poller.status.up
    assert poller.status.warnings == (
        "Vision module not installed (data/vision/api/v1/clients answered 404): "
        "no Vision clients",)
    assert samples(text, "ignition_up") == {(("gateway", "plant-83"),): 1}
    kinds = {dict(labels)["kind"] for labels in samples(text, "ignition_client_sessions")}
    assert kinds == {"designer"}
    assert sum(samples(text, "ignition_perspective_sessions").values()) == 30


async def test_a_gateway_without_perspective_stays_up_with_a_warning(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    _, snapshot = await poll_standin(aiohttp_server, http, FakeClock(),
                                     perspective_module=False)
    assert snapshot.perspective == () and snapshot.clients
    assert snapshot.warnings[0].startswith("Perspective module not installed")


@pytest.mark.parametrize("role", ["Master", "Backup", "Independent"])
async def test_gateway_info_has_version_and_redundancy_role(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession, role: str) -> None:
    clock = FakeClock()
    sim = simulator(clock, name="Ignition-plant-b", redundancy_role=role)
    url, _ = await rest_server(aiohttp_server, sim)
    _, text = await poll_metrics(rest_gateway(url), http, clock)
    assert samples(text, "ignition_gateway_info") == {(
        ("gateway", "plant-83"), ("redundancy_role", role), ("system_name", "Ignition-plant-b"),
        ("version", VERSION)): 1}


async def test_unreadable_gateway_info_costs_only_the_info(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await aiohttp_server(_api(lambda limit, offset: {"items": _sessions(2),
                                                              "metadata": {"total": 2}},
                                       info={"name": ["not", "a", "name"]}))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             FakeClock()))
    assert len(snapshot.perspective) == 2 and snapshot.version is None
    assert snapshot.warnings[0].startswith("gateway-info could not be read")


async def test_gateway_info_nested_too_deep_costs_only_the_info(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """The decoder skips a field it does not know recursively, so a value nested a thousand
    levels deep in gateway-info raises RecursionError, which reading the info did not expect:
    the whole poll failed ("unexpected ... while reading the answer") where an unreadable
    info costs only the name and version."""
    app = _api(lambda limit, offset: {"items": _sessions(2), "metadata": {"total": 2}})
    deep = b'{"name": "gw", "extra": ' + b"[" * 1500 + b"]" * 1500 + b"}"

    @web.middleware
    async def deep_info(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("gateway-info"):
            return web.Response(body=deep, content_type="application/json")
        return await handler(request)

    app.middlewares.append(deep_info)
    server = await aiohttp_server(app)
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             FakeClock()))
    assert len(snapshot.perspective) == 2
    assert snapshot.warnings[0].startswith("gateway-info could not be read")


@pytest.mark.parametrize("header", ["X-Ignition-API-Token", "Authorization"])
async def test_an_api_key_is_name_colon_secret_in_either_header(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession, header: str) -> None:
    clock = FakeClock()
    url, _ = await rest_server(aiohttp_server, simulator(clock), token=KEY)
    snapshot = await poll_source(make_source(
        rest_gateway(url, token=KEY, token_header=header), http, clock))
    assert snapshot.perspective and snapshot.clients


async def test_the_secret_alone_is_401_and_says_what_a_key_is(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    url, _ = await rest_server(aiohttp_server, simulator(clock), token=KEY)
    secret = KEY.split(":", 1)[1]
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(url, token=secret), http, clock))
    assert caught.value.reason is Reason.AUTH
    assert caught.value.detail == NOT_RECOGNISED + "; the configured key has no colon"
    assert secret not in str(caught.value)


async def test_a_key_without_gateway_read_is_403_and_says_why(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    url, _ = await rest_server(aiohttp_server, simulator(clock), token=KEY, gateway_read=False)
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(url, token=KEY), http, clock))
    assert caught.value.reason is Reason.AUTH
    assert caught.value.detail == FORBIDDEN
    assert "Gateway Read" in FORBIDDEN and "HTTPS" in FORBIDDEN


async def test_an_uncommissioned_gateway_redirects_to_welcome(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    url, _ = await rest_server(aiohttp_server, simulator(clock, commissioned=False))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(url), http, clock))
    assert caught.value.reason is Reason.HTTP
    assert "/welcome" in caught.value.detail


async def test_a_jetty_html_500_is_an_http_failure(aiohttp_server: ServerFactory,
                                                   http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    url, _ = await rest_server(aiohttp_server, simulator(clock, failing=500))
    async with http.get(url + "data/api/v1/gateway-info") as raw:
        assert raw.status == 500 and raw.content_type == "text/html"
        assert "Powered by Jetty" in await raw.text()
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(url), http, clock))
    assert caught.value.reason is Reason.HTTP
    assert "HTTP 500" in caught.value.detail


async def test_a_url_that_is_not_a_gateway_root_says_so(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """Every route 404s, platform routes too: not "no modules", a wrong `url`."""
    clock = FakeClock()
    server = await aiohttp_server(simulator_app(simulator(clock), shape="rest"))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(str(server.make_url("/main/"))), http,
                                      clock))
    assert caught.value.reason is Reason.HTTP
    assert "root of an Ignition 8.3 gateway" in caught.value.detail


async def test_same_numbers_as_the_webdev_source(aiohttp_server: ServerFactory,
                                                 http: aiohttp.ClientSession) -> None:
    """REST reports lastComm as epoch ms and clients in another shape: after decoding, the
    numbers agree with the WebDev document of the same gateway (8.3 spells the public user
    "anonymous", so that user's series differ by name only)."""
    clock = FakeClock()
    sim = simulator(clock, seed=9, target_sessions=60)
    for _ in range(5):  # let some sessions go quiet, so there is idleness to compare
        clock.advance(30)
        sim.advance()
    server = await aiohttp_server(simulator_app(sim))
    rest = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, clock))
    webdev = await poll_source(make_source(GatewayConfig(name="plant-83",
                                             url=str(server.make_url(WEBDEV_PATH))),
                               http, clock))
    from_rest, from_webdev = aggregate(rest, 60), aggregate(webdev, 60)
    assert from_rest.scopes == from_webdev.scopes
    assert from_rest.client_sessions == from_webdev.client_sessions
    renamed = {(p, s, "Unauthenticated" if u == "anonymous" else u): n
               for (p, s, u), n in from_rest.perspective_sessions.items()}
    assert renamed == from_webdev.perspective_sessions
    assert sum(t.idle_sessions for t in from_rest.scopes.values()) > 0


def test_last_comm_normalisation() -> None:
    now_ms = 1_795_000_000_000
    since = PerspectiveSession(last_comm=1500)
    epoch = PerspectiveSession(last_comm=now_ms - 90_000)
    future = PerspectiveSession(last_comm=now_ms + 5000)  # gateway clock ahead of ours
    assert normalise_last_comm(since, now_ms).last_comm == 1500
    assert normalise_last_comm(epoch, now_ms).last_comm == 90_000
    assert normalise_last_comm(future, now_ms).last_comm == 0
    assert normalise_last_comm(PerspectiveSession(), now_ms).last_comm is None


async def rest_failure(server: TestServer, http: aiohttp.ClientSession) -> SourceError:
    source = make_source(rest_gateway(str(server.make_url("/")), token="key:s3cret"), http,
                         FakeClock())
    with pytest.raises(SourceError) as caught:
        await poll_source(source)
    assert caught.value.reason is Reason.HTTP
    return caught.value


async def test_the_api_key_does_not_follow_a_redirect_to_another_origin(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """aiohttp would strip `Authorization` on a cross-origin redirect, but not this header."""
    gateway, server, trap, elsewhere = await redirecting_away(aiohttp_server)
    error = await rest_failure(server, http)
    assert str(elsewhere.make_url("/data/")) in error.detail  # whichever route failed first
    assert "another host" in error.detail
    assert gateway.requests <= 4  # the three lists and gateway-info, asked at once
    assert trap.received == []


async def test_an_uncommissioned_gateway_is_named_as_such(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    gateway = FaultyGateway(GatewaySimulator(seed=3), mode=Fault.WELCOME)
    error = await rest_failure(await aiohttp_server(faulty_app(gateway)), http)
    assert "'/welcome'" in error.detail and "not commissioned" in error.detail


async def test_max_response_size_bounds_the_whole_poll_not_each_page(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """Pages each under the limit must not add up past it: the answer a poll holds is every
    page of every list, and a gateway serving page after full page would otherwise grow the
    exporter's memory by up to `max_response_size` times MAX_PAGES."""
    padding = "x" * 1000

    def pages(limit: int, offset: int) -> list[dict[str, Any]]:
        return [dict(row, username=padding) for row in _sessions(limit, offset)] \
            if offset < 40 * limit else []

    server = await aiohttp_server(_api(pages))
    gateway = rest_gateway(str(server.make_url("/")), max_response_bytes=64 * 1024)
    with pytest.raises(SourceError) as caught:  # 40 pages of about 7 kB: 280 kB in all
        await poll_source(make_source(gateway, http, FakeClock()))
    assert caught.value.reason is Reason.TOO_LARGE
    assert "max_response_size" in caught.value.detail


def test_uptime_is_a_duration_unless_it_can_only_be_a_time() -> None:
    now_ms = 1_795_000_000_000
    assert creation_time(600_000, now_ms) == now_ms - 600_000  # as captured
    assert creation_time(now_ms - 5_000, now_ms) == now_ms - 5_000  # an epoch timestamp
    assert creation_time(None, now_ms) is None
    assert creation_time(-1, now_ms) is None


def slow_to_split_page(offset: int) -> bytes:
    """A page of the list envelope the source splits into items as it reads it: one value
    nested too deep to decode (so the page is read again with it cut out) and about 900,000
    runs of brackets to cut through, just within what the cut takes on."""
    deep = b"[" * 1500 + b"]" * 1500
    return (b'{"items": [{"id": %d, "x": ' % offset + deep + b"}" + b", []" * 450_000
            + b'], "metadata": {"total": 1000000000}}')


async def test_a_page_costly_to_split_is_paged_past_like_any_other(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """A page holding a session nested too deep is split off the event loop (in the
    workers, where the source has them), and the pages after it are read from its real
    count all the same."""
    every = _sessions(10)
    server = await aiohttp_server(_deepened_first_page(_api(
        lambda limit, offset: {"items": every[offset:offset + limit],
                               "metadata": {"total": 10}})))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             FakeClock()))
    assert [s.id for s in snapshot.perspective] == [str(i) for i in range(10) if i != 1]
    assert snapshot.invalid_sessions == 1


def _deepened_first_page(app: web.Application) -> web.Application:
    """`app` with session "1" of the first Perspective page holding a value nested too deep."""
    @web.middleware
    async def deepen(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if request.path.endswith("sessions/") and request.query["offset"] == "0":
            response.body = response.body.replace(
                b'"id": "1",', b'"id": "1", "x": ' + b"[" * 1500 + b"]" * 1500 + b",")
        return response

    app.middlewares.append(deepen)
    return app


@pytest.mark.parametrize("page", [
    lambda limit, offset: {"items": _sessions(10)[offset:offset + min(limit, 3)],
                           "metadata": {"total": 10}},
    lambda limit, offset: {"items": _sessions(10)[offset:], "metadata": {"total": 10}},
], ids=["capping page size", "ignoring limit"])
async def test_a_page_costly_to_split_loses_and_repeats_no_session(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession,
        page: Callable[[int, int], Any]) -> None:
    """A page costly to split was once left whole for the workers and taken for a full page
    of `page_size` items. A gateway that answers fewer (its own page size is smaller) had
    the sessions between skipped; one that answers more (it ignores `limit`) had them read
    twice, each repeat counted as an invalid session. The next offset is the items read."""
    server = await aiohttp_server(_deepened_first_page(_api(page)))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                             FakeClock()))
    assert [s.id for s in snapshot.perspective] == [str(i) for i in range(10) if i != 1]
    assert snapshot.invalid_sessions == 1


async def test_a_gateway_whose_pages_are_slow_to_split_cannot_time_out_another(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """The REST source splits each page into items as it arrives, on the event loop every
    gateway's polls and every scrape share; the decode and digest go to the workers, but
    not this. A hostile gateway's pages that are slow to split (a value nested too deep, a
    million runs of brackets: a second or so each) held the loop for seconds at every poll,
    and another gateway answering at once timed out meanwhile."""
    hostile_url = await serving_pages(aiohttp_server, slow_to_split_page)
    clock = FakeClock()
    cpu = workers(1, PRELOAD)
    try:
        gateway = replace(rest_gateway(hostile_url, page_size=100), name="hostile")
        hostile = polled_as_the_fleet_does(gateway, http, clock, cpu)
        honest = await honest_poller(aiohttp_server, http, clock)
        hostile_poll = asyncio.create_task(hostile.poll_once())
        assert await polls_failing_while(honest, hostile_poll) == []
        await hostile_poll
    finally:
        await cpu.close()


def polled_as_the_fleet_does(gateway: GatewayConfig, http: aiohttp.ClientSession,
                             clock: FakeClock, cpu: Workers) -> GatewayPoller:
    """A poller whose source offloads to the workers that digest its polls, as the fleet
    wires them."""
    source = make_source(gateway, http, clock, partial(cpu.run, gateway.timeout))
    return GatewayPoller(gateway, source, idle_after=60, clock=clock, cpu=cpu)


async def serving_pages(aiohttp_server: ServerFactory, page: Callable[[int], bytes]) -> str:
    """The root URL of a REST gateway answering every list with `page(offset)`."""
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=page(int(request.query.get("offset", 0))),
                            content_type="application/json")

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"name": "hostile"})

    app = web.Application()
    for path in REST_PATHS.values():
        app.router.add_get(path, answer)
    app.router.add_get("/data/api/v1/gateway-info", info)
    return str((await aiohttp_server(app)).make_url("/"))


async def honest_poller(aiohttp_server: ServerFactory, http: aiohttp.ClientSession,
                        clock: FakeClock) -> GatewayPoller:
    """A gateway taking its time to answer, well within its timeout of 0.5 s."""
    async def honest_answer(_: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(body=encode(document([perspective()])),
                            content_type="application/json")

    app = web.Application()
    app.router.add_get(WEBDEV_PATH, honest_answer)
    url = (await aiohttp_server(app)).make_url(WEBDEV_PATH)
    gateway = GatewayConfig(name="honest", url=str(url), timeout=0.5)
    return GatewayPoller(gateway, make_source(gateway, http, clock), idle_after=60,
                         clock=clock)


async def polls_failing_while(honest: GatewayPoller, hostile: asyncio.Future[Any]
                              ) -> list[str]:
    """The honest gateway polled on its schedule while the hostile polls run: its errors."""
    errors = []
    while not hostile.done():
        status = await honest.poll_once()
        if status.error:
            errors.append(status.error.detail)
    return errors


def escapes_to_repair_page(offset: int) -> bytes:
    """A page of the list envelope that is costly to split for its escapes rather than its
    depth: half a million lone surrogate escapes (what a Java string cut inside a surrogate
    pair gives), far past what is repaired on the event loop's turn, in 3 MB."""
    return (b'{"items": [{"id": %d, "x": "' % offset + b"\\ud800" * 500_000
            + b'"}], "metadata": {"total": 1000000000}}')


async def test_gateways_whose_pages_need_escapes_repaired_cannot_time_out_another(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """A page costly to split was split in a thread of the exporter's own process, not in
    the workers that decode and digest. Repairing its escapes is a few passes of C code over
    the whole page (decode, encode, a regular expression), each of which keeps the
    interpreter from the event loop's thread until it ends, however short the switch
    interval: a few gateways sending such pages held the loop, and another gateway answering
    at once timed out meanwhile, although the digest ran in a worker process."""
    hostile_url = await serving_pages(aiohttp_server, escapes_to_repair_page)
    clock = FakeClock()
    cpu = workers(1, PRELOAD)
    try:
        hostile = []
        for n in range(3):
            gateway = replace(rest_gateway(hostile_url, page_size=100), name=f"hostile{n}",
                              timeout=10.0)
            hostile.append(polled_as_the_fleet_does(gateway, http, clock, cpu))
        honest = await honest_poller(aiohttp_server, http, clock)
        hostile_polls = asyncio.gather(*(poller.poll_once() for poller in hostile))
        errors = await polls_failing_while(honest, hostile_polls)
        await hostile_polls
        assert errors == []
    finally:
        await cpu.close()


def _descendants(pid: int, depth: int) -> set[int]:
    """The processes `depth` generations below `pid` (the workers: below the forkserver,
    which is below the exporter), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    level = {pid}
    for _ in range(depth):
        level = {child for child, parent in parents.items() if parent in level}
    return level


async def test_a_worker_lost_while_splitting_a_page_says_so(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """A page costly to split goes to a worker process, from inside the task group that
    reads the four routes at once. When that worker dies (the OOM killer, a kill), the
    workers raise `WorkerLost`, which the poller turns into "the worker process ... died";
    but the task group wraps it in an ExceptionGroup that `first_failure_cancels` passes on
    as it is, and the poll failed as an "unexpected ExceptionGroup while reading the
    answer: unhandled errors in a TaskGroup (1 sub-exception)", which names no cause."""
    hostile_url = await serving_pages(aiohttp_server, slow_to_split_page)
    cpu = workers(1, PRELOAD)
    try:
        gateway = replace(rest_gateway(hostile_url, page_size=100), name="hostile",
                          timeout=20.0)
        poller = polled_as_the_fleet_does(gateway, http, FakeClock(), cpu)
        poll = asyncio.create_task(poller.poll_once())
        await eventually(lambda: bool(_descendants(os.getpid(), 2)) or poll.done(),
                         what="a worker process splitting the page")
        for pid in _descendants(os.getpid(), 2):
            os.kill(pid, signal.SIGKILL)
        status = await poll
    finally:
        await cpu.close()
    assert status.error is not None
    assert "ExceptionGroup" not in status.error.detail
    assert "worker process" in status.error.detail
