"""The exporter's aiohttp application: routes, and the resources that live and die with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web

from exporter import __version__
from exporter.clock import Clock, SystemClock
from exporter.config import Config, ConfigError
from exporter.polling.fleet import Fleet
from exporter.reload import Apply, Reloader
from exporter.web.appkeys import (
    CLOCK,
    EXPOSITION,
    FLEET,
    HTTP_CLIENT,
    RELOADER,
    SESSIONS_AUTH,
    SESSIONS_IN_FLIGHT,
    WEB,
    WEB_AUTH,
)
from exporter.web.auth import ReplaceableAuth, auth_middleware
from exporter.web.exposition import Exposition, negotiate
from exporter.web.in_flight import InFlight
from exporter.web.landing import render_landing
from exporter.web.negotiation import accepts_gzip
from exporter.web.sessions_endpoint import sessions_handler
from exporter.web.webconfig import LiveWebConfig, WebConfig

log = logging.getLogger("exporter.reload")
USER_AGENT = f"ignition-exporter/{__version__}"


def gateway_connection_limit(config: Config) -> int:
    """How many connections to gateways may be open at once (each takes a file descriptor).
    Sized at start-up; gateways a reload adds share it (their requests queue for it)."""
    return max(100, 2 * len(config.gateways))


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One connection pool for every gateway; per-gateway TLS and cookies are chosen per
    request (`GatewayClient`), so the pool keeps no cookies of its own."""
    connector = aiohttp.TCPConnector(limit=gateway_connection_limit(app[FLEET].config))
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT},
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        app[HTTP_CLIENT] = session
        yield


async def polling_ctx(app: web.Application) -> AsyncIterator[None]:
    app[FLEET].start(app[HTTP_CLIENT])
    yield
    await app[FLEET].stop()


async def reload_ctx(app: web.Application) -> AsyncIterator[None]:
    """The task that runs reloads asked for by SIGHUP; it lives and dies with the app."""
    task = asyncio.create_task(app[RELOADER].watch(), name="reload")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def landing(request: web.Request) -> web.Response:
    app = request.app
    fleet = app[FLEET]
    html = render_landing(fleet.statuses(), app[CLOCK].time(), __version__,
                          fleet.config.sessions_endpoint)
    return web.Response(text=html, content_type="text/html")


# Both request headers choose the body: a cache in front must key on both, or it would give
# a client asking for the text format the OpenMetrics body another client asked for.
_METRICS_VARY = f"{hdrs.ACCEPT}, {hdrs.ACCEPT_ENCODING}"


async def metrics(request: web.Request) -> web.Response:
    """The body comes from the cache, in one of the exporter's own formats, labelled with the
    exporter's own Content-Type for it (never text echoed from the request)."""
    app = request.app
    fmt = negotiate(",".join(request.headers.getall(hdrs.ACCEPT, [])))
    compress = accepts_gzip(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])))
    body = app[EXPOSITION].body(app[FLEET].statuses(), app[CLOCK].time(), fmt, compress,
                                app[RELOADER].status)
    headers = {hdrs.CONTENT_TYPE: fmt.content_type, hdrs.VARY: _METRICS_VARY}
    if compress:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    """The exporter's own health: 200 while it serves. Gateways' health is `ignition_up`."""
    return web.json_response({"status": "ok"})


async def _extra_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The web configuration's `http_server_config.headers`, as they are now."""
    headers = request.app[WEB].current.headers
    if headers:
        response.headers.update(headers)


async def reload_endpoint(request: web.Request) -> web.Response:
    """`POST /-/reload` with `--web.enable-lifecycle`; answers as Prometheus does."""
    try:
        await request.app[RELOADER].reload()
    except ConfigError as exc:
        return web.Response(status=500, text=f"failed to reload config: {exc}")
    return web.Response()


async def lifecycle_disabled(_: web.Request) -> web.Response:
    return web.Response(status=403, text="Lifecycle API is not enabled.")


async def lifecycle_wrong_method(_: web.Request) -> web.Response:
    return web.Response(status=405, text="Only POST or PUT requests allowed")


@dataclass(frozen=True, slots=True)
class Settings:
    """What a reload reads: the configuration and the web configuration, both valid."""

    config: Config
    web: WebConfig


def _reader(app: web.Application, load: Callable[[], Config],
            load_web: Callable[[], WebConfig] | None) -> Callable[[], Settings]:
    def read() -> Settings:
        live = app[WEB]
        return Settings(load(), live.check(load_web()) if load_web else live.current)

    return read


def _applier(app: web.Application) -> Apply[Settings]:
    """How new settings reach everything that depends on them."""
    async def apply(settings: Settings) -> Mapping[str, object]:
        config = settings.config
        changes = await app[FLEET].reload(config)
        app[EXPOSITION].configure(config.privacy.has_username_label)
        app[SESSIONS_AUTH].set_users(config.sessions_users)
        app[WEB].replace(settings.web)
        app[WEB_AUTH].set_users(settings.web.basic_auth_users)
        for warning in config.warnings:
            log.warning("configuration", extra={"warning": warning})
        return changes

    return apply


def create_app(config: Config, *, web_config: WebConfig | None = None,
               clock: Clock | None = None, rng: random.Random | None = None,
               load: Callable[[], Config] | None = None,
               load_web: Callable[[], WebConfig] | None = None,
               lifecycle: bool = False) -> web.Application:
    """`load` and `load_web` read the configuration and the web configuration again for a
    reload (default: unchanged); `lifecycle` enables `POST /-/reload`."""
    web_config = web_config or WebConfig()
    clock = clock or SystemClock()
    web_auth = ReplaceableAuth(web_config.basic_auth_users)
    sessions_auth = ReplaceableAuth(config.sessions_users)
    app = web.Application(middlewares=[auth_middleware(web_auth, sessions_auth)])
    app[WEB_AUTH], app[SESSIONS_AUTH] = web_auth, sessions_auth
    app[SESSIONS_IN_FLIGHT] = InFlight()
    app[CLOCK] = clock
    app[EXPOSITION] = Exposition(config.privacy.has_username_label)
    app[FLEET] = Fleet(config, clock, rng, prepare=app[EXPOSITION])
    app[WEB] = LiveWebConfig(web_config)
    app[RELOADER] = Reloader(_reader(app, load or (lambda: config), load_web), _applier(app),
                             clock)
    app.on_response_prepare.append(_extra_headers)
    app.cleanup_ctx.append(http_client_ctx)
    app.cleanup_ctx.append(polling_ctx)
    app.cleanup_ctx.append(reload_ctx)
    _routes(app, lifecycle)
    return app


def _routes(app: web.Application, lifecycle: bool) -> None:
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/sessions", sessions_handler)
    for method in ("POST", "PUT"):
        app.router.add_route(method, "/-/reload",
                             reload_endpoint if lifecycle else lifecycle_disabled)
    app.router.add_get("/-/reload", lifecycle_wrong_method)
