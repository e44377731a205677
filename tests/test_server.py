"""The server's limits, over real sockets on loopback: header timeout, connection cap, what is
logged, the open-file limit and a port in use. Every test opens a bounded number of sockets."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import socket
import ssl
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exporter import logs
from exporter.config import GatewayConfig
from exporter.logs import Episode
from exporter.polling.fleet import PRELOAD
from exporter.polling.poller import GatewayPoller
from exporter.polling.workers import PROCESSES_SUPPORTED, WorkerProcesses
from exporter.web.server import (
    DIGEST_PROCESSES_SHARED_FILES,
    FILES_PER_DIGEST_PROCESS,
    Handler,
    Limits,
    ListenError,
    accept_error_handler,
    connection_cap,
    digest_process_files,
    running_site,
    server_url,
)
from tests.certs import Pki, make_pki
from tests.conftest import FakeClock, eventually
from tests.fakes import ScriptedSource
from tests.payloads import document, perspective, snapshot_of, vision
from tests.processes import digest_workers

RELEASE = web.AppKey("release", asyncio.Event)
STARTED = web.AppKey("started", asyncio.Event)
SHORT = Limits(max_connections=8, header_timeout=0.5, shutdown_grace=1.0)
CAPPED = Limits(max_connections=8, header_timeout=30, shutdown_grace=1.0)  # no timeouts
STALLED = Limits(max_connections=8, header_timeout=30, send_timeout=0.5, shutdown_grace=1.0)
# More than the kernel buffers of a connection whose reader reads nothing can take (Linux
# grows a send buffer up to 4 MiB by default), so most of it waits in the server's transport.
BIG = b"x" * (12 << 20)
# What the kernel buffers of a connection whose reader reads nothing take whole on Linux.
MEDIUM = b"m" * (1 << 20)


def app_with_slow_route() -> web.Application:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app[STARTED] = asyncio.Event()

    async def quick(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        request.app[STARTED].set()
        await request.app[RELEASE].wait()
        return web.Response(text="done")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def medium(_: web.Request) -> web.Response:
        return web.Response(body=MEDIUM)

    app.router.add_get("/", quick)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_get("/medium", medium)
    return app


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[web.Application, str]]:
    limits = getattr(request, "param", SHORT)
    app = app_with_slow_route()
    async with running_site(app, "127.0.0.1", 0, limits=limits) as url:
        yield app, url


async def idle_socket(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True once the server has closed or reset the connection; False if it is still open
    after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def get(url: str, path: str = "/") -> tuple[int, str]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url + path, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, await response.text()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "exporter.web.server" and r.levelno >= logging.WARNING]


def logged(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    """The server's records whose message starts with `start`."""
    return [r for r in caplog.records
            if r.name == "exporter.web.server" and r.getMessage().startswith(start)]


def fields(record: logging.LogRecord, expected: dict[str, object]) -> dict[str, object]:
    """The record's fields named in `expected`, to compare with it (None where absent)."""
    return {name: getattr(record, name, None) for name in expected}


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_connection_without_request_headers_is_closed(
        served: tuple[web.Application, str], caplog: pytest.LogCaptureFixture) -> None:
    _, url = served
    silent = [await idle_socket(url) for _ in range(5)]
    trickle_reader, trickle = await idle_socket(url)
    trickle.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # a header line now and then never completes the request
        await asyncio.sleep(0.2)
        trickle.write(b"X-Slow: 1\r\n")
    assert await closed_by_server(trickle_reader)
    for reader, _ in silent:
        assert await closed_by_server(reader)
    assert warnings(caplog) == [
        "closing connections that did not send request headers in time"]
    assert await get(url) == (200, "ok")  # a prompt request is unaffected


async def test_kept_alive_connection_is_timed_again_for_its_next_request(
        served: tuple[web.Application, str]) -> None:
    _, url = served
    reader, writer = await idle_socket(url)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in await reader.readuntil(b"ok")
    assert not await closed_by_server(reader, within=0.8), "kept alive while idle"
    writer.write(b"GET / HTTP/1.1\r\n")  # the next request starts, and stalls
    assert await closed_by_server(reader)


