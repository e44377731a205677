"""Basic auth and extra response headers for the exporter's own endpoints.

bcrypt is slow on purpose (tens of milliseconds a check, more at higher costs), so it runs in
a worker thread, at most a few at a time, and a successful check is remembered: Prometheus
scraping every 15 s pays bcrypt once, not on every scrape. Failures are never cached.

Timing: an unknown user is checked against the costliest configured hash (and refused
whatever the outcome), so the time taken does not tell which users exist.

Fairness: waiting checks queue per client (an IPv4 address or an IPv6 /64, `peers.py`) and
user, a few each, and are served round robin across clients, so a client sending wrong
passwords as fast as it can delays another client's first login by about one check per busy
client, not by its whole backlog. When every waiting place is taken, a client holding fewer
places than another takes one of that client's: many flooding addresses together cannot lock
out one that is not flooding. A check refused, at once or by losing its place, never runs
bcrypt: a flood costs the flooder, and one log line per episode.
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
from exporter.web.peers import peer_of

REALM = "ignition-exporter"
CACHE_SIZE = 1024
CONCURRENT_CHECKS = 4
WAITING_PER_QUEUE = 4  # per (client, user)
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
    """No waiting place for this check (or its place was given to another client's): it is
    refused without running."""

    def __init__(self, client: Hashable, user: Hashable) -> None:
        super().__init__(f"no waiting place for {user!r} from {client!r}")
        self.client = client
        self.user = user


class _Waiting:
    """One client's waiters, a queue per user, and how many they are."""

    __slots__ = ("count", "queues")

    def __init__(self) -> None:
        self.queues: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        self.count = 0

    def longest(self) -> Hashable:
        return max(self.queues, key=lambda user: len(self.queues[user]))


class FairSlots:
    """At most `slots` holders at once. Waiters queue per (client, user), at most `per_key`
    in a queue and `in_all` together, and are let in round robin: client after client, and
    within a client user after user, so a client's turn comes once a round however many
    users it tries.

    When every waiting place is taken, a newcomer whose client holds fewer places than the
    client holding most takes the newest place of that client's longest queue, whose waiter
    is refused: a flood can fill the places only while nobody else wants one, and a client
    with nothing waiting always gets in. Between the users of one client (every client
    behind one proxy) the same holds, queue against queue."""

    def __init__(self, slots: int, per_key: int, in_all: int) -> None:
        self._free = slots
        self._per_key = per_key
        self._in_all = in_all
        self._clients: OrderedDict[Hashable, _Waiting] = OrderedDict()
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self, client: Hashable, user: Hashable) -> AsyncIterator[None]:
        await self._acquire(client, user)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, client: Hashable, user: Hashable) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        self._make_room(client, user)
        turn = asyncio.get_running_loop().create_future()
        waiting = self._clients.setdefault(client, _Waiting())
        waiting.queues.setdefault(user, deque()).append(turn)
        waiting.count += 1
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            self._leave(client, user, turn)
            raise

    def _held(self, client: Hashable) -> int:
        """How many wait from `client`."""
        waiting = self._clients.get(client)
        return waiting.count if waiting else 0

    def _queued(self, client: Hashable, user: Hashable) -> int:
        """How many wait from `client` as `user` (None: an unknown user)."""
        waiting = self._clients.get(client)
        return len(waiting.queues.get(user, ())) if waiting else 0

    def _make_room(self, client: Hashable, user: Hashable) -> None:
        """Raise QueueFull unless the newcomer may wait; when every place is taken, refuse
        the waiter whose place it takes."""
        if self._queued(client, user) >= self._per_key:
            raise QueueFull(client, user)
        if self._waiting < self._in_all:
            return
        victim, queue = self._victim(client, user)
        turn = self._clients[victim].queues[queue][-1]
        self._remove(victim, queue, turn)
        if not turn.done():
            turn.set_exception(QueueFull(victim, queue))

    def _victim(self, client: Hashable, user: Hashable) -> tuple[Hashable, Hashable]:
        """Whose place a newcomer takes: the client holding most, if it holds more than the
        newcomer's; else, in the newcomer's own client, the longest queue, if it is longer
        than the newcomer's. Neither: the newcomer holds its share already."""
        heaviest = max(self._clients, key=self._held)
        if self._held(heaviest) > self._held(client):
            return heaviest, self._clients[heaviest].longest()
        longest = self._clients[client].longest()  # the newcomer's client is a heaviest
        if self._queued(client, longest) > self._queued(client, user):
            return client, longest
        raise QueueFull(client, user)

    def _remove(self, client: Hashable, user: Hashable, turn: asyncio.Future[None]) -> None:
        """Take a waiter out of its queue; an empty queue, and a client with none, go."""
        waiting = self._clients[client]
        waiting.queues[user].remove(turn)
        waiting.count -= 1
        self._waiting -= 1
        if not waiting.queues[user]:
            del waiting.queues[user]
        if not waiting.queues:
            del self._clients[client]

    def _leave(self, client: Hashable, user: Hashable, turn: asyncio.Future[None]) -> None:
        """A cancelled waiter: out of its queue, or, if its turn had come, pass it on."""
        if turn.done() and not turn.cancelled():
            if turn.exception() is None:  # not refused: the slot was handed to it
                self._release()
            return
        waiting = self._clients.get(client)
        if waiting is not None and turn in waiting.queues.get(user, ()):
            self._remove(client, user, turn)

    def _release(self) -> None:
        """Hand the slot to the first waiter of the next client in turn (its next user in
        turn), or free it. Both go to the back of their rounds."""
        while self._clients:
            client, waiting = next(iter(self._clients.items()))
            user, queue = next(iter(waiting.queues.items()))
            turn = queue[0]
            self._remove(client, user, turn)
            if client in self._clients:
                self._clients.move_to_end(client)
                if user in waiting.queues:
                    waiting.queues.move_to_end(user)
            if not turn.done():  # a waiter cancelled just now is skipped
                turn.set_result(None)
                return
        self._free += 1


def flood_episode() -> Episode:
    return Episode(log, "basic auth checks refused: too many waiting; someone may be guessing "
                   "passwords")


class BasicAuth:
    """`flooded` logs the checks refused for want of a waiting place: one episode across
    the sets of users a reload makes, so replacing the users (what a flood makes an operator
    do) does not lose the flood's untold hits."""

    def __init__(self, users: Mapping[str, bytes], flooded: Episode | None = None) -> None:
        self._users = users
        # Unknown users are checked against the costliest hash, so they take as long as
        # the slowest known user; the outcome of that check is ignored.
        self._decoy = max(users.values(), key=bcrypt_cost)
        self._cache_key = os.urandom(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._slots = FairSlots(CONCURRENT_CHECKS, WAITING_PER_QUEUE, WAITING_IN_ALL)
        self._flooded = flooded or flood_episode()

    async def check(self, header: str | None, client: str | None = None) -> bool:
        self._flooded.flush()  # a flood that is over says who else took part
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
        client, so made-up names do not make queues."""
        try:
            async with self._slots.slot(peer_of(client), user):
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
        self._flooded = flood_episode()
        self.set_users(users)

    def set_users(self, users: Mapping[str, bytes]) -> None:
        if users != self._users:
            self._users = users
            self.current = BasicAuth(users, self._flooded) if users else None


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
