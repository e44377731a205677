"""The Ignition 8.3 REST API source against a local stand-in of the API, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.aggregate import aggregate
from exporter.config import GatewayConfig
from exporter.faults import Fault, FaultyGateway, faulty_app
from exporter.model import PerspectiveSession
from exporter.simulator import REST_PATHS, WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.sources import Reason, SourceError, make_source
from exporter.sources.rest import AUTH_HINT, normalise_last_comm
from tests.conftest import FakeClock, ServerFactory, poll_source
from tests.fakes import redirecting_away


def rest_gateway(url: str, **options: Any) -> GatewayConfig:
    settings: dict[str, Any] = {"source": "rest", "timeout": 5.0, "page_size": 7,
                                "token_header": "X-Ignition-API-Token"}
    settings.update(options)
    return GatewayConfig(name="plant-83", url=url, **settings)


class CountingRequests:
    """Remembers each request's path and query, to check the paging."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.query)))
        return await handler(request)


@pytest.mark.parametrize("envelope", ["list", "items", "data", "results"])
async def test_every_envelope_and_paging(aiohttp_server: ServerFactory,
                                         http: aiohttp.ClientSession, envelope: str) -> None:
    clock = FakeClock()
    simulator = GatewaySimulator(seed=2, clock=clock, target_sessions=30, target_clients=9)
    app = simulator_app(simulator, rest_envelope=envelope)
    counter = CountingRequests()
    app.middlewares.append(counter.middleware)
    server = await aiohttp_server(app)
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, clock))
    assert len(snapshot.perspective) == 30
    assert len(snapshot.clients) == 9
    offsets = [q["offset"] for path, q in counter.seen if path == REST_PATHS["perspective"]]
    assert offsets == ["0", "7", "14", "21", "28"]
    assert all(q["limit"] == "7" for _, q in counter.seen)
    kinds = sorted(c.kind for c in snapshot.clients)
    assert kinds == sorted("designer" if r["isDesigner"] else "vision"
                           for r in simulator.client_rows())


async def test_same_numbers_as_the_webdev_source(aiohttp_server: ServerFactory,
                                                 http: aiohttp.ClientSession) -> None:
    """REST reports lastComm as epoch ms: after normalising, idle counts agree."""
    clock = FakeClock()
    simulator = GatewaySimulator(seed=9, clock=clock, target_sessions=60)
    for _ in range(5):  # let some sessions go quiet, so there is idleness to compare
        clock.advance(30)
        simulator.advance()
    server = await aiohttp_server(simulator_app(simulator))
    rest = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, clock))
    webdev = await poll_source(make_source(GatewayConfig(name="plant-83",
                                             url=str(server.make_url(WEBDEV_PATH))),
                               http, clock))
    from_rest, from_webdev = aggregate(rest, 60), aggregate(webdev, 60)
    assert from_rest == from_webdev
    assert sum(t.idle_sessions for t in from_rest.scopes.values()) > 0


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_name_the_permission(aiohttp_server: ServerFactory,
                                                 http: aiohttp.ClientSession,
                                                 status: int) -> None:
    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"error": "denied"}, status=status)

    app = web.Application()
    app.router.add_get(REST_PATHS["perspective"], refuse)
    server = await aiohttp_server(app)
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(str(server.make_url("/")), token="k"), http,
                          FakeClock()))
    assert caught.value.reason is Reason.AUTH
    assert AUTH_HINT in caught.value.detail


@pytest.mark.parametrize(("header", "expected"), [
    ("X-Ignition-API-Token", "key-123"), ("Authorization", "Bearer key-123")])
async def test_api_key_header_is_configurable(aiohttp_server: ServerFactory,
                                              http: aiohttp.ClientSession, header: str,
                                              expected: str) -> None:
    simulator = GatewaySimulator(seed=1, clock=FakeClock())
    server = await aiohttp_server(simulator_app(simulator, token="key-123", rest_header=header))
    url = str(server.make_url("/"))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(url), http, FakeClock()))
    assert caught.value.reason is Reason.AUTH
    keyed = rest_gateway(url, token="key-123", token_header=header)
    snapshot = await poll_source(make_source(keyed, http, FakeClock()))
    assert snapshot.perspective


def _api(pages: Callable[[int, int], Any]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        limit, offset = int(request.query["limit"]), int(request.query["offset"])
        return web.Response(body=json.dumps(pages(limit, offset)).encode(),
                            content_type="application/json")

    app = web.Application()
    for path in REST_PATHS.values():
        app.router.add_get(path, handler)
    return app


def _sessions(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": str(i), "username": "u", "project": "P", "sessionScope": "browser"}
            for i in range(start, start + count)]


async def test_a_gateway_that_ignores_limit_is_read_once(aiohttp_server: ServerFactory,
                                                         http: aiohttp.ClientSession) -> None:
    server = await aiohttp_server(_api(lambda limit, offset: _sessions(20)))
    snapshot = await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http,
                                 FakeClock()))
    assert len(snapshot.perspective) == 20


async def test_a_gateway_that_ignores_offset_is_a_schema_error(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await aiohttp_server(_api(lambda limit, offset: _sessions(limit)))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, FakeClock()))
    assert caught.value.reason is Reason.SCHEMA
    assert "ignores offset" in caught.value.detail


@pytest.mark.parametrize(("page", "reason"), [
    ({"total": 3}, Reason.SCHEMA), ({"items": {"a": 1}}, Reason.SCHEMA), ("text", Reason.SCHEMA),
])
async def test_unusable_pages(aiohttp_server: ServerFactory, http: aiohttp.ClientSession,
                              page: Any, reason: Reason) -> None:
    server = await aiohttp_server(_api(lambda limit, offset: page))
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(rest_gateway(str(server.make_url("/"))), http, FakeClock()))
    assert caught.value.reason is reason


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
    assert str(elsewhere.make_url(REST_PATHS["perspective"])) in error.detail
    assert "another host" in error.detail
    assert gateway.requests == 1
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
