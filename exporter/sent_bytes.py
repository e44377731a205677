"""A true monotonic byte counter built from sessions that come and go.

The gateway reports `totalBytesSent` per session; summing it per project would drop whenever a
busy session ends. Instead, per gateway, the last total of every live session is remembered and
only growth is added: the delta for a known session, the whole total for a new one, and the new
total when a session's count went down (the gateway reset it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from exporter.aggregate import ScopeKey, scope_key
from exporter.model import PerspectiveSession


class SentBytesCounter:
    """Owned by one gateway's poller; fed every successful snapshot in order."""

    def __init__(self) -> None:
        self._last: dict[str | int, float] = {}
        self._totals: dict[ScopeKey, float] = {}

    def observe(self, sessions: Iterable[PerspectiveSession]) -> Mapping[ScopeKey, float]:
        """Add this poll's growth; sessions absent from it are forgotten. Returns the totals."""
        seen: dict[str | int, float] = {}
        growth_by_scope: dict[tuple[str | None, str | None], float] = {}
        for session in sessions:
            current = session.total_bytes_sent
            if session.id is None or current is None or current < 0:
                continue  # without an id or a total there is nothing to follow
            previous = self._last.get(session.id)
            growth = current if previous is None or current < previous else current - previous
            raw_key = (session.project, session.session_scope)
            growth_by_scope[raw_key] = growth_by_scope.get(raw_key, 0.0) + growth
            seen[session.id] = current
        self._last = seen
        for raw_key, growth in growth_by_scope.items():
            key = scope_key(raw_key)
            self._totals[key] = self._totals.get(key, 0.0) + growth
        return MappingProxyType(dict(self._totals))
