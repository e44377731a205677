"""The exporter's aiohttp application: routes, and the resources that live and die with it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from exporter import __version__
from exporter.appkeys import CLOCK, CONFIG, EXPOSITION, FLEET, HTTP_CLIENT
from exporter.auth import BasicAuth, auth_middleware
from exporter.clock import Clock, SystemClock
from exporter.config import Config
from exporter.exposition import Exposition, negotiate
from exporter.fleet import Fleet
from exporter.landing import render_landing
from exporter.negotiation import accepts_gzip
from exporter.sessions_endpoint import sessions_handler
from exporter.webconfig import WebConfig

USER_AGENT = f"ignition-exporter/{__version__}"


def gateway_connection_limit(config: Config) -> int:
    """How many connections to gateways may be open at once (each takes a file descriptor)."""
    return max(100, 2 * len(config.gateways))


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One connection pool for every gateway; per-gateway TLS is chosen per request."""
    connector = aiohttp.TCPConnector(limit=gateway_connection_limit(app[CONFIG]))
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"User-Agent": USER_AGENT}) as session:
        app[HTTP_CLIENT] = session
        yield


async def polling_ctx(app: web.Application) -> AsyncIterator[None]:
    app[FLEET].start(app[HTTP_CLIENT])
    yield
    await app[FLEET].stop()


async def landing(request: web.Request) -> web.Response:
    app = request.app
    html = render_landing(app[FLEET].statuses(), app[CLOCK].time(), __version__,
                          app[CONFIG].sessions_endpoint)
    return web.Response(text=html, content_type="text/html")


async def metrics(request: web.Request) -> web.Response:
    """The body comes from the cache, in one of the exporter's own formats, labelled with the
    exporter's own Content-Type for it (never text echoed from the request)."""
    app = request.app
    fmt = negotiate(",".join(request.headers.getall(hdrs.ACCEPT, [])))
    compress = accepts_gzip(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])))
    body = app[EXPOSITION].body(app[FLEET].statuses(), app[CLOCK].time(), fmt, compress)
    headers = {hdrs.CONTENT_TYPE: fmt.content_type, hdrs.VARY: hdrs.ACCEPT_ENCODING}
    if compress:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    """The exporter's own health: 200 while it serves. Gateways' health is `ignition_up`."""
    return web.json_response({"status": "ok"})


def _middlewares(config: Config, web_config: WebConfig) -> list[Middleware]:
    users = web_config.basic_auth_users
    sessions_users = config.sessions_users
    if not users and not sessions_users:
        return []
    return [auth_middleware(BasicAuth(users) if users else None,
                            BasicAuth(sessions_users) if sessions_users else None)]


def _extra_headers(headers: Mapping[str, str]) -> Callable[[web.Request, web.StreamResponse],
                                                            Awaitable[None]]:
    async def add(_: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(headers)

    return add


def create_app(config: Config, *, web_config: WebConfig | None = None,
               clock: Clock | None = None, rng: random.Random | None = None) -> web.Application:
    web_config = web_config or WebConfig()
    clock = clock or SystemClock()
    app = web.Application(middlewares=_middlewares(config, web_config))
    app[CONFIG] = config
    app[CLOCK] = clock
    app[EXPOSITION] = Exposition(config.privacy.has_username_label)
    app[FLEET] = Fleet(config, clock, rng, prepare=app[EXPOSITION].prepare)
    if web_config.headers:
        app.on_response_prepare.append(_extra_headers(web_config.headers))
    app.cleanup_ctx.append(http_client_ctx)
    app.cleanup_ctx.append(polling_ctx)
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if config.sessions_endpoint:
        app.router.add_get("/sessions", sessions_handler)
    return app
