"""The exporter's own HTTP server: where it listens, and the limits that keep it answering.

Anyone who can reach the port can open connections, so every connection is bounded:
- a request's headers must arrive within `header_timeout` of the connection opening (its
  TLS handshake included) or of the first byte of a following request on a kept-alive
  connection, or it is dropped (one timer checks every connection a few times a timeout,
  rather than a timer per request);
- an answer the client takes no byte of for `send_timeout` is dropped with its connection
  (checked by the same timer), so clients that ask and never read cannot hold the
  connection slots, and a copy of the answer each, for ever;
- at most `max_connections` are open at once. At the cap, the connection that has been
  quiet longest without a request in progress is dropped to make room, so idle sockets
  cannot lock out a scrape; when every connection is busy, the client holding most gives
  up its quietest connection to a client holding at least two fewer, so many addresses
  each within their share cannot together lock out another; only when neither frees a
  connection is the newcomer refused, with a canned 503 and no parsing;
- at most `max_connections_per_address` of them come from one client (an IPv4 address or an
  IPv6 /64, `peers.py`), by the same rule within the client's own connections, so one
  client holding all of its connections busy (asking and never reading) still leaves the
  rest to the others;
- the soft open-file limit is raised to the hard limit at start (as Go programs do), and the
  cap is lowered to what the remaining file descriptors allow;
- when a limit is hit, one log line per episode, never one per socket.

aiohttp's `AppRunner` serves the application; the listening socket is an asyncio server
whose protocol factory wraps aiohttp's (the runner's public `server`) with this
bookkeeping, so no private attribute of either is touched.

With TLS the socket listens in plain TCP and each connection is upgraded inside its
bookkeeping (`loop.start_tls`), rather than by the server: a connection then counts against
the caps from the moment it is accepted, not only once its handshake is done, and the
transport watched for an unsent answer is the socket's own, which holds the answer once
encrypted (the TLS transport above it reports only what it has not encrypted yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from exporter.logs import Episode
from exporter.web.peers import peer_of

log = logging.getLogger("exporter.web.server")

# Exit status when the address cannot be listened on (2 is a configuration error).
EXIT_CANNOT_LISTEN = 3
DEFAULT_MAX_CONNECTIONS = 512
# Prometheus needs one or two connections per scrape job, a browser six: 64 leaves room for
# several of them behind one address, and takes eight flooding addresses to fill 512.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 64
# File descriptors besides served connections, the gateway connection pool and the digest
# worker processes: log and configuration files, listening sockets, the event loop's own,
# worker threads' needs.
OTHER_FILES = 64
# File descriptors each digest worker process (`digest_processes`) holds open in the
# exporter's process, for as long as the exporter runs: its pool (a ProcessPoolExecutor of one)
# has three pipes, both ends of each (the queue of work, the queue of results, the pool's
# wake-up pipe), and its process two more once started (the sentinel that says it ended, and
# the pipe whose closing tells it the exporter is gone). Measured: 8 a worker, whether 1 or 8
# of them (tests/test_server.py). While one starts, a socket to the forkserver is open too.
FILES_PER_DIGEST_PROCESS = 8
# Once for all the workers: the forkserver's socket and the resource tracker's pipe.
DIGEST_PROCESSES_SHARED_FILES = 2
# The fewest connections the exporter serves: a --web.max-connections below it is refused at
# start, and an open-file limit that leaves fewer still gets this many (with a warning).
MIN_CONNECTIONS = 8
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\n"
            b"too many connections\n")
# SO_LINGER on, with a linger time of 0: closing resets the connection (`_Connection.abort`).
_RESET = struct.pack("ii", 1, 0)
_ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    header_timeout: float = 10.0
    # A client that takes no byte of its answer for this long is gone or hostile. Generous,
    # because progress shows only when the kernel takes more of the answer, which it does in
    # steps of a third of its send buffer: a reader slower than that per timeout is cut.
    send_timeout: float = 30.0
    # Longer than the usual scrape intervals, so Prometheus reuses its connection; idle
    # kept-alive connections are the first to go at the cap anyway.
    keepalive_timeout: float = 120.0
    # Requests in flight get this long after a stop signal; then their connections are cut,
    # which leaves time to exit within the 3 s the README promises.
    shutdown_grace: float = 1.5
    # File descriptors kept for everything but served connections: the gateway connection
    # pool (100 by default) and the rest.
    reserved_files: int = 100 + OTHER_FILES


class ListenError(Exception):
    """The address cannot be listened on: said in one line, with what to do."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host, self.port, self.errno = host, port, error.errno
        flag = "--web.listen-address"
        if error.errno == errno.EADDRINUSE:
            advice = f"another process is using it: stop that process or choose another {flag}"
        elif error.errno == errno.EACCES:
            advice = f"permission denied (ports below 1024 need privileges): choose another {flag}"
        else:
            advice = f"{error.strerror or error}: check {flag}"
        super().__init__(f"cannot listen on {host}:{port}: {advice}")


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force, or None
    where the platform has no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 10240]
    for target in targets:
        if soft != resource.RLIM_INFINITY and soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            break
        except (ValueError, OSError):
            continue
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def digest_process_files(processes: int) -> int:
    """File descriptors `processes` digest worker processes take from the exporter's process
    (none for the worker thread, `processes` 0)."""
    if not processes:
        return 0
    return processes * FILES_PER_DIGEST_PROCESS + DIGEST_PROCESSES_SHARED_FILES


