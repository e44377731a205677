"""A simulated Ignition gateway: the demo's data, and the stand-in tests and benchmarks poll.

It keeps a population of Perspective sessions, Vision clients and Designers that changes with
time (people log in and out, pages open, byte totals grow, the odd session goes quiet) and
serves it in the shapes a real gateway uses: the schema-1 WebDev document of
`ignition/session_exporter.py`, and the Ignition 8.3 REST API as captured from live gateways
(the `{"items", "metadata": {"total"}}` envelope, Vision and Designer items shaped `{id, user,
address, project, uptime, lastcomm, timeout, memory, timezone}`, a JSON 404 for a module that
is not installed, Jetty's HTML error pages, the 302 to `/welcome` of an uncommissioned
gateway, `gateway-info`, API keys as `<name>:<secret>` in either header). The field quirks are
a real gateway's too: `sessionScope` spelled as each version documents it (8.0 `ios`, 8.1
`iOS`/`Android`/`Designer`, 8.3 lower case), `authorized` missing before 8.1,
"Unauthenticated" users ("anonymous" in the 8.3 API), null addresses, `lastComm` as epoch ms
in the REST API.
"""

from __future__ import annotations

import hmac
import html
import json
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.clock import Clock, SystemClock

WEBDEV_PATH = "/system/webdev/monitoring/sessions"
REST_PATHS = {
    "perspective": "/data/perspective/api/v1/sessions/",
    "vision": "/data/vision/api/v1/clients",
    "designer": "/data/api/v1/designers",
}
GATEWAY_INFO_PATH = "/data/api/v1/gateway-info"
WELCOME_PATH = "/welcome"
SHAPES = ("both", "webdev", "rest")
TIMEZONES = ("America/Chicago", "Europe/Berlin", "UTC")
PROJECTS = ("Packaging Line", "Utilities", "QA_Lab", "Shipping")
USERS = ("operator1", "operator2", "jsmith", "maría.lópez", "shift.lead", "mwagner",
         "Unauthenticated", "eng-admin")
# The plant of `--demo` and `simulate`: 16 users, room for their 40 sessions at
# QUIET_SESSIONS_PER_USER each to spare.
PLANT_USERS = (*USERS, "operator3", "operator4", "qa.tech", "maint.lead", "hkumar", "pwong",
               "shipping.clerk", "lab.analyst")
# IgnitionUserTooManySessions' default threshold (rules/ignition.rules.yml): it fires for a
# user holding more sessions than this.
USER_SESSIONS_ALERT_THRESHOLD = 5
# Random draws a login makes among all users before it looks for those below the cap.
_DRAWS = 8
# The most Perspective sessions one user holds in the demo and `simulate` (a phone, a PC and
# a wall screen or two): below that threshold, since a user holding more is what the alert
# is for, and sample data must not page anyone.
QUIET_SESSIONS_PER_USER = 4
SCOPES = ("browser", "browser", "browser", "ios", "android", "designer")
USER_AGENTS = {
    "browser": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
    "ios": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) PerspectiveApp/1.4",
    "android": "Mozilla/5.0 (Linux; Android 14) PerspectiveApp/1.4",
    "designer": "Ignition Designer",
}
PAGES = ("/", "/overview", "/line/1", "/line/2", "/alarms", "/trends", "/reports")
# How long sessions last: (share, shortest, longest) in seconds, log-uniform within each
# range. Perspective: a quick look at a screen, a task, a shift, a wall screen left open for
# days. Vision clients and Designers: a quick check, a working day, a client left running.
# Short ones are common enough that the demo shows logouts within a minute or two. None
# lasts 7 days, the shipped rules' IgnitionSessionsOpenTooLong threshold: sample data must
# not raise an alert (a session's age never exceeds its length).
PERSPECTIVE_DURATIONS = ((0.40, 60, 900), (0.35, 900, 7_200), (0.20, 14_400, 43_200),
                         (0.05, 86_400, 518_400))
CLIENT_DURATIONS = ((0.30, 120, 900), (0.50, 7_200, 36_000), (0.20, 86_400, 432_000))
# The chance, each second, that one missing session logs in (or client opens): gaps fill
# within seconds, Vision clients more slowly, as people start them less often.
PERSPECTIVE_LOGIN_CHANCE = 0.3
CLIENT_OPEN_CHANCE = 0.05


