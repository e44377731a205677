"""Every typed key the aiohttp application carries, declared in one place.

The running configuration is not among them: it is `app[FLEET].config`, the one place every
reader consults, so a reload is seen everywhere at once; the web configuration's is
`app[WEB].current`.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from exporter.clock import Clock
from exporter.polling.fleet import Fleet
from exporter.reload import Reloader
from exporter.web.auth import ReplaceableAuth
from exporter.web.exposition import Exposition
from exporter.web.in_flight import InFlight
from exporter.web.webconfig import LiveWebConfig

CLOCK = web.AppKey("clock", Clock)
FLEET = web.AppKey("fleet", Fleet)
EXPOSITION = web.AppKey("exposition", Exposition)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
RELOADER = web.AppKey("reloader", Reloader)
SESSIONS_AUTH = web.AppKey("sessions_auth", ReplaceableAuth)
SESSIONS_IN_FLIGHT = web.AppKey("sessions_in_flight", InFlight)
WEB_AUTH = web.AppKey("web_auth", ReplaceableAuth)
WEB = web.AppKey("web", LiveWebConfig)