async def test_an_episode_that_is_over_says_how_many_more_it_had(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "EPISODE_QUIET", 0.3)  # read when the server makes its episodes
    async with running_site(app_with_slow_route(), "127.0.0.1", 0, limits=SHORT) as url:
        silent = [await idle_socket(url) for _ in range(6)]
        for reader, _ in silent:
            assert await closed_by_server(reader)
        # The server's sweep says so once the episode is over.
        await eventually(lambda: len(logged(caplog, "closing connections that did not send"))
                         >= 2, what="the line for the episode's other hits")
    first, over = logged(caplog, "closing connections that did not send")
    assert over.getMessage().endswith("(over)")
    assert first.timeout == over.timeout == SHORT.header_timeout  # one value: as it is
    assert over.more_hits == 5


@pytest.mark.parametrize("served", [CAPPED], indirect=True)
async def test_at_the_cap_idle_connections_make_room(
        served: tuple[web.Application, str], caplog: pytest.LogCaptureFixture) -> None:
    _, url = served
    idle = [await idle_socket(url) for _ in range(3 * CAPPED.max_connections)]
    assert await get(url) == (200, "ok")
    # The oldest idle connections were dropped, the newest are still open.
    assert await closed_by_server(idle[0][0], within=1)
    assert not await closed_by_server(idle[-1][0], within=0.1)
    assert warnings(caplog)[0].startswith("connection limit reached")
    assert len(warnings(caplog)) == 1, "one line for the whole episode"
    assert not errors(caplog)


@pytest.mark.parametrize("served", [CAPPED], indirect=True)
async def test_at_the_cap_busy_connections_are_kept_and_newcomers_refused(
        served: tuple[web.Application, str], caplog: pytest.LogCaptureFixture) -> None:
    app, url = served
    busy = [asyncio.create_task(get(url, "/slow")) for _ in range(CAPPED.max_connections)]
    try:
        async with asyncio.timeout(10):
            while True:  # every slot holds a request in progress
                status, text = await get(url)
                if status == 503:
                    break
                await asyncio.sleep(0.05)
        assert text == "too many connections\n"
    finally:
        app[RELEASE].set()
    assert await asyncio.gather(*busy) == [(200, "done")] * CAPPED.max_connections
    assert await get(url) == (200, "ok")
    # One client holds every connection, so none is evicted for it: the log says refused.
    [refused] = logged(caplog, "connection limit reached and every connection busy: refusing")
    expected = {"max_connections": 8, "address": "127.0.0.1", "address_connections": 8}
    assert fields(refused, expected) == expected
    assert not logged(caplog, "connection limit reached and every connection busy: evicting")


