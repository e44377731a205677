"""`/sessions` over HTTP against a running app polling two gateway stand-ins on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.clock import SystemClock
from exporter.config import Config, GatewayConfig
from exporter.digest.privacy import Privacy
from exporter.web import sessions_endpoint
from exporter.web.appkeys import FLEET, SESSIONS_IN_FLIGHT
from exporter.web.http import create_app
from exporter.web.server import running_site
from exporter.web.sessions_endpoint import masking
from tests.certs import make_pki
from tests.conftest import ClientFactory, ServerFactory, eventually
from tests.payloads import document, encode, perspective, vision

PLANT_A = document([
    perspective("a1", "billy", "Line1", "Browser"),
    perspective("a2", "bi", "Line1", "ios"),
    perspective("a3", "abi", "Line2", "browser"),
    perspective("a4", "bill.smith", "Line2", "android"),
    perspective("a5", "billXsmith", "Line2", "designer"),
    perspective("a6", "bill", "Line1", "browser", customKey={"nested": [1, 2]}),
], [vision("billy", "Line1"), vision("operator1", "Line2", designer=True, client_id="7C01")])
PLANT_B = document([perspective("b1", "billy", "Shipping")], [])


@dataclass
class StaticGateway:
    """Serves a fixed document until told to fail."""

    body: bytes
    status: int = 200
    hits: list[float] = field(default_factory=list)

    async def handle(self, _: web.Request) -> web.Response:
        self.hits.append(time.monotonic())
        return web.Response(body=self.body, status=self.status, content_type="application/json")


class ShiftedClock(SystemClock):
    """Real time, except that wall-clock reads can be moved forward to make data stale."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset


@dataclass
class Setup:
    client: TestClient
    gateways: dict[str, StaticGateway]
    clock: ShiftedClock

    async def get(self, query: str = "", status: int = 200) -> dict[str, Any]:
        response = await self.client.get("/sessions" + query)
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return dict(json.loads(await response.read()))


