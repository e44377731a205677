"""Basic auth and extra response headers for the exporter's own endpoints.

bcrypt is slow on purpose (tens of milliseconds a check), so it runs in a worker thread, at most
a few at a time, and a successful check is remembered: Prometheus scraping every 15 s pays
bcrypt once, not on every scrape. Failures are never cached, and an unknown user costs the same
bcrypt time as a known one, so timing does not reveal which users exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

REALM = "ignition-exporter"
CACHE_SIZE = 1024
CONCURRENT_CHECKS = 4
# A valid cost-10 hash of a random password nobody kept: checked when the user is unknown, so
# an unknown user takes as long as a wrong password.
_DUMMY_HASH = b"$2b$10$LvkNtXgvL9XmKu.SK.C7a.96L8oM0mOqM8mSJ2G4qGgvCuggned1m"
# Paths that answer without credentials: they reveal nothing, and probes cannot log in.
OPEN_PATHS = frozenset({"/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password


class BasicAuth:
    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = users
        self._cache_key = os.urandom(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._slots = asyncio.Semaphore(CONCURRENT_CHECKS)

    async def check(self, header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        digest = hmac.new(self._cache_key, user.encode() + b"\0" + password + b"\0"
                          + (hashed or b""), hashlib.sha256).digest()
        if hashed is not None and digest in self._verified:
            self._verified.move_to_end(digest)
            return True
        async with self._slots:
            ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or _DUMMY_HASH)
        if not ok or hashed is None:
            return False
        self._verified[digest] = None
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


def unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized"}, status=401,
                             headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


def auth_middleware(everything: BasicAuth | None, sessions: BasicAuth | None) -> Middleware:
    """`/sessions` may have users of its own; everything else uses the web config's users."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = sessions if request.path == "/sessions" and sessions else everything
        if guard is not None and request.path not in OPEN_PATHS \
                and not await guard.check(request.headers.get("Authorization")):
            return unauthorized()
        return await handler(request)

    return middleware