async def test_stop_cuts_a_request_that_outlives_the_grace(
        caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp alone waits up to twice its shutdown timeout (for the handler, then again
    after cancelling it); the grace is what the README promises, so what is left is cut."""
    app = app_with_slow_route()
    site = running_site(app, "127.0.0.1", 0, limits=SHORT)
    url = await site.__aenter__()
    request = asyncio.create_task(get(url, "/slow"))
    await app[STARTED].wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await site.__aexit__(None, None, None)
    stopped_after = loop.time() - started
    with pytest.raises(aiohttp.ClientError):
        await request
    assert stopped_after < SHORT.shutdown_grace + 0.5, stopped_after
    assert not errors(caplog)


async def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            async with running_site(app_with_slow_route(), "127.0.0.1", port):
                pass
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: another process is using it: stop that process "
        "or choose another --web.listen-address")


def test_cap_is_lowered_to_what_open_files_allow(caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(max_connections=512, reserved_files=164)
    assert connection_cap(limits, None) == 512
    assert connection_cap(limits, 4096) == 512
    assert not caplog.records
    assert connection_cap(limits, 256) == 92
    assert caplog.records[0].max_connections == 92


OPEN_FILES = Path("/proc/self/fd")


async def files_taken_by_digest_processes(count: int) -> tuple[int, int]:
    """Run in a fresh interpreter (no forkserver yet): the file descriptors this process
    gains by starting `count` digest worker processes and digesting a poll of a gateway in
    each at once (every worker busy), and how many worker processes ran."""
    clock = FakeClock()
    snapshot = snapshot_of(document([perspective(id=f"s{i}", username=f"user{i % 7}")
                                     for i in range(200)], [vision()]))
    before = len(list(OPEN_FILES.iterdir()))
    cpu = WorkerProcesses(count, PRELOAD)
    pollers = [GatewayPoller(GatewayConfig(f"plant-{i}", "http://127.0.0.1:1/"),
                             ScriptedSource(clock, snapshot), idle_after=60, clock=clock,
                             cpu=cpu) for i in range(count)]
    try:
        statuses = await asyncio.gather(*(poller.poll_once() for poller in pollers))
        assert all(status.up for status in statuses)
        return len(list(OPEN_FILES.iterdir())) - before, len(digest_workers())
    finally:
        await cpu.close()


@pytest.mark.parametrize("count", [1, 4])
def test_each_digest_process_costs_the_files_reserved_for_it(count: int) -> None:
    """The open-file limit is shared out before any worker starts (`cli.reserved_files`), so
    what each costs must be known: measured here, polls digesting in every one of them."""
    if not (PROCESSES_SUPPORTED and OPEN_FILES.is_dir()):
        pytest.skip("needs worker processes (a forkserver) and /proc/self/fd")
    code = ("import asyncio; from tests.test_server import files_taken_by_digest_processes as f;"
            f" print(*asyncio.run(f({count})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    taken, started = map(int, done.stdout.split())
    assert started == count, "every worker process digested a poll"
    assert taken <= digest_process_files(count) == \
        count * FILES_PER_DIGEST_PROCESS + DIGEST_PROCESSES_SHARED_FILES
    # Not reserving more than they cost either: at most one file a worker to spare.
    assert taken >= digest_process_files(count) - count, (taken, done.stderr)


def test_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    resource = pytest.importorskip("resource")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    code = ("import resource; from exporter.web.server import raise_open_file_limit; "
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], raise_open_file_limit())")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    before, after = map(int, out.stdout.split())
    assert before == 256
    assert after == hard if hard != resource.RLIM_INFINITY else after > 256


def test_accept_failing_for_want_of_files_is_one_line_per_episode(
        caplog: pytest.LogCaptureFixture) -> None:
    """asyncio logs a traceback each time accept() fails with EMFILE (the 18,000 lines)."""
    loop = asyncio.new_event_loop()
    try:
        handle = accept_error_handler(Episode(logging.getLogger("exporter.web.server"), "out"))
        emfile = OSError(errno.EMFILE, "Too many open files")
        for _ in range(100):
            handle(loop, {"message": "socket.accept() out of system resource",
                          "exception": emfile})
        assert warnings(caplog) == ["out"]
        handle(loop, {"message": "something else", "exception": ValueError("x")})
        assert errors(caplog) == ["something else"]  # the default handler, as before
    finally:
        loop.close()


async def asking_socket(url: str, path: str, receive_buffer: int | None = None
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent a request; `receive_buffer` shrinks what the kernel takes
    in for it while nobody reads."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 21)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return reader, writer


async def served_again(url: str) -> None:
    """Refused (503) until the stalled connections have been cut; then served."""
    async with asyncio.timeout(20):
        while True:
            if await get(url) == (200, "ok"):
                return
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("served", [STALLED], indirect=True)
async def test_clients_that_never_read_their_answer_are_dropped(
        served: tuple[web.Application, str], caplog: pytest.LogCaptureFixture) -> None:
    """Each held the answer in its connection's buffer and, busy sending, could not be
    dropped at the cap: a few such clients locked every scrape out (503) for ever. Each is
    dropped with a reset: closed gracefully, the kernel kept sending its last megabytes to a
    client that still did not read, for as long as it kept the connection open."""
    _, url = served
    port = int(url.rsplit(":", 1)[1])
    stalled = [await asking_socket(url, "/big", receive_buffer=1024)
               for _ in range(STALLED.max_connections)]
    await served_again(url)
    # The last may be dropped after the scrape got in. (Not read before: reading is progress.)
    await eventually(lambda: not queued_to_send(port), 10,
                     "every stalled connection dropped, and what it left unsent discarded")
    for reader, _ in stalled:  # cut short: the whole answer never arrives
        assert await closed_by_server(reader)
    assert "closing connections that did not read their answer in time" in warnings(caplog)
    assert not errors(caplog)


@pytest.mark.parametrize("served", [CAPPED], indirect=True)
async def test_a_connection_dropped_at_the_cap_still_receives_its_last_answer(
        served: tuple[web.Application, str]) -> None:
    """Its answer handed to the kernel whole, a kept-alive connection is idle, and the first
    to go at the cap: closed, not reset, so the end of the answer, still in the kernel's
    buffers, reaches a client that reads it late."""
    _, url = served
    host, port = url.removeprefix("http://").rsplit(":", 1)
    client = socket.create_connection((host, int(port)))
    client.setblocking(False)
    client.sendall(b"GET /medium HTTP/1.1\r\nHost: x\r\n\r\n")
    await eventually(lambda: queued_to_send(int(port)) + unread(client) > len(MEDIUM),
                     what="the whole answer in the kernel's buffers")
    others = [await idle_socket(url) for _ in range(CAPPED.max_connections)]  # the cap
    received, end = await read_to_the_end(client)
    client.close()
    for _, writer in others:
        writer.close()
    assert end == "closed" and received.endswith(b"\r\n\r\n" + MEDIUM)


def unread(client: socket.socket) -> int:
    """Bytes the kernel has received for `client` that it has not read."""
    return struct.unpack("i", fcntl.ioctl(client, termios.FIONREAD, b"\0" * 4))[0]


async def read_to_the_end(client: socket.socket, within: float = 10.0) -> tuple[bytes, str]:
    """All `client` receives, and how it ended: closed, reset, or still open after `within`
    seconds."""
    loop, received = asyncio.get_running_loop(), bytearray()
    try:
        async with asyncio.timeout(within):
            while chunk := await loop.sock_recv(client, 1 << 16):
                received += chunk
    except TimeoutError:
        return bytes(received), "open"
    except ConnectionResetError:
        return bytes(received), "reset"
    return bytes(received), "closed"


def queued_to_send(port: int) -> int:
    """Bytes the kernel holds to send on TCP sockets of local `port` (`/proc/net/tcp`)."""
    queued = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            queued += int(fields[4].split(":")[0], 16)
    return queued


@pytest.mark.parametrize("served", [STALLED], indirect=True)
async def test_a_slow_reader_that_keeps_reading_is_not_cut(
        served: tuple[web.Application, str]) -> None:
    _, url = served
    reader, _ = await asking_socket(url, "/big")
    await reader.readuntil(b"\r\n\r\n")
    received = 0
    while received < len(BIG):  # 1 MiB at a time, with pauses
        received += len(await reader.readexactly(min(1 << 20, len(BIG) - received)))
        await asyncio.sleep(STALLED.send_timeout / 5)
    assert received == len(BIG)


def serving_tls(tmp_path: Path) -> tuple[Pki, ssl.SSLContext]:
    """A throwaway PKI, and a server context with its server certificate."""
    pki = make_pki(tmp_path / "pki")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server_cert, pki.server_key)
    return pki, server_tls


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_client_that_never_reads_its_answer_is_dropped_over_tls_too(
        tls: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Over TLS the transport aiohttp writes to reports as unsent only what TLS has not
    encrypted yet; the encrypted answer waits in the socket's own buffer below it, unseen. So
    the send timeout never saw a TLS client that asks and never reads: it held its copy of the
    answer, and its connection, until the keep-alive timeout, while plain HTTP cut it after
    `send_timeout`."""
    pki, server_tls = serving_tls(tmp_path)
    client_tls = ssl.create_default_context(cafile=pki.ca) if tls else None
    async with running_site(app_with_slow_route(), "127.0.0.1", 0,
                            ssl_context=server_tls if tls else None, limits=STALLED) as url:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.setblocking(False)
            port = int(url.rsplit(":", 1)[1])
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            _, writer = await asyncio.open_connection(
                sock=sock, ssl=client_tls, server_hostname="127.0.0.1" if tls else None)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: bool(logged(caplog, "closing connections that did not "
                                                 "read their answer in time")),
                             20 * STALLED.send_timeout, "the stalled answer to be dropped")
            writer.close()