@pytest.fixture
async def setup(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> Setup:
    gateways = {"plant-a": StaticGateway(encode(PLANT_A)), "plant-b": StaticGateway(
        encode(PLANT_B))}
    configs = []
    for name, gateway in gateways.items():
        app = web.Application()
        app.router.add_get("/sessions", gateway.handle)
        server = await aiohttp_server(app)
        configs.append(GatewayConfig(name=name, url=str(server.make_url("/sessions")),
                                     poll_interval=0.5, timeout=0.5, stale_after=30))
    clock = ShiftedClock()
    client = await aiohttp_client(create_app(Config(gateways=tuple(configs)), clock=clock))
    fleet = client.app[FLEET]
    await eventually(lambda: all(s.up for s in fleet.statuses()), what="both gateways up")
    return Setup(client, gateways, clock)


def usernames(body: dict[str, Any], kind: str = "perspective") -> list[str]:
    return sorted(s["username"] for s in body[kind])


async def test_everything_with_raw_objects_and_gateway_key(setup: Setup) -> None:
    body = await setup.get()
    assert set(body) == {"perspective", "vision", "gateways"}
    assert len(body["perspective"]) == 7 and len(body["vision"]) == 2
    first = next(s for s in body["perspective"] if s["id"] == "a1")
    assert first == {**perspective("a1", "billy", "Line1", "Browser"), "gateway": "plant-a"}
    assert first["sessionScope"] == "Browser"
    custom = next(s for s in body["perspective"] if s["id"] == "a6")
    assert custom["customKey"] == {"nested": [1, 2]}
    assert {g["name"]: (g["up"], g["error"]) for g in body["gateways"]} == {
        "plant-a": (True, None), "plant-b": (True, None)}
    assert all(isinstance(g["lastSuccess"], float) for g in body["gateways"])


@pytest.mark.parametrize(("pattern", "expected"), [
    ("bi.*", ["bi", "bill", "bill.smith", "billXsmith", "billy", "billy"]),
    (r"bill\.smith", ["bill.smith"]),
    ("bill", ["bill"]),
    ("bill.smith", ["bill.smith", "billXsmith"]),
    ("BILLY", []),
    ("(?i)BILLY", ["billy", "billy"]),
    ("", []),
])
async def test_username_matches_the_whole_value(setup: Setup, pattern: str,
                                                expected: list[str]) -> None:
    from urllib.parse import quote
    body = await setup.get(f"?username={quote(pattern)}")
    assert usernames(body) == expected


async def test_filters_combine_with_and(setup: Setup) -> None:
    body = await setup.get("?username=bi.*&project=Line1&gateway=plant-a")
    assert usernames(body) == ["bi", "bill", "billy"]
    assert usernames(body, "vision") == ["billy"]
    assert [g["name"] for g in body["gateways"]] == ["plant-a"]


async def test_gateway_may_repeat(setup: Setup) -> None:
    body = await setup.get("?gateway=plant-a&gateway=plant-b&username=billy")
    assert sorted(s["gateway"] for s in body["perspective"]) == ["plant-a", "plant-b"]
    body = await setup.get("?gateway=plant-b")
    assert {s["gateway"] for s in body["perspective"]} == {"plant-b"}
    assert body["vision"] == []


async def test_kind_returns_only_that_list(setup: Setup) -> None:
    body = await setup.get("?kind=vision")
    assert set(body) == {"vision", "gateways"}
    assert usernames(body, "vision") == ["billy", "operator1"]
    body = await setup.get("?kind=perspective&project=Shipping")
    assert set(body) == {"perspective", "gateways"}
    assert [s["id"] for s in body["perspective"]] == ["b1"]


async def test_stale_gateway_is_left_out_but_explained(setup: Setup) -> None:
    setup.gateways["plant-b"].status = 503
    fleet = setup.client.app[FLEET]
    await eventually(lambda: not fleet.statuses()[1].up, what="plant-b down")
    body = await setup.get()
    assert "b1" in {s["id"] for s in body["perspective"]}  # down, but not stale yet
    setup.clock.offset = 31
    await eventually(lambda: fleet.statuses()[0].is_fresh(setup.clock.time()),
                     what="plant-a polled again after the jump")
    body = await setup.get()
    assert {s["gateway"] for s in body["perspective"]} == {"plant-a"}
    entry = next(g for g in body["gateways"] if g["name"] == "plant-b")
    assert entry["up"] is False and entry["stale"] is True
    assert entry["error"] == "http: HTTP 503 Service Unavailable"


@pytest.mark.parametrize(("query", "message"), [
    ("?username=(a", "username: invalid regular expression: missing ): (a"),
    ("?project=a{2,1}", "project: invalid regular expression"),
    (r"?username=(a)\1", "username: invalid regular expression"),
    ("?user=billy", "user: unknown parameter (allowed: username, project, gateway, kind)"),
    ("?kind=designer", "kind: unknown kind 'designer' (allowed: perspective, vision)"),
    ("?username=" + "a" * 1001, "username: pattern longer than 1000 characters"),
    ("?username=a&username=b", "username: given more than once"),
    ("?gateway=plant-z", "gateway: unknown gateway 'plant-z' (configured: plant-a, plant-b)"),
])
async def test_bad_input_is_a_400_naming_the_parameter(setup: Setup, query: str,
                                                       message: str) -> None:
    body = await setup.get(query, status=400)
    assert body["error"].startswith(message)


async def test_longest_allowed_pattern_is_accepted(setup: Setup) -> None:
    body = await setup.get("?username=" + "b" * 1000)
    assert body["perspective"] == []


async def test_catastrophic_backtracking_pattern_is_harmless(setup: Setup) -> None:
    # With a backtracking engine `(a+)+$` against "aaaa…b" takes exponential time.
    body = await setup.get("?username=(a%2B)%2B%24&project=" + "(.*)*" * 20)
    assert body["perspective"] == []


async def test_landing_page_links_session_queries(setup: Setup) -> None:
    html = await (await setup.client.get("/")).text()
    assert '<a href="/sessions?gateway=plant-a">plant-a</a>' in html
    # From plant-a, which holds most sessions: each of its users holds one, the first wins.
    assert "/sessions?username=ab.*" in html
    assert "<td>up</td>" in html


@pytest.mark.parametrize(("accept_encoding", "encoding"), [
    ("gzip", "gzip"), ("gzip;q=0", None), ("deflate;q=0.5, gzip;q=0", None), ("", None),
    ("*", "gzip"),
])
async def test_compression_follows_q_values_and_varies(setup: Setup, accept_encoding: str,
                                                       encoding: str | None) -> None:
    response = await setup.client.get("/sessions", headers={"Accept-Encoding": accept_encoding},
                                      auto_decompress=False)
    assert response.status == 200
    assert response.headers.get("Content-Encoding") == encoding
    assert response.headers["Vary"] == "Accept-Encoding"
    body = await response.read()
    raw = gzip.decompress(body) if encoding else body
    assert len(json.loads(raw)["perspective"]) == 7


async def test_masked_addresses_survive_a_session_with_a_number_json_cannot_hold(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    """A session is kept when every field the exporter reads is good; a field it does not
    read may hold any valid JSON, such as `1e400` (out of a double's range), and is served as
    the gateway sent it. With `mask_addresses`, each returned session is decoded again to mask
    its address, and that decode refused the number: /sessions answered 500 to every client
    for as long as the gateway held the session."""
    status, body = await masked_answer(aiohttp_server, aiohttp_client, b', "pressure": 1e400')
    assert status == 200, body
    sessions = json.loads(body)["perspective"]
    assert [s["clientAddress"] for s in sessions] == ["10.1.x.x"]


async def masked_answer(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory,
                        extra: bytes) -> tuple[int, bytes]:
    """/sessions with `mask_addresses`, from a gateway holding one session with `extra`
    fields written at its end: the answer's status and body."""
    odd = encode(perspective("a1", "billy", "Line1"))[:-1] + extra + b"}"
    body = (b'{"schema": 1, "collectedAt": 1795000000000, "perspective": [' + odd
            + b'], "vision": [' + encode(vision("billy")) + b"]}")
    gateway = StaticGateway(body)
    app = web.Application()
    app.router.add_get("/sessions", gateway.handle)
    server = await aiohttp_server(app)
    config = Config(gateways=(GatewayConfig(name="plant-a", url=str(server.make_url(
        "/sessions")), poll_interval=0.5, timeout=0.5, stale_after=30),),
        privacy=Privacy(mask_addresses=True))
    client = await aiohttp_client(create_app(config))
    fleet = client.app[FLEET]
    await eventually(lambda: fleet.statuses()[0].up, what="the gateway up")
    response = await client.get("/sessions")
    return response.status, await response.read()


@pytest.mark.parametrize(("sent", "served"), [
    (b'{"clientAddress": "10.1.2.3", "p": 1e400, "q": [1, {"r": 2}]}',
     b'{"clientAddress":"10.1.x.x","p":1e400,"q":[1, {"r": 2}]}'),
    (b'{"clientAddress": 1e400}', b'{"clientAddress":"x"}'),
    (b'{"clientAddress": "10.1.2.3", "clientAddress": "10.9.9.9"}',
     b'{"clientAddress":"10.9.x.x"}'),
    (b'["10.1.2.3"]', b'["10.1.2.3"]'),
], ids=["other values as sent", "an address beyond a double", "written twice", "not an object"])
def test_masking_reads_the_address_alone(sent: bytes, served: bytes) -> None:
    assert bytes(masking("clientAddress")(sent)) == served


async def test_masked_addresses_survive_a_session_with_a_key_that_is_no_utf8(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    """A field the exporter does not read is kept as the gateway sent it, its name too, and
    a name may hold bytes that are no UTF-8. With `mask_addresses`, masking decoded every
    name, and refused that one: /sessions answered 500 to every client for as long as the
    gateway held the session."""
    status, body = await masked_answer(aiohttp_server, aiohttp_client, b', "caf\xe9": 1')
    assert status == 200, body
    assert b"10.1.2.3" not in body


def stalled_request(host: str, port: int, source: str) -> socket.socket:
    """A client from `source` (any address of 127/8) that asks for every session and reads
    nothing."""
    client = socket.create_connection((host, port), source_address=(source, 0))
    client.sendall(b"GET /sessions HTTP/1.1\r\nHost: x\r\n\r\n")
    return client


@contextlib.asynccontextmanager
async def serving_many(aiohttp_server: ServerFactory, tls: ssl.SSLContext | None = None
                       ) -> AsyncIterator[tuple[web.Application, str]]:
    """The exporter, serving a gateway of 30,000 sessions: an unfiltered answer of 13 MB,
    more than the kernel's buffers take from a client that does not read."""
    many = document([perspective(f"s{n}", f"user{n}", "Line1", "Browser",
                                 userAgent="Mozilla/5.0 " + "x" * 200) for n in range(30_000)])
    gateway = StaticGateway(encode(many))
    app = web.Application()
    app.router.add_get("/sessions", gateway.handle)
    server = await aiohttp_server(app)
    config = Config(gateways=(GatewayConfig(name="plant-a", url=str(server.make_url(
        "/sessions")), poll_interval=5, timeout=5, stale_after=60),))
    exporter = create_app(config)
    async with running_site(exporter, "127.0.0.1", 0, ssl_context=tls) as url:
        await eventually(lambda: exporter[FLEET].statuses()[0].up, what="the gateway up")
        yield exporter, url


async def test_answers_under_way_are_bounded_in_all_and_per_client(
        aiohttp_server: ServerFactory) -> None:
    """An unfiltered answer of a large site is megabytes, held until the kernel takes it:
    clients asking and not reading made the exporter hold a copy per connection. Past the
    budgets, a request is refused at once; small answers still fit, and a large one is
    served again once the others have gone."""
    async with serving_many(aiohttp_server) as (exporter, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        in_flight = exporter[SESSIONS_IN_FLIGHT]
        held = [stalled_request(host, int(port), "127.0.0.1")]
        await eventually(lambda: in_flight.total > 0, what="an answer under way")
        size = in_flight.total  # room for two and a half such answers, one and a half each
        in_flight.budget, in_flight.per_client = size * 5 // 2, size * 3 // 2
        assert await status_from("127.0.0.1", url, "") == 429  # past this client's share
        held.append(stalled_request(host, int(port), "127.0.0.2"))
        await eventually(lambda: in_flight.total == 2 * size, what="two answers under way")
        assert await status_from("127.0.0.3", url, "") == 429  # past the budget
        assert await status_from("127.0.0.3", url) == 200  # a small answer fits
        for client in held:
            client.close()
        await eventually(lambda: in_flight.total == 0, what="the answers given up")
        assert await status_from("127.0.0.3", url, "") == 200


async def status_from(address: str, url: str, query: str = "?username=user1",
                      tls: ssl.SSLContext | None = None) -> int:
    connector = aiohttp.TCPConnector(force_close=True, local_addr=(address, 0),
                                     ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url + "/sessions" + query,
                     timeout=aiohttp.ClientTimeout(total=20)) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_an_answer_a_tls_client_does_not_read_keeps_its_room_in_the_budget(
        aiohttp_server: ServerFactory, tmp_path: Path, tls: bool) -> None:
    """An answer holds its room until the kernel has taken it. Over TLS the transport the
    handler writes to takes a whole answer at once (it encrypts it all into the socket's
    buffer below, and never tells the handler to wait), so the room was given back while
    the answer, encrypted, still waited for a client that reads nothing: every TLS
    connection of one client could hold a copy of the largest answer, whatever the budget."""
    pki = make_pki(tmp_path / "pki")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server_cert, pki.server_key)
    client_tls = ssl.create_default_context(cafile=pki.ca) if tls else None
    async with serving_many(aiohttp_server, server_tls if tls else None) as (exporter, url):
        in_flight = exporter[SESSIONS_IN_FLIGHT]
        size = len(await answer_from("127.0.0.2", url, client_tls))
        in_flight.budget, in_flight.per_client = size * 5 // 2, size * 3 // 2
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.setblocking(False)
            port = int(url.rsplit(":", 1)[1])
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=client_tls, server_hostname="127.0.0.1" if tls else None)
            writer.write(b"GET /sessions HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(reader.readexactly(1 << 16), 10)  # the answer is sent
            # and then read no more: a second answer to the client is past its share
            assert await status_from("127.0.0.1", url, "", client_tls) == 429
            writer.close()


async def answer_from(address: str, url: str, tls: ssl.SSLContext | None) -> bytes:
    """Every session, as a client at `address` reads it whole."""
    connector = aiohttp.TCPConnector(force_close=True, local_addr=(address, 0),
                                     ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url + "/sessions", timeout=aiohttp.ClientTimeout(total=20)) as response:
        assert response.status == 200
        return await response.read()


@pytest.mark.parametrize("accept_encoding", ["identity", "gzip"])
async def test_a_head_request_is_answered_with_headers_alone(setup: Setup,
                                                             accept_encoding: str) -> None:
    """HEAD is allowed wherever GET is (monitoring probes use it), and its answer has no
    body (RFC 9110 9.3.2). A body sent anyway is read as the start of the next answer on the
    connection: the client's next request on it fails, or gets the wrong answer."""
    server = setup.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"HEAD /sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Accept-Encoding: " + accept_encoding.encode() + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, after = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert after == b"", f"{len(after)} bytes of body after the headers of a HEAD answer"


async def test_a_client_gone_mid_answer_is_no_error(aiohttp_server: ServerFactory,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A client that stops reading and resets its connection (a browser tab closed, `curl |
    head`, anyone at all) costs its answer, not a line at ERROR with a traceback: one per
    request, as often as anyone who may reach the port likes."""
    async with serving_many(aiohttp_server) as (exporter, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        in_flight = exporter[SESSIONS_IN_FLIGHT]
        client = stalled_request(host, int(port), "127.0.0.1")
        await eventually(lambda: in_flight.total > 0, what="the answer under way")
        client.recv(1024)  # the answer has started
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # with a reset
        await eventually(lambda: in_flight.total == 0, what="the answer given up")
        assert await status_from("127.0.0.1", url) == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_answers_are_rendered_off_the_event_loops_thread(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unfiltered answer of 100,000 sessions takes 0.3 s of CPU to render: on the event
    loop's thread, every scrape waited behind each such request."""
    rendered_in: list[threading.Thread] = []
    render = sessions_endpoint.render_sessions

    def recording(*args: Any) -> bytes:
        rendered_in.append(threading.current_thread())
        return render(*args)

    monkeypatch.setattr(sessions_endpoint, "render_sessions", recording)
    body = await setup.get()
    assert len(body["perspective"]) == 7
    assert rendered_in and rendered_in[0] is not threading.current_thread()


async def test_requests_of_clients_gone_while_they_waited_are_not_rendered(
        aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers are rendered two at a time; the others wait their turn, and a client that
    leaves meanwhile frees its connection at once, but not its turn: the exporter's server
    does not cancel a handler whose client has gone. Each request of a client that asked
    and left (a script with a short timeout, or anyone looping over connect, ask, reset)
    was still rendered, at CPU-seconds for an unfiltered answer of a large site: a backlog
    with no bound of answers for no one, ahead of every later request. A turn that comes
    once its client has gone renders nothing."""
    gate = threading.Event()
    rendered: list[int] = []
    render = sessions_endpoint.render_sessions

    def held(*args: Any) -> bytes:
        rendered.append(1)
        if len(rendered) <= 2:  # both turns held while the others queue up behind
            gate.wait(10)
        return render(*args)

    arrived: list[int] = []
    parse = sessions_endpoint.parse_query

    def counting(*args: Any) -> Any:
        arrived.append(1)
        return parse(*args)

    monkeypatch.setattr(sessions_endpoint, "render_sessions", held)
    monkeypatch.setattr(sessions_endpoint, "parse_query", counting)
    gateway = web.Application()
    gateway.router.add_get("/sessions", StaticGateway(encode(PLANT_A)).handle)
    url = (await aiohttp_server(gateway)).make_url("/sessions")
    exporter = create_app(Config(gateways=(GatewayConfig(name="plant-a", url=str(url),
                                                         timeout=5, stale_after=60),)))
    async with running_site(exporter, "127.0.0.1", 0) as address:
        await eventually(lambda: exporter[FLEET].statuses()[0].up, what="the gateway up")
        port = int(address.rsplit(":", 1)[1])
        try:
            holding = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            for _, writer in holding:
                writer.write(b"GET /sessions HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: len(rendered) == 2, what="both turns taken")
            for gone in range(1, 21):  # clients that ask, and leave with a reset
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /sessions HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                await eventually(lambda n=gone: len(arrived) == 2 + n, what="its turn awaited")
                writer.transport.abort()
        finally:
            gate.set()
        assert await status_from("127.0.0.1", address) == 200  # answered after the backlog
        for _, writer in holding:
            writer.close()
    assert len(rendered) <= 2 + 1 + 2, f"{len(rendered) - 3} answers rendered for clients gone"