def plant_users(sessions: int) -> tuple[str, ...]:
    """PLANT_USERS, and as many more (`operator5`, `operator6`, ...) as `sessions` need for
    none to hold more than QUIET_SESSIONS_PER_USER."""
    extra = max(0, math.ceil(sessions / QUIET_SESSIONS_PER_USER) - len(PLANT_USERS))
    return PLANT_USERS + tuple(f"operator{5 + i}" for i in range(extra))


@dataclass
class _Perspective:
    id: str
    username: str
    project: str
    scope: str
    address: str | None
    started_ms: float
    last_comm_ms: float
    pages: list[str]
    total_bytes: int
    recent_bytes: int = 0
    quiet: bool = False  # stopped communicating: becomes an idle (zombie) session
    ends_ms: float = float("inf")  # when the user logs out


@dataclass
class _Client:
    client_id: str
    username: str
    project: str
    address: str
    designer: bool
    created_ms: float
    ends_ms: float = float("inf")


@dataclass
class GatewaySimulator:
    """A gateway whose sessions evolve on each `advance()`; deterministic for a given seed."""

    name: str = "demo-gateway"
    version: str = "8.1.33"
    seed: int = 0
    target_sessions: int = 40
    target_clients: int = 6
    clock: Clock = field(default_factory=SystemClock)
    perspective_module: bool = True
    vision_module: bool = True
    # 0: the plant's `users`; N: N distinct users (for large series counts).
    distinct_users: int = 0
    users: tuple[str, ...] = USERS
    # At most this many Perspective sessions per username at once (0: no limit): a login
    # picks among the users below it, so a demo's users stay below an alert's threshold.
    max_sessions_per_user: int = 0
    redundancy_role: str = "Independent"  # or Master, Backup (8.3 gateway-info)
    commissioned: bool = True  # False: every route redirects to /welcome
    failing: int | None = None  # an HTTP status every route answers with Jetty's error page

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._users = (tuple(f"user{i:06d}" for i in range(self.distinct_users))
                       if self.distinct_users else self.users)
        # Vision and the Designer always require a login. Drawn from the same users as the
        # other sessions, so `distinct_users` N are the N usernames served, no more.
        self._login_users = tuple(u for u in self._users if u != "Unauthenticated")
        self._serial = 0
        self._perspective: dict[str, _Perspective] = {}
        self._held: Counter[str] = Counter()  # Perspective sessions open per username
        self._clients: dict[str, _Client] = {}
        self._last_ms = self.clock.time() * 1000
        for _ in range(self.target_sessions):
            self._login(self._last_ms, already_open=True)
        for _ in range(self.target_clients):
            self._open_client(self._last_ms, already_open=True)

    # -- evolution ------------------------------------------------------------------------

    def _next_id(self) -> str:
        self._serial += 1
        return f"{self._rng.getrandbits(32):08x}-{self._serial:04d}"

    def _lifetime(self, durations: tuple[tuple[float, float, float], ...], now_ms: float,
                  already_open: bool) -> tuple[float, float]:
        """(start, end) in epoch ms of a session opening now, or (already_open) of one found
        open now, part-way through its life."""
        _, low, high = self._rng.choices(durations, weights=[d[0] for d in durations])[0]
        length = 1000 * low * (high / low) ** self._rng.random()
        start = now_ms - (self._rng.uniform(0, length) if already_open else 0)
        return start, start + length

    def _pick_user(self, users: tuple[str, ...]) -> str | None:
        """Who logs in: any of `users` below `max_sessions_per_user`; None if none is.

        A few draws among all of them first: unless nearly every user is at the cap, one of
        those is below it, and a login costs no pass over the users (`--sessions 100000`
        would otherwise start in quadratic time). Each is as likely as with a pass."""
        cap = self.max_sessions_per_user
        if not users:  # a Designer login where every user is anonymous
            return None
        if not cap:
            return self._rng.choice(users)
        for _ in range(_DRAWS):
            user = self._rng.choice(users)
            if self._held[user] < cap:
                return user
        below = [user for user in users if self._held[user] < cap]
        return self._rng.choice(below) if below else None

    def _login(self, now_ms: float, already_open: bool = False) -> None:
        started_ms, ends_ms = self._lifetime(PERSPECTIVE_DURATIONS, now_ms, already_open)
        scope = self._rng.choice(SCOPES)
        session_id = self._next_id()
        username = self._pick_user(self._login_users if scope == "designer" else self._users)
        if username is None:
            return
        session = _Perspective(
            id=session_id,
            username=username,
            project=self._rng.choice(PROJECTS),
            scope=scope,
            address=None if scope == "designer" else f"10.20.{self._rng.randint(1, 9)}."
                                                       f"{self._rng.randint(2, 250)}",
            started_ms=started_ms,
            last_comm_ms=now_ms,
            pages=[self._rng.choice(PAGES) for _ in range(self._rng.randint(1, 3))],
            total_bytes=self._rng.randint(2_000, 20_000),
            quiet=self._rng.random() < 0.08,
            ends_ms=ends_ms,
        )
        self._perspective[session.id] = session
        self._held[username] += 1

    def _open_client(self, now_ms: float, already_open: bool = False) -> None:
        created_ms, ends_ms = self._lifetime(CLIENT_DURATIONS, now_ms, already_open)
        designer = self._rng.random() < 0.3
        client = _Client(
            client_id=f"{self._rng.getrandbits(24):06X}",
            username=self._rng.choice(self._login_users),
            project=self._rng.choice(PROJECTS),
            address=f"10.30.0.{self._rng.randint(2, 250)}",
            designer=designer,
            created_ms=created_ms,
            ends_ms=ends_ms,
        )
        self._clients[client.client_id] = client

    def advance(self) -> None:
        """Move the population forward by the wall time elapsed since the last call."""
        now_ms = self.clock.time() * 1000
        elapsed = max(0.0, (now_ms - self._last_ms) / 1000)
        self._last_ms = now_ms
        steps = min(int(elapsed) + 1, 60)
        for _ in range(steps if elapsed else 0):
            self._step(now_ms)

    def _step(self, now_ms: float) -> None:
        rng = self._rng
        for session in list(self._perspective.values()):
            if session.quiet:
                session.recent_bytes = 0
                continue
            session.recent_bytes = rng.randint(200, 4_000)
            session.total_bytes += session.recent_bytes
            session.last_comm_ms = now_ms - rng.uniform(0, 900)
            if rng.random() < 0.05:
                session.pages = [rng.choice(PAGES) for _ in range(rng.randint(1, 4))]
        for key in [k for k, s in self._perspective.items() if s.ends_ms <= now_ms]:
            self._held[self._perspective.pop(key).username] -= 1
        for key in [k for k, c in self._clients.items() if c.ends_ms <= now_ms]:
            del self._clients[key]
        for _ in range(self._arrivals(self.target_sessions - len(self._perspective),
                                      PERSPECTIVE_LOGIN_CHANCE)):
            self._login(now_ms)
        for _ in range(self._arrivals(self.target_clients - len(self._clients),
                                      CLIENT_OPEN_CHANCE)):
            self._open_client(now_ms)

    def _arrivals(self, missing: int, chance: float) -> int:
        """How many of the `missing` sessions arrive in this second: each with `chance`, so
        the population stays near its target whatever its size. (One a second at most let
        `--sessions 2000` fall to 1,400 in three minutes, as the sessions found open ended.)"""
        return sum(self._rng.random() < chance for _ in range(missing))

    # -- what a gateway returns -----------------------------------------------------------

    def _scope_text(self, scope: str) -> str:
        """As documented: 8.0 lists designer, browser, ios, android; 8.1 pages show iOS,
        Android and Designer; 8.3 is lower case again."""
        if self.version.startswith(("8.0", "8.3")):
            return scope
        return {"ios": "iOS", "android": "Android", "designer": "Designer"}.get(scope, scope)

    def perspective_objects(self, *, epoch_last_comm: bool = False) -> list[dict[str, Any]]:
        now_ms = self._last_ms
        out = []
        for s in self._perspective.values():
            item: dict[str, Any] = {
                "userAgent": USER_AGENTS[s.scope],
                "id": s.id,
                "username": s.username,
                "project": s.project,
                "uptime": int(now_ms - s.started_ms),
                "clientAddress": s.address,
                "lastComm": int(s.last_comm_ms if epoch_last_comm else now_ms - s.last_comm_ms),
                "sessionScope": self._scope_text(s.scope),
                "activePages": len(s.pages),
                "recentBytesSent": s.recent_bytes,
                "totalBytesSent": s.total_bytes,
                "pageIds": list(s.pages),
            }
            if not self.version.startswith("8.0"):
                item["authorized"] = s.username != "Unauthenticated"
            out.append(item)
        return out

    def rest_perspective_items(self) -> list[dict[str, Any]]:
        """`GET /data/perspective/api/v1/sessions/` items: the 8.3 keys, `lastComm` as epoch
        ms, "anonymous" for a public session (as a live 8.3.6 capture shows)."""
        keys = ("id", "username", "authorized", "project", "clientAddress", "lastComm",
                "sessionScope", "activePages", "pageIds", "recentBytesSent", "totalBytesSent",
                "userAgent")
        items = []
        for item in self.perspective_objects(epoch_last_comm=True):
            if item["username"] == "Unauthenticated":
                item["username"] = "anonymous"
            items.append({key: item.get(key) for key in keys})
        return items

    def rest_client_items(self, *, designer: bool) -> list[dict[str, Any]]:
        """`GET /data/vision/api/v1/clients` or `/data/api/v1/designers` items: not
        `getSessionInfo` rows. `uptime` is a duration in ms, `lastcomm` epoch ms."""
        now_ms = self._last_ms
        items = []
        for c in self._clients.values():
            if c.designer != designer:
                continue
            serial = int(c.client_id, 16)
            item: dict[str, Any] = {
                "id": c.client_id, "user": c.username,
                "address": f"{c.address}:{50000 + serial % 9999}",
                "project": c.project, "uptime": int(now_ms - c.created_ms),
                "lastcomm": int(now_ms - serial % 900), "timeout": 60_000,
                "memory": {"used": 134_217_728 + serial % 65536, "max": 536_870_912},
                "timezone": TIMEZONES[serial % len(TIMEZONES)],
            }
            if not designer:
                item["tagCount"] = serial % 2000
            items.append(item)
        return items

    def gateway_info(self) -> dict[str, Any]:
        """`GET /data/api/v1/gateway-info`, keys as a live 8.3.6 gateway sends them."""
        return {"name": self.name, "redundancyRole": self.redundancy_role,
                "edition": "standard", "ignitionVersion": self.version,
                "jvmVersion": "17.0.11", "license": {"mode": "Licensed"}}

    def client_rows(self, *, designer: bool | None = None) -> list[dict[str, Any]]:
        return [
            {"username": c.username, "project": c.project, "address": c.address,
             "isDesigner": c.designer, "clientId": c.client_id,
             "creationTime": int(c.created_ms)}
            for c in self._clients.values()
            if designer is None or c.designer == designer
        ]

    def document(self) -> dict[str, Any]:
        """The schema-1 document, as `ignition/session_exporter.py` builds it."""
        warnings = []
        if not self.perspective_module:
            warnings.append("Perspective module not installed: no Perspective sessions")
        if not self.vision_module:
            warnings.append("Vision module not installed: no Vision clients")
        return {
            "schema": 1,
            "gateway": {"name": self.name, "version": self.version},
            "collectedAt": int(self._last_ms),
            "perspective": self.perspective_objects() if self.perspective_module else [],
            "vision": self.client_rows() if self.vision_module else [],
            "warnings": warnings,
        }

    def iter_usernames(self) -> Iterator[str]:
        return (s.username for s in self._perspective.values())


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _webdev_authorized(request: web.Request, token: str | None) -> bool:
    """The gateway script's check: `Authorization: Bearer <TOKEN>`."""
    return not token or _same(request.headers.get("Authorization", ""), f"Bearer {token}")


