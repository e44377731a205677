"""What one poll of a gateway yields, and what is kept of it.

A `Snapshot` has each session twice, on purpose: as a small typed record holding only the
fields the metrics need, and as the exact JSON bytes the gateway sent (`msgspec.Raw`, a view
into the response body). Once the poll is aggregated the records are dropped; a
`SessionIndex` keeps the bytes and where each (username, project) pair's sessions are, so
`/sessions` can return the gateway's own objects without decoding or re-encoding any.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, ClassVar

import msgspec

Number = int | float
# A count, a byte total, a duration or a timestamp as a gateway reports it. Anything negative,
# above 2^63 (Java's Long.MAX_VALUE) or not finite (NaN, infinity) fails decoding, so the
# session carrying it is counted invalid instead of poisoning a sum or a counter. The bounds
# are msgspec's own constraints, checked while decoding at no measurable cost.
Count = (Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
         | Annotated[float, msgspec.Meta(ge=0, le=2.0**63)])


class PerspectiveSession(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """One entry of `system.perspective.getSessionInfo()`; every field may be absent or null."""

    # The field that makes a session one session: no two in one list may share it.
    IDENTITY: ClassVar[str] = "id"

    id: str | int | None = None
    username: str | None = None
    project: str | None = None
    session_scope: str | None = None
    # Milliseconds since the session last communicated (sources normalise to this meaning).
    last_comm: Count | None = None
    active_pages: Count | None = None
    recent_bytes_sent: Count | None = None
    total_bytes_sent: Count | None = None
    uptime: Count | None = None  # milliseconds since the session started


class ClientSession(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """One row of `system.util.getSessionInfo()`: a Vision client or a Designer."""

    IDENTITY: ClassVar[str] = "client_id"

    username: str | None = None
    project: str | None = None
    address: str | None = None
    is_designer: bool | None = None
    client_id: str | int | None = None
    creation_time: Count | None = None

    @property
    def kind(self) -> str:
        return "designer" if self.is_designer else "vision"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one successful poll of one gateway returned. Never mutated after creation."""

    perspective: tuple[PerspectiveSession, ...] = ()
    perspective_json: tuple[msgspec.Raw | bytes, ...] = ()
    clients: tuple[ClientSession, ...] = ()
    clients_json: tuple[msgspec.Raw | bytes, ...] = ()
    reported_name: str | None = None
    version: str | None = None
    collected_at: float | None = None
    warnings: tuple[str, ...] = ()
    invalid_sessions: int = 0


Owner = tuple[str | None, str | None]  # (username, project)


@dataclass(frozen=True, slots=True)
class SessionIndex:
    """The sessions `/sessions` can return from one list of one gateway.

    Kept instead of the typed records once a poll is aggregated: each session's JSON as the
    gateway sent it, in the gateway's order, and the positions of each (username, project)
    pair's sessions. A filter then tests each distinct pair once, not each session, and a
    held session costs its bytes plus a few bytes of index.
    """

    raw: tuple[msgspec.Raw | bytes, ...] = ()
    owners: Mapping[Owner, array] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Sequence[PerspectiveSession | ClientSession],
           raw: tuple[msgspec.Raw | bytes, ...]) -> SessionIndex:
        positions: dict[Owner, list[int]] = {}
        for position, record in enumerate(records):
            key = (record.username, record.project)
            found = positions.get(key)
            if found is None:
                positions[key] = [position]
            else:
                found.append(position)
        return cls(raw, MappingProxyType({k: array("I", v) for k, v in positions.items()}))

    def __len__(self) -> int:
        return len(self.raw)

    def select(self, wants: Callable[[str | None, str | None], bool] | None
               ) -> Sequence[msgspec.Raw | bytes]:
        """The sessions whose (username, project) `wants` accepts, in the gateway's order."""
        if wants is None:
            return self.raw
        chosen: list[int] = []
        for (username, project), positions in self.owners.items():
            if wants(username, project):
                chosen.extend(positions)
        chosen.sort()
        raw = self.raw
        return [raw[i] for i in chosen]