async def tls_exchange(sock: socket.socket, client_tls: ssl.SSLContext, request: bytes
                       ) -> bytes:
    """`request` over TLS on `sock`, and the answer until the server closes. The request
    leaves in one segment with the handshake's last message, as clients that write at once
    send it: the server decrypts it in the same read that ends its handshake."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

    async def flight() -> None:  # send what TLS wrote, take what comes back
        await loop.sock_sendall(sock, outgoing.read())
        data = await loop.sock_recv(sock, 1 << 16)
        incoming.write(data) if data else incoming.write_eof()

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await flight()
    tls.write(request)  # held back with the handshake's end until the next flight
    answer = b""
    while True:
        try:
            chunk = tls.read(1 << 16)
        except ssl.SSLWantReadError:
            await flight()
            continue
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return answer
        if not chunk:  # the server's close_notify
            return answer
        answer += chunk


async def test_a_request_sent_with_the_end_of_the_tls_handshake_is_answered(
        tmp_path: Path) -> None:
    """The handshake runs inside the connection's bookkeeping, and TLS hands on what it
    decrypted with the handshake's last message before aiohttp is connected: it is kept for
    aiohttp, not lost (the client would wait for an answer until the header timeout)."""
    pki, server_tls = serving_tls(tmp_path)
    async with running_site(app_with_slow_route(), "127.0.0.1", 0, ssl_context=server_tls,
                            limits=STALLED) as url:
        with socket.socket() as sock:
            sock.setblocking(False)
            port = int(url.rsplit(":", 1)[1])
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            async with asyncio.timeout(10):
                answer = await tls_exchange(
                    sock, ssl.create_default_context(cafile=pki.ca),
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"\r\n\r\nok")


async def test_a_tls_request_in_progress_is_kept_when_idle_sockets_fill_the_cap(
        tmp_path: Path) -> None:
    """The handler of a TLS request marks its connection busy (the TLS transport's protocol
    is the connection's bookkeeping), so idle sockets that fill the cap drop each other,
    not it."""
    pki, server_tls = serving_tls(tmp_path)
    app = app_with_slow_route()
    async with running_site(app, "127.0.0.1", 0, ssl_context=server_tls,
                            limits=CAPPED) as url:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", int(url.rsplit(":", 1)[1]),
            ssl=ssl.create_default_context(cafile=pki.ca))
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await asyncio.wait_for(app[STARTED].wait(), 10)
        flood = [await socket_from("127.0.0.3", url.replace("https", "http"))
                 for _ in range(2 * CAPPED.max_connections)]
        app[RELEASE].set()
        async with asyncio.timeout(10):
            answer = await reader.read()
        for _, other in [*flood, (reader, writer)]:
            other.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"\r\n\r\ndone")


# --- one address flooding ----------------------------------------------------------------------

async def get_from(address: str, url: str, path: str = "/") -> tuple[int, str]:
    """`get`, over a socket bound to `address` (all of 127/8 is loopback on Linux)."""
    connector = aiohttp.TCPConnector(force_close=True, local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url + path, timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, await response.text()


async def socket_from(address: str, url: str, request: bytes = b""
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(address, 0))
    writer.write(request)
    return reader, writer


def counting_slow_app() -> tuple[web.Application, list[int]]:
    """`app_with_slow_route`, counting the slow requests whose handler has started."""
    app = app_with_slow_route()
    started: list[int] = []

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/slow":
            started.append(1)
        return await handler(request)

    app.middlewares.append(count)
    return app, started


async def test_one_address_holding_every_connection_busy_leaves_room_for_others(
        caplog: pytest.LogCaptureFixture) -> None:
    """One client opening --web.max-connections sockets that ask and never read used to hold
    every slot busy, so every other client got 503."""
    app, started = counting_slow_app()
    limits = Limits(header_timeout=30, shutdown_grace=1.0)  # the default caps
    async with running_site(app, "127.0.0.1", 0, limits=limits) as url:
        flood = [await socket_from("127.0.0.2", url, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                 for _ in range(limits.max_connections)]
        answers = [asyncio.create_task(reader.read()) for reader, _ in flood]
        try:
            await eventually(lambda: len(started) + sum(a.done() for a in answers)
                             == len(flood), what="every flood request running or refused")
            assert await get_from("127.0.0.3", url) == (200, "ok")
        finally:
            app[RELEASE].set()
        refused = [a.result() for a in answers if a.done()]
        assert len(started) == limits.max_connections_per_address
        assert all(body.startswith(b"HTTP/1.1 503") for body in refused)
        for _, writer in flood:
            writer.close()
    at_cap = ("connection limit per address reached: dropping the address's idle connections "
              "and refusing its new ones while all are busy")
    # The episode's later hits are told when the server stops: all from the one address.
    assert warnings(caplog) == [at_cap, at_cap + " (over)"]
    assert logged(caplog, at_cap)[1].address == "127.0.0.2"
    assert not errors(caplog)


def server_sockets(port: int) -> tuple[int, int]:
    """(connections established to local `port`, connections waiting in its accept queue),
    from `/proc/net/tcp`."""
    established = waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) != port:
            continue
        if fields[3] == "0A":  # listening: its receive queue is the accept queue
            waiting += int(fields[4].split(":")[1], 16)
        elif fields[3] == "01":
            established += 1
    return established, waiting


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_connections_still_in_their_tls_handshake_count_against_the_caps(
        tls: bool, tmp_path: Path) -> None:
    """The bookkeeping learns of a TLS connection only once its handshake is done, so one
    that never sends a ClientHello counts against no cap for `header_timeout`: one address
    could hold any number of them open (and a file descriptor and TLS state each), where a
    plain connection beyond the cap makes room or is refused at once. Out of descriptors,
    the exporter can accept nothing, nor connect to its gateways."""
    _, server_tls = serving_tls(tmp_path)
    limits = Limits(max_connections=8, max_connections_per_address=8, header_timeout=30,
                    shutdown_grace=1.0)
    async with running_site(app_with_slow_route(), "127.0.0.1", 0,
                            ssl_context=server_tls if tls else None, limits=limits) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = [await socket_from("127.0.0.2", url.replace("https", "http"))
                  for _ in range(5 * limits.max_connections)]
        await eventually(lambda: server_sockets(port)[1] == 0, 10, "every socket accepted")
        held, _ = server_sockets(port)
        for _, writer in silent:
            writer.close()
    assert held <= limits.max_connections


PER_ADDRESS = Limits(max_connections=8, max_connections_per_address=3, header_timeout=30,
                     shutdown_grace=1.0)


@pytest.mark.parametrize("served", [PER_ADDRESS], indirect=True)
async def test_an_address_at_its_share_makes_room_among_its_own_idle_connections(
        served: tuple[web.Application, str]) -> None:
    _, url = served
    other, _ = await socket_from("127.0.0.3", url)  # the quietest of all, but within its share
    mine = [await socket_from("127.0.0.2", url)
            for _ in range(PER_ADDRESS.max_connections_per_address + 2)]
    assert await closed_by_server(mine[0][0], within=2)
    assert await closed_by_server(mine[1][0], within=2)
    assert not await closed_by_server(mine[-1][0], within=0.1)
    assert not await closed_by_server(other, within=0.1)
    assert await get(url) == (200, "ok")


@pytest.mark.parametrize("served", [PER_ADDRESS], indirect=True)
async def test_an_address_whose_connections_are_all_busy_is_refused_alone(
        served: tuple[web.Application, str]) -> None:
    app, url = served
    busy = [asyncio.create_task(get_from("127.0.0.2", url, "/slow"))
            for _ in range(PER_ADDRESS.max_connections_per_address)]
    try:
        async with asyncio.timeout(10):
            while (status := await get_from("127.0.0.2", url))[0] != 503:
                assert status == (200, "ok")  # until its slow requests are all running
                await asyncio.sleep(0.05)
        assert status == (503, "too many connections\n")
        assert await get_from("127.0.0.3", url) == (200, "ok")
    finally:
        app[RELEASE].set()
    assert await asyncio.gather(*busy) == [(200, "done")] * len(busy)


async def test_many_addresses_holding_every_connection_busy_leave_room_for_a_quiet_one(
        caplog: pytest.LogCaptureFixture) -> None:
    """Addresses each within their share, together holding every connection busy (asking
    and never reading), used to get every other client a 503: eight at the default caps.
    Now the client holding most gives up its quietest connection, and only for a client
    holding at least two fewer, so equal shares never cut each other."""
    app, started = counting_slow_app()
    shares = {"127.0.0.2": 3, "127.0.0.3": 3, "127.0.0.4": 2}  # 8: every connection
    async with running_site(app, "127.0.0.1", 0, limits=PER_ADDRESS) as url:
        flood = [await socket_from(address, url, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                 for address, count in shares.items() for _ in range(count)]
        try:
            await eventually(lambda: len(started) == len(flood), what="every flood request")
            assert await get_from("127.0.0.4", url) == (503, "too many connections\n")
            assert await get_from("127.0.0.5", url) == (200, "ok")
            assert await closed_by_server(flood[0][0], within=2)  # the heaviest's quietest
        finally:
            app[RELEASE].set()
        async with asyncio.timeout(10):
            answers = [await reader.readuntil(b"done") for reader, _ in flood[1:]]
        assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
        for _, writer in flood:
            writer.close()
    assert not errors(caplog)
    # The log says which happened to whom: .4 refused (it holds 2, within 1 of the most),
    # then .2 evicted for .5; not "refusing" alone, as it said before evicting existed.
    busy = "connection limit reached and every connection busy: "
    [refused] = logged(caplog, busy + "refusing")
    expected = {"max_connections": 8, "address": "127.0.0.4", "address_connections": 2,
                "busiest_address": "127.0.0.2", "busiest_connections": 3}
    assert fields(refused, expected) == expected
    [evicted] = logged(caplog, busy + "evicting")
    expected = {"max_connections": 8, "address": "127.0.0.2", "address_connections": 3,
                "newcomer_address": "127.0.0.5", "newcomer_connections": 0}
    assert fields(evicted, expected) == expected


# --- what an episode's summaries leave out ---------------------------------------------------

ACCEPT_FAILED = {"message": "socket.accept() out of system resource",
                 "exception": OSError(errno.EMFILE, "Too many open files")}


async def test_accept_failing_for_want_of_files_says_how_many_more_once_it_is_over(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accept-error episode is summed up like the connection limits' (`(over)`), but
    nothing flushed it: the last hits of a descriptor shortage, and that it ended, were told
    only by the next shortage, however much later, or never."""
    monkeypatch.setattr(logs, "EPISODE_QUIET", 0.3)  # read when the server makes its episodes
    async with running_site(app_with_slow_route(), "127.0.0.1", 0, limits=SHORT):
        loop = asyncio.get_running_loop()
        for _ in range(4):  # asyncio's accept loop reports each failure this way
            loop.call_exception_handler(dict(ACCEPT_FAILED))
        await eventually(lambda: len(logged(caplog, "out of file descriptors")) >= 2,
                         timeout=5, what="the line for the shortage's other hits")
    first, over = logged(caplog, "out of file descriptors")
    assert first.error == "Too many open files"
    assert over.getMessage().endswith("(over)")
    assert over.more_hits == 3


async def test_the_hits_since_the_last_line_are_told_when_the_server_stops(
        caplog: pytest.LogCaptureFixture) -> None:
    """An episode still going when the server stops (a restart during a flood) ends there:
    its hits since its last line are lost unless they are told then."""
    async with running_site(app_with_slow_route(), "127.0.0.1", 0, limits=SHORT) as url:
        silent = [await idle_socket(url) for _ in range(3)]
        for reader, _ in silent:
            assert await closed_by_server(reader)
        for _, writer in silent:
            writer.close()
    lines = logged(caplog, "closing connections that did not send")
    assert lines[0].getMessage() == ("closing connections that did not send request headers "
                                     "in time")
    assert sum(int(getattr(line, "more_hits", 0)) for line in lines) == 2, \
        [(line.getMessage(), vars(line).get("more_hits")) for line in lines]


async def test_a_timeout_episode_names_the_clients_that_kept_it_going(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summaries exist so that a client keeping an episode going cannot hide the others
    behind its first line (README); the header timeouts' lines carry only `timeout`, so the
    second client never appears in any of them."""
    monkeypatch.setattr(logs, "EPISODE_QUIET", 0.3)
    async with running_site(app_with_slow_route(), "127.0.0.1", 0, limits=SHORT) as url:
        sockets = [await socket_from(address, url) for address in ("127.0.0.2", "127.0.0.3")]
        for reader, _ in sockets:
            assert await closed_by_server(reader)
        await eventually(lambda: len(logged(caplog, "closing connections that did not send"))
                         >= 2, timeout=5, what="the line for the episode's other hits")
        for _, writer in sockets:
            writer.close()
    told = " ".join(str(value) for line in logged(caplog, "closing connections that did not")
                    for value in vars(line).values())
    assert "127.0.0.2" in told
    assert "127.0.0.3" in told


@pytest.mark.parametrize(("tls", "host", "url"), [
    (False, "127.0.0.1", "http://127.0.0.1:8088"), (True, "::1", "https://[::1]:8088"),
    (False, "fe80::1%lo", "http://[fe80::1%25lo]:8088")])
def test_a_bound_address_is_given_as_a_url_takes_it(tls: bool, host: str, url: str) -> None:
    assert server_url(tls, host, 8088) == url
