"""The exporter's HTTP surface, over real HTTP, polling a simulated gateway on loopback."""

from __future__ import annotations

import gzip

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, GatewayConfig
from exporter.sources.http import MAX_COOKIE_BYTES
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.web.appkeys import EXPOSITION, FLEET
from exporter.web.http import create_app
from exporter.web.server import Handler
from tests.conftest import ClientFactory, FakeClock, ServerFactory, eventually
from tests.processes import digest_workers, running


@pytest.fixture
async def exporter(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> TestClient:
    gateway = await aiohttp_server(simulator_app(GatewaySimulator(seed=11)))
    config = Config(gateways=(
        GatewayConfig(name="plant-a", url=str(gateway.make_url(WEBDEV_PATH)),
                      poll_interval=1, timeout=1),
        GatewayConfig(name="plant-b", url="http://127.0.0.1:1/nothing-here",
                      poll_interval=1, timeout=1),
    ))
    client = await aiohttp_client(create_app(config))
    fleet = client.app[FLEET]
    await eventually(lambda: all(s.polls for s in fleet.statuses()), what="first polls")
    return client


async def test_metrics_text(exporter: TestClient) -> None:
    response = await exporter.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    up = {s.labels["gateway"]: s.value for s in families["ignition_up"].samples}
    assert up == {"plant-a": 1, "plant-b": 0}
    total = sum(s.value for s in families["ignition_perspective_sessions"].samples)
    assert total == 40
    assert "as of the last poll" in families["ignition_perspective_sessions"].documentation


async def test_metrics_openmetrics_and_gzip(exporter: TestClient) -> None:
    response = await exporter.get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"},
        auto_decompress=False)
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.headers["Content-Encoding"] == "gzip"
    assert vary(response) == {"accept", "accept-encoding"}  # a cache must key on both
    text = gzip.decompress(await response.read()).decode()
    assert text.endswith("# EOF\n")
    assert "ignition_perspective_sent_bytes_total{" in text


async def test_landing_page_lists_gateways(exporter: TestClient) -> None:
    response = await exporter.get("/")
    html = await response.text()
    assert response.status == 200
    assert '<a href="/metrics">' in html
    assert "plant-a" in html and "plant-b" in html
    assert "connect: cannot connect to 127.0.0.1:1" in html


async def test_healthz(exporter: TestClient) -> None:
    response = await exporter.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_unknown_path_and_method(exporter: TestClient) -> None:
    assert (await exporter.get("/nope")).status == 404
    assert (await exporter.post("/metrics")).status == 405


async def test_series_cap_folds_and_counts(aiohttp_server: ServerFactory,
                                           aiohttp_client: ClientFactory) -> None:
    simulator = GatewaySimulator(seed=3, target_sessions=300, distinct_users=5000,
                                 clock=FakeClock())
    distinct = len({(s["project"], s["sessionScope"], s["username"])
                    for s in simulator.perspective_objects()})
    gateway = await aiohttp_server(simulator_app(simulator))
    config = Config(max_series_per_metric=100, gateways=(GatewayConfig(
        name="big", url=str(gateway.make_url(WEBDEV_PATH)), poll_interval=1, timeout=1),))
    client = await aiohttp_client(create_app(config))
    fleet = client.app[FLEET]
    await eventually(lambda: fleet.statuses()[0].polls >= 2, what="two polls")
    status = fleet.statuses()[0]
    assert status.folded_series["ignition_perspective_sessions"] == status.polls * (
        distinct - 100)
    text = await (await client.get("/metrics")).text()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    sessions = [s for s in samples if s.name == "ignition_perspective_sessions"]
    others = [s for s in sessions if s.labels["username"] == "__other__"]
    assert len(sessions) - len(others) == 100 and others
    assert sum(s.value for s in sessions) == 300
    folded = {s.labels["metric"]: s.value for s in samples
              if s.name == "ignition_exporter_folded_series_total"}
    assert folded["ignition_perspective_sessions"] % (distinct - 100) == 0
    assert folded["ignition_perspective_sessions"] >= 2 * (distinct - 100)
    assert folded["ignition_client_sessions"] == 0


@pytest.mark.parametrize("accept_encoding", ["gzip;q=0", "*, gzip;q=0", "identity", ""])
async def test_metrics_not_compressed_when_gzip_refused(exporter: TestClient,
                                                        accept_encoding: str) -> None:
    response = await exporter.get("/metrics", headers={"Accept-Encoding": accept_encoding},
                                  auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    assert (await response.read()).startswith(b"# HELP ")
    assert vary(response) == {"accept", "accept-encoding"}


def vary(response: aiohttp.ClientResponse) -> set[str]:
    """The request headers a response says it depends on, as a cache reads them."""
    return {name.strip().lower() for name in response.headers.get("Vary", "").split(",")}


@pytest.mark.parametrize("accept", [
    "application/openmetrics-text; version=abc", "application/openmetrics-text; version=+1.0.5",
    "application/openmetrics-text; version= 1.0.5; escaping=x", "text/plain; version=1..0",
    "application/openmetrics-text; version=1.0.0; q=x", ";;;,,,",
])
async def test_metrics_odd_accept_gets_one_of_the_exporters_formats(exporter: TestClient,
                                                                    accept: str) -> None:
    response = await exporter.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"] in {
        "text/plain; version=0.0.4; charset=utf-8",
        "application/openmetrics-text; version=1.0.0; charset=utf-8"}
    assert exporter.app[EXPOSITION].cached_bodies <= 2


