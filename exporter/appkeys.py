"""Every typed key the aiohttp application carries, declared in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from exporter.clock import Clock
from exporter.config import Config
from exporter.fleet import Fleet

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
FLEET = web.AppKey("fleet", Fleet)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
