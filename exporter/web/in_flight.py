"""How many `/sessions` answers may be under way at once, in all and per client.

An answer holds its whole body until the kernel has taken it, and an unfiltered one of a
large site is tens of megabytes: clients that ask and read slowly (or not at all, until the
send timeout cuts them) would otherwise make the exporter hold as many copies as they have
connections. Past either limit a request is refused at once (429, `Retry-After`), before
anything is rendered; `/metrics` is not limited by this.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

# Answers under way at once, in all and per client (an IPv4 address or IPv6 /64, as the
# server's connection limits count them). A person at a browser, a script and Grafana's
# table ask one at a time; a client holding its two leaves the others theirs.
MAX_ANSWERS = 4
MAX_ANSWERS_PER_CLIENT = 2


class Busy(Exception):
    """No room for another answer: in all (`client` None) or for this client."""

    def __init__(self, limit: int, client: str | None) -> None:
        self.limit, self.client = limit, client
        whose = "from this client" if client is not None else "in all"
        super().__init__(f"{limit} /sessions answers are under way {whose}; retry shortly")


class InFlight:
    def __init__(self, limit: int = MAX_ANSWERS,
                 per_client: int = MAX_ANSWERS_PER_CLIENT) -> None:
        self.limit, self.per_client = limit, per_client
        self._clients: Counter[str | None] = Counter()

    @property
    def total(self) -> int:
        return self._clients.total()

    @contextlib.contextmanager
    def slot(self, client: str | None) -> Iterator[None]:
        """Room for one answer to `client` while the block runs; `Busy` when there is none."""
        if self.total >= self.limit:
            raise Busy(self.limit, None)
        if self._clients[client] >= self.per_client:
            raise Busy(self.per_client, client or "")
        self._clients[client] += 1
        try:
            yield
        finally:
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]