def connection_cap(limits: Limits, open_files: int | None) -> int:
    """`max_connections`, lowered to what the open-file limit leaves (and said so)."""
    if open_files is None or open_files - limits.reserved_files >= limits.max_connections:
        return limits.max_connections
    cap = max(MIN_CONNECTIONS, open_files - limits.reserved_files)
    log.warning("open file limit allows fewer connections than --web.max-connections; raise "
                "it (systemd LimitNOFILE=, ulimit -n)",
                extra={"open_files": open_files, "max_connections": cap})
    return cap


def _host(peername: object) -> str | None:
    """The address of a socket's peer: (host, port, ...) for IP; a Unix socket's path."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername) if peername else None


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol inside, the limits' bookkeeping around."""

    def __init__(self, tracker: ConnectionTracker) -> None:
        self._tracker = tracker
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None  # the client, as `peers.peer_of` names it
        self.busy = 0  # requests whose handler is running
        # Since when request headers are awaited (loop time); None while there is no request
        # or its handler runs.
        self.waiting_since: float | None = None
        self._unsent = 0  # bytes of an answer waiting to be sent, at the last check
        self._stalled_since: float | None = None
        # The transport aiohttp serves: `transport` itself, or the TLS one above it.
        self.served: asyncio.Transport | None = None
        # What TLS decrypted between the handshake's end and aiohttp taking over.
        self._early: list[bytes] = []
        self._early_eof = False

    def send_stalled_since(self, now: float) -> float | None:
        """Since when the client has taken none of the answer waiting to be sent; None when
        nothing waits. Called by the sweep. Any change of the bytes waiting is progress: the
        client took some, or aiohttp added more, which it does only once some have gone."""
        unsent = self.unsent()
        if not unsent:
            self._stalled_since = None
        elif unsent != self._unsent or self._stalled_since is None:
            self._stalled_since = now  # progress (or the first look): timed from here
        self._unsent = unsent
        return self._stalled_since

    def unsent(self) -> int:
        """Bytes of an answer not yet handed to the kernel: in the socket's transport (over
        TLS, encrypted) and, over TLS, not yet encrypted in the one above it."""
        layers = {t for t in (self.transport, self.served) if t is not None}
        return sum(t.get_write_buffer_size() for t in layers)

    @property
    def idle(self) -> bool:
        """No handler running and nothing left to send: dropping it loses no answer."""
        return not self.busy and self.transport is not None and not self.unsent()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = peer_of(_host(transport.get_extra_info("peername")))
        if not self._tracker.admit(self):
            self._refuse()
            return
        self.waiting_since = self._tracker.now()
        if self._tracker.tls is None:
            self._serve(self.transport)
        else:
            # Nothing is read until the upgrade takes over the socket: a ClientHello read
            # here would be lost to TLS.
            self.transport.pause_reading()  # type: ignore[union-attr]
            self._tracker.upgrade(self)

    def _refuse(self) -> None:
        """A canned 503 over plain HTTP; over TLS the connection is closed before its
        handshake, which would cost more than the answer saves."""
        assert self.transport is not None
        if self._tracker.tls is None:
            self.transport.write(_REFUSAL)
        self.transport.close()

    def _serve(self, served: asyncio.Transport) -> None:
        """aiohttp takes the connection over, with what TLS decrypted before it did."""
        self.served = served
        self.inner = self._tracker.make_protocol()
        self.inner.connection_made(served)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            self.inner.eof_received()

    async def upgrade(self) -> None:
        """The TLS handshake, within the header timeout, then aiohttp serves the connection.
        A failed, late or cancelled (at stop) handshake leaves it closed by `start_tls`."""
        assert self.transport is not None and self._tracker.tls is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                self.transport, self, self._tracker.tls, server_side=True,
                ssl_handshake_timeout=self._tracker.limits.header_timeout)
        except OSError:  # a failed handshake, timed out, or the client gone
            tls = None
        if tls is None or tls.is_closing():  # None: the connection was lost in the handshake
            self._tracker.forget(self)
        else:
            self._serve(tls)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            self._early.append(data)
            return
        self._tracker.touch(self)
        if not self.busy and self.waiting_since is None:
            # The first bytes of another request on a kept-alive connection.
            self.waiting_since = self._tracker.now()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            self._early_eof = True
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tracker.forget(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def request_started(self) -> None:
        self.busy += 1
        self.waiting_since = None

    def request_finished(self) -> None:
        self.busy -= 1
        self._tracker.touch(self)

    def abort(self) -> None:
        """Drop the connection; with a reset when an answer is cut short by it.

        The answer's bytes not yet handed to the kernel are dropped with the connection, so
        the client cannot use what it gets anyway; a plain close would still leave what the
        kernel holds to send (up to 4 MiB a connection on Linux) queued for a client that
        may never read it, for as long as it keeps the connection open. With a zero linger
        time the kernel discards it and resets the connection at once. A connection with no
        answer left in the transport is closed: the end of its last answer, still in the
        kernel, reaches the client."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None and self.unsent():
            with contextlib.suppress(OSError):  # a socket already gone needs no reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()


class ConnectionTracker:
    """The protocol factory for the listening socket: counts, times and, at the cap, makes
    room. Connections are kept least recently active first."""

    def __init__(self, make_protocol: Callable[[], asyncio.Protocol], limits: Limits,
                 cap: int, tls: ssl.SSLContext | None = None) -> None:
        self.make_protocol = make_protocol
        self.limits = limits
        self.cap = cap
        self.tls = tls  # each accepted connection is upgraded with it
        self._handshakes: set[asyncio.Task[None]] = set()
        self._live: OrderedDict[object, _Connection] = OrderedDict()  # by transport
        self._per_peer: dict[str | None, int] = {}
        self._loop = asyncio.get_running_loop()
        self._sweep_every = min(1.0, limits.header_timeout / 4, limits.send_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        # At the cap, what made room (or did not), each logged once per episode of its own:
        # an episode of idle sockets must not hide that scrapes are being cut or refused.
        self.at_cap = Episode(log, "connection limit reached: dropping the connection idle "
                              "longest for each new one")
        self.evicting = Episode(log, "connection limit reached and every connection busy: "
                                "evicting the quietest connection of the client holding most "
                                "for a new one from a client holding at least 2 fewer")
        self.refusing = Episode(log, "connection limit reached and every connection busy: "
                                "refusing new connections (503; over TLS, closed before the "
                                "handshake) from clients holding within 1 of the client "
                                "holding most")
        self.at_peer_cap = Episode(log, "connection limit per address reached: dropping the "
                                   "address's idle connections and refusing its new ones "
                                   "while all are busy")
        self.header_timeouts = Episode(log, "closing connections that did not send request "
                                       "headers in time")
        self.send_timeouts = Episode(log, "closing connections that did not read their "
                                     "answer in time")
        self.out_of_files = Episode(log, "out of file descriptors: cannot accept connections; "
                                    "raise the open file limit or lower --web.max-connections")

    def __call__(self) -> _Connection:
        return _Connection(self)

    def now(self) -> float:
        return self._loop.time()

    def upgrade(self, connection: _Connection) -> None:
        """Start `connection`'s TLS handshake, bounded by the header timeout."""
        handshake = self._loop.create_task(connection.upgrade())
        self._handshakes.add(handshake)
        handshake.add_done_callback(self._handshakes.discard)

    def start(self) -> None:
        """Check for connections whose request headers are late, a few times a timeout:
        one timer for all connections, not one per request."""
        self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def stop(self) -> None:
        """Stop sweeping; each episode says what its hits since its last line were, as it
        would once over: nothing will flush them any more."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for handshake in list(self._handshakes):
            handshake.cancel()  # which closes its connection
        for episode in self.episodes():
            episode.close()

    def _sweep(self) -> None:
        now = self.now()
        headers_due, answer_due = now - self.limits.header_timeout, now - self.limits.send_timeout
        for connection in list(self._live.values()):
            stalled = connection.send_stalled_since(now)
            if connection.waiting_since is not None and connection.waiting_since <= headers_due:
                self.header_timeouts.hit(address=connection.peer,
                                         timeout=self.limits.header_timeout)
                connection.abort()
            elif stalled is not None and stalled <= answer_due:
                self.send_timeouts.hit(address=connection.peer,
                                       timeout=self.limits.send_timeout)
                connection.abort()
        for episode in self.episodes():
            episode.flush()  # an episode that is over says what its last hits were
        self.start()

    def episodes(self) -> tuple[Episode, ...]:
        return (self.at_cap, self.evicting, self.refusing, self.at_peer_cap,
                self.header_timeouts, self.send_timeouts, self.out_of_files)

    def admit(self, connection: _Connection) -> bool:
        """Room for a newcomer within its client's share, then within the cap: at each, the
        quietest idle connection (the client's own, then any) makes room, if there is one."""
        peer = connection.peer
        per_peer = self.limits.max_connections_per_address
        if self._per_peer.get(peer, 0) >= per_peer:
            self.at_peer_cap.hit(address=peer, max_connections_per_address=per_peer)
            if not self._drop_idle(lambda c: c.peer == peer):
                return False
        if len(self._live) >= self.cap and not self._make_room(peer):
            return False
        self._live[connection.transport] = connection
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def _drop_idle(self, among: Callable[[_Connection], bool]) -> bool:
        """Drop the connection quiet longest without a request in progress, of those `among`;
        False when every one of them is busy."""
        return self._drop(lambda c: c.idle and among(c))

    def _make_room(self, peer: str | None) -> bool:
        """At the cap: the connection idle longest goes; if every one is busy, the client
        holding most gives up its quietest one, busy or not, when it holds at least two more
        than the newcomer's client, so that clients each within their share cannot together
        lock out one holding few (and equal shares never cut each other's answers); else the
        newcomer is refused. Each outcome is logged, with the clients it concerns."""
        if self._drop_idle(lambda _: True):
            self.at_cap.hit(address=peer, max_connections=self.cap)
            return True
        heaviest = max(self._per_peer, key=self._per_peer.__getitem__)
        holds, most = self._per_peer.get(peer, 0), self._per_peer[heaviest]
        if most < holds + 2:
            self.refusing.hit(max_connections=self.cap, address=peer, address_connections=holds,
                              busiest_address=heaviest, busiest_connections=most)
            return False
        self.evicting.hit(max_connections=self.cap, address=heaviest, address_connections=most,
                          newcomer_address=peer, newcomer_connections=holds)
        return self._drop(lambda c: c.peer == heaviest)

    def _drop(self, among: Callable[[_Connection], bool]) -> bool:
        """Drop the connection quiet longest of those `among`; False when there is none."""
        victim = next((c for c in self._live.values() if among(c)), None)
        if victim is None:
            return False
        self.forget(victim)
        victim.abort()
        return True

    def touch(self, connection: _Connection) -> None:
        if connection.transport in self._live:
            self._live.move_to_end(connection.transport)

    def forget(self, connection: _Connection) -> None:
        if self._live.pop(connection.transport, None) is None:
            return
        left = self._per_peer.pop(connection.peer) - 1
        if left:
            self._per_peer[connection.peer] = left

    def abort_all(self) -> None:
        for connection in list(self._live.values()):
            connection.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks a connection busy while its handler runs: no header timer, not dropped."""
        # The protocol of the transport aiohttp serves, plain or TLS, is the connection's.
        connection = request.transport.get_protocol() if request.transport else None
        if not isinstance(connection, _Connection):
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_finished()


def accept_error_handler(exhausted: Episode) -> Callable[[asyncio.AbstractEventLoop,
                                                         dict[str, Any]], None]:
    """asyncio logs a traceback every time accept() fails for want of file descriptors;
    one line per episode says the same."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in _ACCEPT_ERRNOS \
                and "accept" in str(context.get("message", "")):
            exhausted.hit(error=error.strerror)
            return
        loop.default_exception_handler(context)

    return handle


@contextlib.contextmanager
def _quiet_accept_errors(exhausted: Episode) -> Any:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(accept_error_handler(exhausted))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


async def _listen(tracker: ConnectionTracker, host: str, port: int) -> asyncio.Server:
    """Listen in plain TCP, TLS or not: the tracker upgrades each connection it admits."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(tracker, host, port, backlog=128)
    except OSError as exc:
        raise ListenError(host, port, exc) from None


def _protocol_factory(runner: web.AppRunner) -> Callable[[], asyncio.Protocol]:
    def make() -> asyncio.Protocol:
        assert runner.server is not None, "set up before the first connection"
        return runner.server()

    return make


def server_url(tls: bool, host: str, port: int) -> str:
    """The base URL of a bound address; an IPv6 address in brackets, as a URL must have it
    (`http://::1:8088` is no URL: printed in `simulate`'s configuration, it was refused),
    and the `%` before a link-local address's zone written `%25`, as a URL must have it."""
    if ":" in host:
        host = f"[{host.replace('%', '%25')}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


@contextlib.asynccontextmanager
async def running_site(app: web.Application, host: str, port: int,
                       ssl_context: ssl.SSLContext | None = None,
                       limits: Limits | None = None) -> AsyncIterator[str]:
    """Serve `app` within `limits`; yields the address actually bound (port 0 picks a free
    one). `app` gets a first middleware that tells the bookkeeping when a handler runs.
    On exit: stop listening, let requests in flight finish for `shutdown_grace`, then cut
    what is left."""
    limits = limits or Limits()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=limits.shutdown_grace,
                           keepalive_timeout=limits.keepalive_timeout)
    tracker = ConnectionTracker(_protocol_factory(runner), limits,
                                connection_cap(limits, raise_open_file_limit()), ssl_context)
    app.middlewares.insert(0, tracker.middleware)
    await runner.setup()
    try:
        with _quiet_accept_errors(tracker.out_of_files):
            server = await _listen(tracker, host, port)
            tracker.start()
            try:
                bound_host, bound_port = server.sockets[0].getsockname()[:2]
                yield server_url(ssl_context is not None, bound_host, bound_port)
            finally:
                server.close()
    finally:
        cut = asyncio.get_running_loop().call_later(limits.shutdown_grace, tracker.abort_all)
        try:
            await runner.cleanup()
        finally:
            cut.cancel()
            tracker.stop()
