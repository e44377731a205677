"""A gateway stand-in that misbehaves on demand, the way real gateways and proxies do.

It wraps a `GatewaySimulator` (whose good answers it serves in mode `ok`) and is switched
between faults by setting `mode`, so one test can take a gateway down and bring it back.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web

from exporter.simulator import WEBDEV_PATH, GatewaySimulator

PROXY_ERROR_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body>"
                    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
                    b"</body></html>")


class Fault(StrEnum):
    OK = "ok"
    HTTP_500 = "http_500"
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


@dataclass
class FaultyGateway:
    simulator: GatewaySimulator = field(default_factory=GatewaySimulator)
    mode: Fault = Fault.OK
    delay: float = 30.0
    large_bytes: int = 64 * 1024 * 1024
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
        simple = _SIMPLE_ANSWERS.get(mode)
        if simple is not None:
            status, content_type, body = simple
            return web.Response(status=status, body=body, content_type=content_type)
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


_SIMPLE_ANSWERS: dict[Fault, tuple[int, str, bytes]] = {
    Fault.HTTP_500: (500, "text/plain", b"Internal Server Error"),
    Fault.HTTP_503: (503, "text/plain", b"Gateway is starting"),
    Fault.PROXY_502: (502, "text/html", PROXY_ERROR_PAGE),
    Fault.HTML_200: (200, "text/html", b"<html><body>Please log in</body></html>"),
    Fault.UNAUTHORIZED: (401, "application/json", b'{"error": "unauthorized"}'),
    Fault.FORBIDDEN: (403, "application/json", b'{"error": "forbidden"}'),
    Fault.GARBAGE: (200, "application/json", b"\x00\x17this is {not json"),
    Fault.WRONG_SHAPE: (200, "application/json", b'[{"schema": 1}]'),
    Fault.WRONG_SCHEMA: (200, "application/json", b'{"schema": 99, "perspective": []}'),
}


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def faulty_app(gateway: FaultyGateway) -> web.Application:
    app = web.Application()
    app.router.add_get(WEBDEV_PATH, gateway.handle)
    return app
