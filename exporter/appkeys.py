"""Every typed key the aiohttp application carries, declared in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from exporter.clock import Clock
from exporter.config import Config
from exporter.exposition import Exposition
from exporter.fleet import Fleet

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
FLEET = web.AppKey("fleet", Fleet)
EXPOSITION = web.AppKey("exposition", Exposition)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