def _api_key_accepted(request: web.Request, key: str | None) -> bool:
    """8.3's check: `<name>:<secret>` in `X-Ignition-API-Token`, or after `Bearer ` in
    `Authorization`; the secret alone is not a key, so a stand-in given one accepts nothing."""
    if not key:
        return True
    if ":" not in key:
        return False
    legacy = request.headers.get("X-Ignition-API-Token", "")
    bearer = request.headers.get("Authorization", "")
    return _same(legacy, key) or _same(bearer, f"Bearer {key}")


def jetty_error_page(status: int, uri: str) -> web.Response:
    """An error as Ignition's Jetty answers it: an HTML page, never JSON."""
    phrase = _REASONS.get(status, "Error")
    uri = html.escape(uri)
    body = (f"<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;"
            f"charset=ISO-8859-1\"/>\n<title>Error {status} {phrase}</title>\n</head>\n"
            f"<body><h2>HTTP ERROR {status} {phrase}</h2>\n<table>\n"
            f"<tr><th>URI:</th><td>{uri}</td></tr>\n<tr><th>STATUS:</th><td>{status}</td></tr>\n"
            f"<tr><th>MESSAGE:</th><td>{phrase}</td></tr>\n</table>\n"
            f"<hr/><a href=\"https://eclipse.org/jetty\">Powered by Jetty:// 10.0.20</a><hr/>\n"
            f"\n</body>\n</html>\n")
    return web.Response(status=status, body=body.encode("iso-8859-1"),
                        content_type="text/html", charset="iso-8859-1")


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            500: "Server Error", 503: "Service Unavailable"}


