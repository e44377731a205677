"""Basic auth and extra response headers for the exporter's own endpoints.

bcrypt is slow on purpose (tens of milliseconds a check, more at higher costs), so it runs in
a worker thread, at most a few at a time, and a successful check is remembered: Prometheus
scraping every 15 s pays bcrypt once, not on every scrape. Failures are never cached.

Timing: an unknown user is checked against the costliest configured hash (and refused
whatever the outcome), so the time taken does not tell which users exist.

Fairness: waiting checks queue per (user, client address), a few each, and are served round
robin, so a client sending wrong passwords as fast as it can delays another client's first
login by about one check per busy queue, not by its whole backlog. A check that finds its
queue (or all queues together) full is refused at once, without bcrypt: a flood costs the
flooder, and one log line per episode.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.logs import Episode

REALM = "ignition-exporter"
CACHE_SIZE = 1024
CONCURRENT_CHECKS = 4
WAITING_PER_QUEUE = 4  # per (user, client address)
WAITING_IN_ALL = 64
# bcrypt reads at most 72 bytes of a password; bcrypt 5 raises on longer ones, and
# exporter-toolkit's Go bcrypt refuses them. A longer password is simply wrong.
MAX_PASSWORD_BYTES = 72
# Paths that answer without credentials: they reveal nothing, and probes cannot log in.
OPEN_PATHS = frozenset({"/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("exporter.web.auth")


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


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a `$2b$12$…` hash (the config reader has checked its shape)."""
    return int(hashed[4:6])


class QueueFull(Exception):
    """Too many checks are waiting already: this one is refused without running."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(f"too many waiting checks for {key!r}")
        self.key = key


class FairSlots:
    """At most `slots` holders at once; waiters queue per key, at most `per_key` each and
    `in_all` together, and are let in round robin across keys."""

    def __init__(self, slots: int, per_key: int, in_all: int) -> None:
        self._free = slots
        self._per_key = per_key
        self._in_all = in_all
        self._queues: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        await self._acquire(key)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, key: Hashable) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        queue = self._queues.setdefault(key, deque())
        if len(queue) >= self._per_key or self._waiting >= self._in_all:
            if not queue:
                del self._queues[key]
            raise QueueFull(key)
        turn = asyncio.get_running_loop().create_future()
        queue.append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            self._leave(key, turn)
            raise

    def _leave(self, key: Hashable, turn: asyncio.Future[None]) -> None:
        """A cancelled waiter: out of its queue, or, if its turn had come, pass it on."""
        if turn.done() and not turn.cancelled():
            self._release()
            return
        queue = self._queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self._waiting -= 1
            if not queue:
                del self._queues[key]

    def _release(self) -> None:
        """Hand the slot to the first waiter of the next key in turn, or free it."""
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            turn = queue.popleft()
            self._waiting -= 1
            del self._queues[key]
            if queue:
                self._queues[key] = queue  # to the back of the round
            if not turn.done():  # a waiter cancelled just now is skipped
                turn.set_result(None)
                return
        self._free += 1


class BasicAuth:
    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = users
        # Unknown users are checked against the costliest hash, so they take as long as
        # the slowest known user; the outcome of that check is ignored.
        self._decoy = max(users.values(), key=bcrypt_cost)
        self._cache_key = os.urandom(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._slots = FairSlots(CONCURRENT_CHECKS, WAITING_PER_QUEUE, WAITING_IN_ALL)
        self._flooded = Episode(log, "basic auth checks refused: too many waiting; "
                                "someone may be guessing passwords")

    async def check(self, header: str | None, client: str | None = None) -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        if len(password) > MAX_PASSWORD_BYTES:
            return False
        hashed = self._users.get(user)
        digest = hmac.new(self._cache_key, user.encode() + b"\0" + password + b"\0"
                          + (hashed or b""), hashlib.sha256).digest()
        if hashed is not None and digest in self._verified:
            self._verified.move_to_end(digest)
            return True
        if not await self._bcrypt(password, hashed, user if hashed else None, client):
            return False
        self._verified[digest] = None
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    async def _bcrypt(self, password: bytes, hashed: bytes | None, user: str | None,
                      client: str | None) -> bool:
        """True only for a known user's right password. Unknown users share one queue per
        client address, so made-up names do not make queues."""
        try:
            async with self._slots.slot((user, client)):
                ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or self._decoy)
        except QueueFull:
            self._flooded.hit(client=client)
            return False
        return ok and hashed is not None


class ReplaceableAuth:
    """A set of users a reload may replace (the web configuration's, or `/sessions`' own): a
    different set gets a new `BasicAuth` (and so forgets what the old one had verified); the
    same set keeps it. No users: no check."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.current: BasicAuth | None = None
        self._users: Mapping[str, bytes] | None = None
        self.set_users(users)

    def set_users(self, users: Mapping[str, bytes]) -> None:
        if users != self._users:
            self._users = users
            self.current = BasicAuth(users) if users else None


def unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized"}, status=401,
                             headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


def auth_middleware(everything: ReplaceableAuth, sessions: ReplaceableAuth) -> Middleware:
    """`/sessions` may have users of its own; everything else uses the web config's users."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        own = sessions.current
        guard = own if request.path == "/sessions" and own else everything.current
        if guard is not None and request.path not in OPEN_PATHS and not await guard.check(
                request.headers.get("Authorization"), request.remote):
            return unauthorized()
        return await handler(request)

    return middleware
