"""A property over what a client controls: the `Accept`, `Accept-Encoding` and
`Authorization` headers and every route's query string, sent over real HTTP to the
application served in this process (so its `/metrics` cache can be inspected): never a 5xx,
never an ERROR log line, and never more cached `/metrics` bodies than there are formats."""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import bcrypt
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, GatewayConfig
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.web.appkeys import EXPOSITION
from exporter.web.exposition import FORMATS
from exporter.web.http import create_app
from exporter.web.server import running_site
from exporter.web.webconfig import WebConfig
from tests.strategies import accepts, encodings, latin

PASSWORD = b"scrape-pass"
USERS = {"prometheus": bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4)),
         "auditor": bcrypt.hashpw(b"audit", bcrypt.gensalt(5))}


@dataclass
class Served:
    app: web.Application
    host: str
    port: int
    errors: list[logging.LogRecord]


class _Errors(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


async def _serve(box: dict[str, Any], ready: threading.Event) -> None:
    async with AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(running_site(
            simulator_app(GatewaySimulator(seed=4, target_sessions=30)), "127.0.0.1", 0))
        config = Config(gateways=(GatewayConfig(name="plant-a", url=gateway + WEBDEV_PATH,
                                                poll_interval=1, timeout=1),),
                        sessions_users={"auditor": USERS["auditor"]})
        app = create_app(config, web_config=WebConfig(basic_auth_users=USERS))
        url = await stack.enter_async_context(running_site(app, "127.0.0.1", 0))
        box.update(app=app, url=url, stop=asyncio.Event(), loop=asyncio.get_running_loop())
        ready.set()
        await box["stop"].wait()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The exporter's application and its server, in a thread of their own."""
    box: dict[str, Any] = {}
    ready = threading.Event()
    errors: list[logging.LogRecord] = []
    handler = _Errors(errors)
    logging.getLogger().addHandler(handler)
    thread = threading.Thread(target=asyncio.run, args=(_serve(box, ready),), daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "the exporter did not start"
        host, port = box["url"].removeprefix("http://").rsplit(":", 1)
        yield Served(box["app"], host, int(port), errors)
    finally:
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(20)
        logging.getLogger().removeHandler(handler)


user_passwords = st.tuples(
    st.sampled_from(["prometheus", "auditor", "nobody", ""]) | st.text(max_size=20),
    st.sampled_from([PASSWORD, b"audit", b"x" * 73, b"\xff" * 100, b""]) | st.binary(max_size=120))
authorizations = st.none() | latin.map(lambda t: "Basic " + t) | user_passwords.map(
    lambda up: "Basic " + base64.b64encode(up[0].encode() + b":" + up[1]).decode())
routes = st.sampled_from(["/", "/metrics", "/healthz", "/sessions"])
queries = st.lists(st.tuples(st.sampled_from(["username", "project", "gateway", "kind"])
                             | st.text(max_size=10), st.text(max_size=30)), max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=routes, query=queries, accept=accepts, encoding=encodings,
       authorization=authorizations)
def test_client_input_never_breaks_the_exporter(served: Served, route: str,
                                                query: list[tuple[str, str]], accept: str,
                                                encoding: str, authorization: str | None
                                                ) -> None:
    headers = {"Accept": accept, "Accept-Encoding": encoding}
    if authorization is not None:
        headers["Authorization"] = authorization
    connection = http.client.HTTPConnection(served.host, served.port, timeout=20)
    try:
        connection.request("GET", route + "?" + urlencode(query), headers=headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status < 500, (route, query, headers, response.status)
    assert not served.errors, [r.getMessage() for r in served.errors]
    assert served.app[EXPOSITION].cached_bodies <= len(FORMATS)


def test_the_property_reaches_the_cache(served: Served) -> None:
    """The property above means something only if scrapes with credentials get through."""
    auth = "Basic " + base64.b64encode(b"prometheus:" + PASSWORD).decode()
    for accept in ("application/openmetrics-text; version=1.0.0", ""):
        connection = http.client.HTTPConnection(served.host, served.port, timeout=20)
        connection.request("GET", "/metrics", headers={"Accept": accept, "Authorization": auth})
        assert connection.getresponse().status == 200
        connection.close()
    assert served.app[EXPOSITION].cached_bodies >= 2
