"""The exporter's aiohttp application: routes, and the resources that live and die with it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from exporter import __version__
from exporter.appkeys import CLOCK, CONFIG, FLEET, HTTP_CLIENT
from exporter.clock import Clock, SystemClock
from exporter.collector import SessionCollector
from exporter.config import Config
from exporter.fleet import Fleet
from exporter.landing import render_landing
from exporter.sessions_endpoint import sessions_handler

USER_AGENT = f"ignition-exporter/{__version__}"


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One connection pool for every gateway; per-gateway TLS is chosen per request."""
    connector = aiohttp.TCPConnector(limit=max(100, 2 * len(app[CONFIG].gateways)))
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
    html = render_landing(app[FLEET].statuses(), app[CLOCK].time(), __version__)
    return web.Response(text=html, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    """The exporter's own health: 200 while it serves. Gateways' health is `ignition_up`."""
    return web.json_response({"status": "ok"})


def create_app(config: Config, *, clock: Clock | None = None,
               rng: random.Random | None = None) -> web.Application:
    clock = clock or SystemClock()
    app = web.Application()
    app[CONFIG] = config
    app[CLOCK] = clock
    app[FLEET] = Fleet(config, clock, rng)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(app[FLEET].statuses, clock))
    app.cleanup_ctx.append(http_client_ctx)
    app.cleanup_ctx.append(polling_ctx)
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/sessions", sessions_handler)
    return app