def _no_route(request: web.Request) -> web.Response:
    """A module that is not installed: its routes do not exist (a JSON 404)."""
    return web.json_response({"message": f"No route match for path: {request.path}"},
                             status=404)


def _page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
    """One page in the 8.3 envelope; `limit` absent or -1 means everything."""
    try:
        limit = int(request.query.get("limit", "-1"))
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        return jetty_error_page(400, request.path)
    page = items[offset:] if limit < 0 else items[offset:offset + limit]
    return web.json_response({"items": page, "metadata": {
        "total": len(items), "matching": len(items), "limit": limit, "offset": offset}})


def _gateway_state(sim: GatewaySimulator) -> Any:
    """Answers that come before any route: an uncommissioned or a failing gateway."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not sim.commissioned and request.path != WELCOME_PATH:
            raise web.HTTPFound(WELCOME_PATH)
        if sim.failing is not None and request.path != WELCOME_PATH:
            return jetty_error_page(sim.failing, request.path)
        return await handler(request)

    return middleware


def _add_webdev(app: web.Application, sim: GatewaySimulator, token: str | None) -> None:
    async def webdev(request: web.Request) -> web.Response:
        if not _webdev_authorized(request, token):
            return web.json_response({"error": "unauthorized"}, status=401)
        sim.advance()
        return web.Response(body=json.dumps(sim.document()).encode(),
                            content_type="application/json")

    app.router.add_get(WEBDEV_PATH, webdev)


def _add_rest(app: web.Application, sim: GatewaySimulator, key: str | None,
              gateway_read: bool) -> None:
    def guarded(answer: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if not _api_key_accepted(request, key):
                return jetty_error_page(401, request.path)
            if not gateway_read:
                return jetty_error_page(403, request.path)
            sim.advance()
            return answer(request)

        return handler

    lists = {
        "perspective": (lambda: sim.perspective_module, sim.rest_perspective_items),
        "vision": (lambda: sim.vision_module, lambda: sim.rest_client_items(designer=False)),
        "designer": (lambda: True, lambda: sim.rest_client_items(designer=True)),
    }
    for kind, (installed, items) in lists.items():
        def answer(request: web.Request, installed: Any = installed, items: Any = items
                   ) -> web.Response:
            if not installed():
                return _no_route(request)
            return _page(items(), request)

        app.router.add_get(REST_PATHS[kind], guarded(answer))
    app.router.add_get(GATEWAY_INFO_PATH,
                       guarded(lambda _: web.json_response(sim.gateway_info())))


def simulator_app(sim: GatewaySimulator, *, token: str | None = None, shape: str = "both",
                  gateway_read: bool = True) -> web.Application:
    """Serve `sim` over HTTP: the WebDev document (`shape="webdev"`), the 8.3 REST API
    (`"rest"`, where `token` is the API key `<name>:<secret>` and `gateway_read=False` makes
    its security level lack Gateway Read permission), or both."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
    if shape == "rest" and token and ":" not in token:
        raise ValueError("an 8.3 API key is <name>:<secret>, the key's name, a colon and its "
                         "secret: a gateway refuses anything else")
    app = web.Application(middlewares=[_gateway_state(sim)])
    if shape in ("both", "webdev"):
        _add_webdev(app, sim, token)
    if shape in ("both", "rest"):
        _add_rest(app, sim, token, gateway_read)
    app.router.add_get(WELCOME_PATH, _welcome)
    app.router.add_get("/StatusPing", _status_ping)
    return app


async def _welcome(_: web.Request) -> web.Response:
    return web.Response(text="<html><body>Welcome to Ignition: commission this gateway"
                             "</body></html>", content_type="text/html")


async def _status_ping(_: web.Request) -> web.Response:
    return web.json_response({"state": "RUNNING"})


def fleet_app(simulators: dict[str, GatewaySimulator], **options: Any) -> web.Application:
    """Many simulated gateways behind one port, gateway NAME under `/NAME/…`."""
    app = web.Application()
    for name, simulator in simulators.items():
        app.add_subapp(f"/{name}", simulator_app(simulator, **options))
    return app
