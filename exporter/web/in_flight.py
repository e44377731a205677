"""How many bytes of `/sessions` answers may be under way at once, in all and per client.

An answer holds its whole body until the kernel has taken it, and an unfiltered one of a
large site is tens of megabytes: clients that ask and read slowly (or not at all, until the
send timeout cuts them) would otherwise make the exporter hold as many copies as they have
connections. An answer is rendered, then sent only if it fits what is left of both budgets,
or if it is the only one under way (so any answer can be had, one at a time); otherwise it is
dropped at once and the request refused (429, `Retry-After`). Small answers, the usual
filtered ones, fit alongside each other by the thousand. `/metrics` is not bounded by this.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

# Bytes of answers under way at once, in all and per client (an IPv4 address or IPv6 /64,
# as the server's connection limits count them): a client holding its share leaves the rest
# to the others.
BUDGET = 128 << 20
PER_CLIENT = 64 << 20
# An unfiltered answer of 100,000 sessions takes 0.3 s of CPU to render (decompressing and
# joining each session's JSON): rendered on the event loop, every scrape waited behind it,
# so answers are rendered in threads, at most this many at once.
RENDERS = 2


class Busy(Exception):
    """No room for an answer of `size` bytes: in all (`client` None) or for this client."""

    def __init__(self, size: int, client: str | None) -> None:
        self.size, self.client = size, client
        whose = "from this client " if client is not None else ""
        super().__init__(f"too many /sessions answers are under way {whose}to add one of "
                         f"{size} bytes; retry shortly, or ask for fewer sessions")


class InFlight:
    def __init__(self, budget: int = BUDGET, per_client: int = PER_CLIENT,
                 renders: int = RENDERS) -> None:
        self.budget, self.per_client = budget, per_client
        self._clients: Counter[str | None] = Counter()  # bytes under way, by client
        # Answers being rendered at once, each in a thread of its own (`sessions_handler`):
        # the others wait their turn, never the event loop.
        self.rendering = asyncio.Semaphore(renders)

    @property
    def total(self) -> int:
        return self._clients.total()

    @contextlib.contextmanager
    def slot(self, client: str | None, size: int) -> Iterator[None]:
        """Room for an answer of `size` bytes to `client` while the block runs; `Busy` when
        there is none."""
        if self.total:
            if self.total + size > self.budget:
                raise Busy(size, None)
            if self._clients[client] + size > self.per_client:
                raise Busy(size, client or "")
        self._clients[client] += size
        try:
            yield
        finally:
            self._clients[client] -= size
            if self._clients[client] <= 0:
                del self._clients[client]
