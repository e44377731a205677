"""A gateway stand-in that misbehaves on demand, the way real gateways and proxies do.

It wraps a `GatewaySimulator` (whose good answers it serves in mode `ok`) and is switched
between faults by setting `mode`, so one test can take a gateway down and bring it back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web

from exporter.standins.simulator import (
    GATEWAY_INFO_PATH,
    REST_PATHS,
    WEBDEV_PATH,
    GatewaySimulator,
    jetty_error_page,
)

PROXY_ERROR_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body>"
                    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
                    b"</body></html>")


class Fault(StrEnum):
    OK = "ok"
    HTTP_500 = "http_500"  # Jetty's HTML error page, as Ignition answers a failing resource
    HTTP_503 = "http_503"
    PROXY_502 = "proxy_502"  # nginx's HTML error page
    HTML_200 = "html_200"  # a login or captive page answered with 200
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    GARBAGE = "garbage"
    TRUNCATED = "truncated"
    WRONG_SHAPE = "wrong_shape"  # a list where the document object belongs
    WRONG_SCHEMA = "wrong_schema"
    BAD_SESSION = "bad_session"  # one malformed session among good ones
    SLOW = "slow"  # no answer at all for `delay` seconds
    TRICKLE = "trickle"  # headers at once, then the body a few bytes at a time
    TOO_LARGE = "too_large"
    RESET = "reset"  # the connection is dropped without an answer
    FLAP = "flap"  # good and HTTP 500, turn about
    REDIRECT_AWAY = "redirect_away"  # 302 to `redirect_to`, another origin
    WELCOME = "welcome"  # 302 to /welcome, as an 8.3 gateway does until it is commissioned
    DUPLICATE_IDS = "duplicate_ids"  # a session and a client each listed twice, one id
    DEEP_NESTING = "deep_nesting"  # one session holding JSON nested `depth` levels deep
    DEEP_DOCUMENT = "deep_document"  # the whole answer nested `depth` levels deep
    IMPOSSIBLE_NUMBERS = "impossible_numbers"  # negative, huge and overflowing numbers
    INVENTED_LABELS = "invented_labels"  # a project and a scope of its own for every session


@dataclass
class FaultyGateway:
    simulator: GatewaySimulator = field(default_factory=GatewaySimulator)
    mode: Fault = Fault.OK
    delay: float = 30.0
    large_bytes: int = 64 * 1024 * 1024
    redirect_to: str = "http://127.0.0.1:9/elsewhere"
    depth: int = 100_000
    requests: int = 0

    def _document(self) -> dict[str, object]:
        self.simulator.advance()
        return self.simulator.document()

    def _good_body(self) -> bytes:
        return json.dumps(self._document()).encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        mode = self.mode
        if mode is Fault.FLAP:
            mode = Fault.OK if self.requests % 2 else Fault.HTTP_500
        if mode in _JETTY_ERRORS:
            return jetty_error_page(_JETTY_ERRORS[mode], request.path)
        simple = _SIMPLE_ANSWERS.get(mode)
        if simple is not None:
            status, content_type, body = simple
            return web.Response(status=status, body=body, content_type=content_type)
        if mode is Fault.REDIRECT_AWAY:
            raise web.HTTPFound(self.redirect_to + request.path_qs)
        if mode is Fault.WELCOME:
            raise web.HTTPFound("/welcome")
        odd = _ODD_DOCUMENTS.get(mode)
        if odd is not None:
            return _json(odd(self._document(), self.depth))
        if mode is Fault.TRUNCATED:
            return _json(self._good_body()[:-40])
        if mode is Fault.BAD_SESSION:
            document = self._document()
            document["perspective"].insert(0, {"id": "broken", "activePages": "three"})
            document["perspective"].insert(1, "not an object")
            return _json(json.dumps(document).encode())
        if mode is Fault.SLOW:
            await asyncio.sleep(self.delay)
            return _json(self._good_body())
        if mode is Fault.TRICKLE:
            return await self._trickle(request)
        if mode is Fault.TOO_LARGE:
            return await self._too_large(request)
        if mode is Fault.RESET:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        return _json(self._good_body())

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        body = self._good_body()
        for start in range(0, len(body), 16):
            await response.write(body[start:start + 16])
            await asyncio.sleep(self.delay / 50)
        await response.write_eof()
        return response

    async def _too_large(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b'{"schema": 1, "perspective": [' + b" " * (1024 * 1024)
        sent = 0
        while sent < self.large_bytes:
            await response.write(chunk)
            sent += len(chunk)
            chunk = b" " * (1024 * 1024)
        await response.write_eof()
        return response


_JETTY_ERRORS = {Fault.HTTP_500: 500, Fault.HTTP_503: 503}
_SIMPLE_ANSWERS: dict[Fault, tuple[int, str, bytes]] = {
    Fault.PROXY_502: (502, "text/html", PROXY_ERROR_PAGE),
    Fault.HTML_200: (200, "text/html", b"<html><body>Please log in</body></html>"),
    Fault.UNAUTHORIZED: (401, "application/json", b'{"error": "unauthorized"}'),
    Fault.FORBIDDEN: (403, "application/json", b'{"error": "forbidden"}'),
    Fault.GARBAGE: (200, "application/json", b"\x00\x17this is {not json"),
    Fault.WRONG_SHAPE: (200, "application/json", b'[{"schema": 1}]'),
    Fault.WRONG_SCHEMA: (200, "application/json", b'{"schema": 99, "perspective": []}'),
}


def _duplicate_ids(document: dict[str, Any], _: int) -> bytes:
    """The first session and client repeated with other numbers: a broken gateway's answer
    that, counted twice, would make the byte counter grow on an unchanging payload."""
    for key, total in (("perspective", "totalBytesSent"), ("vision", "creationTime")):
        items: list[dict[str, Any]] = document[key]
        if items:
            items.append({**items[0], total: items[0][total] // 2 + 1})
    return json.dumps(document).encode()


def _deep_nesting(document: dict[str, Any], depth: int) -> bytes:
    document["perspective"].insert(1, {"id": "deep", "username": "deep", "pageIds": "<deep>"})
    return json.dumps(document).encode().replace(b'"<deep>"', b"[" * depth + b"]" * depth)


def _deep_document(_: dict[str, Any], depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


IMPOSSIBLE_SESSIONS = (  # (id, field, JSON text of the value); each makes its session invalid
    ("huge-1", "totalBytesSent", "1e308"), ("huge-2", "totalBytesSent", "1e308"),
    ("overflow", "totalBytesSent", "1e999"),
    ("above-2-63", "totalBytesSent", "18446744073709551616"),
    ("negative-pages", "activePages", "-5"), ("negative-recent", "recentBytesSent", "-5"),
    ("negative-last-comm", "lastComm", "-1"), ("not-a-number", "recentBytesSent", '"NaN"'),
)


def _impossible_numbers(document: dict[str, Any], _: int) -> bytes:
    """Sessions whose counts no gateway can mean, beside good ones; one good session sends
    its numbers as numeric strings, as a script stringifying Java values may."""
    sessions: list[dict[str, Any]] = document["perspective"]
    if sessions:
        first = sessions[0]
        for key in ("activePages", "recentBytesSent", "totalBytesSent"):
            first[key] = str(first[key])
    for index, (session_id, key, _text) in enumerate(IMPOSSIBLE_SESSIONS):
        sessions.append({"id": session_id, "username": "impossible", "project": "P",
                         "sessionScope": "browser", key: f"<{index}>"})
    body = json.dumps(document).encode()
    for index, (_id, _key, text) in enumerate(IMPOSSIBLE_SESSIONS):
        body = body.replace(f'"<{index}>"'.encode(), text.encode())
    return body


def _invented_labels(document: dict[str, Any], _: int) -> bytes:
    """Every session and client in a project of its own, every session in a scope of its
    own: what a broken gateway (or a script mixing up its fields) could send, and what would
    multiply every series with a project or scope label."""
    for index, session in enumerate(document["perspective"]):
        session["project"], session["sessionScope"] = f"invented-{index}", f"scope-{index}"
    for index, client in enumerate(document["vision"]):
        client["project"] = f"invented-client-{index}"
    return json.dumps(document).encode()


_ODD_DOCUMENTS: dict[Fault, Callable[[dict[str, Any], int], bytes]] = {
    Fault.DUPLICATE_IDS: _duplicate_ids,
    Fault.DEEP_NESTING: _deep_nesting,
    Fault.DEEP_DOCUMENT: _deep_document,
    Fault.IMPOSSIBLE_NUMBERS: _impossible_numbers,
    Fault.INVENTED_LABELS: _invented_labels,
}


@dataclass
class CredentialTrap:
    """Another origin, for a gateway to redirect to: it records every request's credentials
    (which it must never see) and answers a valid document, as an impostor would."""

    received: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append({name: value for name, value in request.headers.items()
                              if name.lower() in _CREDENTIAL_HEADERS})
        return web.json_response({"schema": 1, "perspective": [], "vision": []})


_CREDENTIAL_HEADERS = {"authorization", "x-ignition-api-token", "cookie"}


def trap_app(trap: CredentialTrap) -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", trap.handle)
    return app


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def faulty_app(gateway: FaultyGateway) -> web.Application:
    """Serve `gateway` on the WebDev path and, for the redirect faults, the REST routes."""
    app = web.Application()
    app.router.add_get(WEBDEV_PATH, gateway.handle)
    for path in (*REST_PATHS.values(), GATEWAY_INFO_PATH):
        app.router.add_get(path, gateway.handle)
    return app