async def test_worker_processes_live_and_die_with_the_app(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    gateway = await aiohttp_server(simulator_app(GatewaySimulator(seed=11, clock=FakeClock())))
    config = Config(gateways=(GatewayConfig(name="plant-a", url=str(gateway.make_url(
        WEBDEV_PATH)), poll_interval=0.2, timeout=0.2),), digest_processes=1)
    client = await aiohttp_client(create_app(config))
    fleet = client.app[FLEET]
    await (await client.get("/metrics")).read()  # the text format is served from now on
    polls = fleet.statuses()[0].polls
    await eventually(lambda: fleet.statuses()[0].polls >= polls + 2, what="polls")
    families = {f.name: f for f in text_string_to_metric_families(
        await (await client.get("/metrics")).text())}
    assert sum(s.value for s in families["ignition_perspective_sessions"].samples) == 40
    workers = digest_workers()
    assert len(workers) == 1
    await client.close()
    assert not any(map(running, workers))


async def test_a_gateway_cannot_plant_cookies_in_another_gateways_requests(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    """The gateways share one HTTP client, and with it one cookie jar. A cookie does not
    care about ports (and a gateway may name its parent domain), so whatever a hostile
    gateway sets went with every request to the others on its host or in its domain: headers
    of its choosing, which can grow past the others' header limit and fail their polls. And
    the jar keeps every new cookie a gateway sends, poll after poll, with no bound."""
    from aiohttp import web

    from tests.payloads import document, encode

    body = encode(document([]))
    seen_by_a: list[str | None] = []
    seen_by_b: list[str | None] = []

    async def hostile(request: web.Request) -> web.Response:
        seen_by_a.append(request.headers.get("Cookie"))
        response = web.Response(body=body, content_type="application/json")
        for n in range(20):
            response.set_cookie(f"c{len(seen_by_b)}_{n}", "x" * 200, max_age=10**8)
        return response

    async def honest(request: web.Request) -> web.Response:
        seen_by_b.append(request.headers.get("Cookie"))
        return web.Response(body=body, content_type="application/json")

    servers = []
    for handler in (hostile, honest):
        app = web.Application()
        app.router.add_get("/sessions", handler)
        servers.append(await aiohttp_server(app, host="127.0.0.1"))
    config = Config(gateways=tuple(
        GatewayConfig(name=name, url=f"http://localhost:{server.port}/sessions",
                      poll_interval=0.2, timeout=0.2)
        for name, server in zip(("plant-a", "plant-b"), servers, strict=True)))
    client = await aiohttp_client(create_app(config))
    fleet = client.app[FLEET]
    await eventually(lambda: len(seen_by_b) >= 5 and all(s.up for s in fleet.statuses()),
                     what="a few polls of both gateways")
    assert seen_by_b[2:] == [None] * len(seen_by_b[2:])
    # Its own come back to it, never more than the bound: its polls never fail for them.
    assert any(seen_by_a) and max(len(c or "") for c in seen_by_a) < 2 * MAX_COOKIE_BYTES


async def test_a_gateway_gets_its_session_cookie_back(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    """A gateway that ties requests to an HTTP session of its own (a servlet container's
    JSESSIONID) sees one session, not a new one per poll, also when named by its address."""
    from aiohttp import web

    from tests.payloads import document, encode

    seen: list[str | None] = []

    async def gateway(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(body=encode(document([])), content_type="application/json")
        if "JSESSIONID" not in (request.headers.get("Cookie") or ""):
            response.set_cookie("JSESSIONID", f"node0{len(seen)}", path="/", httponly=True)
        return response

    await exporter_polling(gateway, aiohttp_server, aiohttp_client)
    await eventually(lambda: len(seen) >= 4, what="four polls")
    assert seen[0] is None and set(seen[1:]) == {"JSESSIONID=node01"}


async def exporter_polling(gateway: Handler, aiohttp_server: ServerFactory,
                           aiohttp_client: ClientFactory) -> TestClient:
    """The exporter polling one gateway, named by its address (127.0.0.1), whose answers
    `gateway` makes, every 0.2 s."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/sessions", gateway)
    server = await aiohttp_server(app, host="127.0.0.1")
    config = Config(gateways=(GatewayConfig(name="plant-a", url=str(server.make_url(
        "/sessions")), poll_interval=0.2, timeout=0.2),))
    return await aiohttp_client(create_app(config))


@pytest.mark.parametrize("cookie", ["path=/; Max-Age=3600", "Secure=1", "expires=0"])
async def test_a_cookie_named_like_an_attribute_fails_no_poll(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, cookie: str) -> None:
    """A gateway (or a proxy before it) that once sets a cookie whose name is also a cookie
    attribute's (`path`, `secure`, `expires`): it is kept, and every later request failed
    as it was made ("unexpected CookieError"), so the gateway stayed down, long after the
    answer that set it, for as long as the cookie lived."""
    from aiohttp import web

    from tests.payloads import document, encode

    seen: list[str | None] = []

    async def gateway(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(body=encode(document([])), content_type="application/json")
        if len(seen) == 1:
            response.headers.add("Set-Cookie", cookie)
        return response

    client = await exporter_polling(gateway, aiohttp_server, aiohttp_client)
    status = client.app[FLEET].statuses
    await eventually(lambda: status()[0].polls >= 3, what="three polls")
    assert len(seen) >= 3 and status()[0].error is None, status()[0].error
