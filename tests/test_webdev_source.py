"""The WebDev source against real HTTP on loopback: a gateway stand-in that misbehaves."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from exporter.config import GatewayConfig
from exporter.sources import Reason, SourceError, make_source
from exporter.standins.faults import Fault, FaultyGateway, faulty_app
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from tests.conftest import FakeClock, ServerFactory, poll_source
from tests.fakes import redirecting_away


def gateway_at(url: str, **options: object) -> GatewayConfig:
    settings: dict[str, object] = {"timeout": 2.0, "connect_timeout": 1.0}
    settings.update(options)
    return GatewayConfig(name="plant-a", url=url, **settings)  # type: ignore[arg-type]


async def fetch(gateway: GatewayConfig, http: aiohttp.ClientSession) -> SourceError:
    with pytest.raises(SourceError) as caught:
        await poll_source(make_source(gateway, http, FakeClock()))
    assert caught.value.gateway == "plant-a"
    return caught.value


@pytest.fixture
async def faulty(aiohttp_server: ServerFactory) -> tuple[FaultyGateway, str]:
    gateway = FaultyGateway(GatewaySimulator(seed=3), delay=5.0, large_bytes=8 * 2**20)
    server = await aiohttp_server(faulty_app(gateway))
    return gateway, str(server.make_url(WEBDEV_PATH))


async def test_good_answer(faulty: tuple[FaultyGateway, str],
                           http: aiohttp.ClientSession) -> None:
    _, url = faulty
    snapshot = await poll_source(make_source(gateway_at(url), http, FakeClock()))
    assert len(snapshot.perspective) == 40
    assert snapshot.version == "8.1.33"


@pytest.mark.parametrize(("fault", "reason", "detail"), [
    (Fault.HTTP_500, Reason.HTTP, "HTTP 500"),
    (Fault.HTTP_503, Reason.HTTP, "HTTP 503"),
    (Fault.PROXY_502, Reason.HTTP, "HTTP 502"),
    (Fault.HTML_200, Reason.HTTP, "HTML page"),
    (Fault.UNAUTHORIZED, Reason.AUTH, "HTTP 401"),
    (Fault.FORBIDDEN, Reason.AUTH, "HTTP 403"),
    (Fault.GARBAGE, Reason.DECODE, "invalid JSON"),
    (Fault.TRUNCATED, Reason.DECODE, "invalid JSON"),
    (Fault.WRONG_SHAPE, Reason.SCHEMA, "unexpected document shape"),
    (Fault.WRONG_SCHEMA, Reason.SCHEMA, "unsupported schema 99"),
    (Fault.SLOW, Reason.TIMEOUT, "no complete answer within 0.3s"),
    (Fault.TRICKLE, Reason.TIMEOUT, "no complete answer within 0.3s"),
    (Fault.TOO_LARGE, Reason.TOO_LARGE, "larger than 1048576 bytes"),
    (Fault.RESET, Reason.CONNECT, "Disconnected"),
    (Fault.WELCOME, Reason.HTTP, "not commissioned"),
    (Fault.DEEP_DOCUMENT, Reason.SCHEMA, "unexpected document shape"),
])
async def test_faults_map_to_reasons(faulty: tuple[FaultyGateway, str],
                                     http: aiohttp.ClientSession, fault: Fault,
                                     reason: Reason, detail: str) -> None:
    gateway, url = faulty
    gateway.mode = fault
    error = await fetch(gateway_at(url, timeout=0.3, max_response_bytes=2**20), http)
    assert error.reason is reason
    assert detail in error.detail


async def test_connection_refused(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await fetch(gateway_at(f"http://127.0.0.1:{port}{WEBDEV_PATH}"), http)
    assert error.reason is Reason.CONNECT
    assert f"127.0.0.1:{port}" in error.detail


async def test_declared_length_over_the_cap_is_refused_unread(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b" " * 5000, content_type="application/json")
    app = web.Application()
    app.router.add_get("/big", big)
    server = await aiohttp_server(app)
    error = await fetch(gateway_at(str(server.make_url("/big")), max_response_bytes=4096), http)
    assert error.reason is Reason.TOO_LARGE


async def test_bearer_token_is_sent(aiohttp_server: ServerFactory,
                                    http: aiohttp.ClientSession) -> None:
    server = await aiohttp_server(simulator_app(GatewaySimulator(), token="t0ken"))
    url = str(server.make_url(WEBDEV_PATH))
    assert (await fetch(gateway_at(url), http)).reason is Reason.AUTH
    assert (await fetch(gateway_at(url, token="wrong"), http)).reason is Reason.AUTH
    snapshot = await poll_source(make_source(gateway_at(url, token="t0ken"), http, FakeClock()))
    assert snapshot.perspective


async def test_a_redirect_to_another_origin_is_not_followed(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """The other host must not get the token, nor have its answer taken as the gateway's."""
    gateway, server, trap, elsewhere = await redirecting_away(aiohttp_server)
    error = await fetch(gateway_at(str(server.make_url(WEBDEV_PATH)), token="s3cret"), http)
    assert error.reason is Reason.HTTP
    assert f"HTTP 302 redirect to '{elsewhere.make_url(WEBDEV_PATH)}'" in error.detail
    assert "another host" in error.detail
    assert "s3cret" not in error.detail
    assert gateway.requests == 1
    assert trap.received == []


