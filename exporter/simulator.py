"""A simulated Ignition gateway: the demo's data, and the stand-in tests and benchmarks poll.

It keeps a population of Perspective sessions, Vision clients and Designers that changes with
time (people log in and out, pages open, byte totals grow, the odd session goes quiet) and
serves it in the shapes a real gateway uses: the schema-1 WebDev document of
`ignition/session_exporter.py`, and the Ignition 8.3 REST API's paged lists. The field quirks
are a real gateway's too: `sessionScope` capitalised differently across versions (`ios` in
8.0, `iOS` in 8.1), `authorized`
missing before 8.1, "Unauthenticated" users, null addresses, `lastComm` as epoch ms in the
REST API.
"""

from __future__ import annotations

import hmac
import json
import random
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
PROJECTS = ("Packaging Line", "Utilities", "QA_Lab", "Shipping")
USERS = ("operator1", "operator2", "jsmith", "maría.lópez", "shift.lead", "mwagner",
         "Unauthenticated", "eng-admin")
# Vision and the Designer always require a login.
VISION_USERS = tuple(u for u in USERS if u != "Unauthenticated")
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
# Short ones are common enough that the demo shows logouts within a minute or two.
PERSPECTIVE_DURATIONS = ((0.40, 60, 900), (0.35, 900, 7_200), (0.20, 14_400, 43_200),
                         (0.05, 86_400, 864_000))
CLIENT_DURATIONS = ((0.30, 120, 900), (0.50, 7_200, 36_000), (0.20, 86_400, 432_000))


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
    # 0: the usual handful of plant users; N: N distinct users (for large series counts).
    distinct_users: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._users = (tuple(f"user{i:06d}" for i in range(self.distinct_users))
                       if self.distinct_users else USERS)
        self._serial = 0
        self._perspective: dict[str, _Perspective] = {}
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

    def _login(self, now_ms: float, already_open: bool = False) -> None:
        started_ms, ends_ms = self._lifetime(PERSPECTIVE_DURATIONS, now_ms, already_open)
        scope = self._rng.choice(SCOPES)
        session = _Perspective(
            id=self._next_id(),
            username=self._rng.choice(VISION_USERS if scope == "designer" else self._users),
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

    def _open_client(self, now_ms: float, already_open: bool = False) -> None:
        created_ms, ends_ms = self._lifetime(CLIENT_DURATIONS, now_ms, already_open)
        designer = self._rng.random() < 0.3
        client = _Client(
            client_id=f"{self._rng.getrandbits(24):06X}",
            username=self._rng.choice(VISION_USERS),
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
            del self._perspective[key]
        for key in [k for k, c in self._clients.items() if c.ends_ms <= now_ms]:
            del self._clients[key]
        if len(self._perspective) < self.target_sessions and rng.random() < 0.3:
            self._login(now_ms)
        if len(self._clients) < self.target_clients and rng.random() < 0.05:
            self._open_client(now_ms)

    # -- what a gateway returns -----------------------------------------------------------

    def _scope_text(self, scope: str) -> str:
        """As documented: 8.0 lists designer, browser, ios, android; 8.1 lists designer,
        browser, iOS, Android."""
        if self.version.startswith("8.0"):
            return scope
        return {"ios": "iOS", "android": "Android"}.get(scope, scope)

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


def _authorized(request: web.Request, token: str | None, header: str) -> bool:
    if not token:
        return True
    given = request.headers.get(header, "")
    expected = f"Bearer {token}" if header.lower() == "authorization" else token
    return hmac.compare_digest(given.encode(), expected.encode())


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized"}, status=401)


def _envelope(items: list[dict[str, Any]], shape: str) -> Any:
    return items if shape == "list" else {shape: items, "total": len(items)}


def simulator_app(sim: GatewaySimulator, *, token: str | None = None,
                  rest_envelope: str = "items",
                  rest_header: str = "X-Ignition-API-Token") -> web.Application:
    """Serve `sim` over HTTP: the WebDev document and the 8.3 REST API routes."""

    async def webdev(request: web.Request) -> web.Response:
        if not _authorized(request, token, "Authorization"):
            return _unauthorized()
        sim.advance()
        return web.Response(body=json.dumps(sim.document()).encode(),
                            content_type="application/json")

    def rest(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if not _authorized(request, token, rest_header):
                return _unauthorized()
            sim.advance()
            if kind == "perspective":
                items = sim.perspective_objects(epoch_last_comm=True)
            else:
                items = sim.client_rows(designer=kind == "designer")
            limit = int(request.query.get("limit", "100"))
            offset = int(request.query.get("offset", "0"))
            page = items[offset:offset + limit]
            return web.json_response(_envelope(page, rest_envelope))

        return handler

    app = web.Application()
    app.router.add_get(WEBDEV_PATH, webdev)
    for kind, path in REST_PATHS.items():
        app.router.add_get(path, rest(kind))
    app.router.add_get("/StatusPing", _status_ping)
    return app


async def _status_ping(_: web.Request) -> web.Response:
    return web.json_response({"state": "RUNNING"})


def fleet_app(simulators: dict[str, GatewaySimulator], **options: Any) -> web.Application:
    """Many simulated gateways behind one port, gateway NAME under `/NAME/…`."""
    app = web.Application()
    for name, simulator in simulators.items():
        app.add_subapp(f"/{name}", simulator_app(simulator, **options))
    return app