@pytest.mark.parametrize(("location", "meaning"), [
    ("/welcome", "not commissioned"),
    ("https://127.0.0.1:8043/system/webdev/monitoring/sessions", "wants HTTPS"),
    ("/system/webdev/monitoring/sessions/", "check the configured url"),
    ("http://[::1", "not a valid URL"),
    (None, "without a Location"),
])
async def test_a_redirect_says_what_it_likely_means(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession, location: str | None,
        meaning: str) -> None:
    async def redirect(_: web.Request) -> web.Response:
        headers = {"Location": location} if location else {}
        return web.Response(status=302, headers=headers)

    app = web.Application()
    app.router.add_get(WEBDEV_PATH, redirect)
    server = await aiohttp_server(app)
    error = await fetch(gateway_at(str(server.make_url(WEBDEV_PATH))), http)
    assert error.reason is Reason.HTTP
    assert meaning in error.detail
    assert error.detail.startswith("HTTP 302")


async def test_a_redirect_loop_is_one_clear_failure(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    async def loop(_: web.Request) -> web.Response:
        raise web.HTTPFound(WEBDEV_PATH)

    app = web.Application()
    app.router.add_get(WEBDEV_PATH, loop)
    server = await aiohttp_server(app)
    error = await fetch(gateway_at(str(server.make_url(WEBDEV_PATH))), http)
    assert error.reason is Reason.HTTP
    assert error.detail.startswith(f"HTTP 302 redirect to '{WEBDEV_PATH}'")


async def test_a_url_the_client_refuses_is_not_echoed(http: aiohttp.ClientSession) -> None:
    """The client's InvalidURL text is the whole URL, password included; the failure's
    detail reaches the log, the landing page and /sessions, so it must not carry it."""
    error = await fetch(gateway_at("http://ops:s3cret@a\u2100b:8088/x"), http)
    assert error.reason is Reason.CONNECT
    assert "s3cret" not in error.detail and "url" in error.detail


async def test_a_401_without_a_configured_token_says_none_was_sent(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """A gateway whose script has a TOKEN, polled by a configuration that forgot
    `token_file`/`token_env`: the exporter sent no credentials, so "the gateway refused the
    credentials" sends the reader to check a token that is not there. The detail must say
    that none is configured."""
    server = await aiohttp_server(simulator_app(GatewaySimulator(), token="t0ken"))
    error = await fetch(gateway_at(str(server.make_url(WEBDEV_PATH))), http)
    assert error.reason is Reason.AUTH
    assert "token_file" in error.detail or "token_env" in error.detail, error.detail


async def test_a_404_says_what_a_webdev_url_looks_like(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """A WebDev URL with the wrong project or resource name, 7.9's without `/main`, or an
    8.3 gateway's root with `source: rest` left out all answer 404. The REST source says
    what its `url` must be; the WebDev one said only "HTTP 404 Not Found"."""
    server = await aiohttp_server(simulator_app(GatewaySimulator(), shape="rest"))
    error = await fetch(gateway_at(str(server.make_url("/"))), http)
    assert error.reason is Reason.HTTP
    assert "/system/webdev/" in error.detail, error.detail


async def test_https_to_a_plain_http_port_says_so(
        aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """`https://gw:8088` (the gateway's HTTP port, 8043 is its HTTPS one) failed with
    "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)": the detail must say
    that the port answered plain HTTP."""
    server = await aiohttp_server(simulator_app(GatewaySimulator(), shape="webdev"))
    url = str(server.make_url(WEBDEV_PATH)).replace("http://", "https://", 1)
    error = await fetch(gateway_at(url), http)
    assert error.reason is Reason.CONNECT
    assert "http://" in error.detail or "plain HTTP" in error.detail, error.detail
