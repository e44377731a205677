"""What one poll of a gateway yields: typed session records and the immutable snapshot.

Each session is kept twice, on purpose: as a small typed record holding only the fields the
metrics and filters need, and as the exact JSON bytes the gateway sent (`msgspec.Raw`, a view
into the response body), so `/sessions` can return the gateway's own objects without ever
decoding or re-encoding the ones it does not return.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

Number = int | float


class PerspectiveSession(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """One entry of `system.perspective.getSessionInfo()`; every field may be absent or null."""

    id: str | int | None = None
    username: str | None = None
    project: str | None = None
    session_scope: str | None = None
    # Milliseconds since the session last communicated (sources normalise to this meaning).
    last_comm: Number | None = None
    active_pages: Number | None = None
    recent_bytes_sent: Number | None = None
    total_bytes_sent: Number | None = None


class ClientSession(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """One row of `system.util.getSessionInfo()`: a Vision client or a Designer."""

    username: str | None = None
    project: str | None = None
    address: str | None = None
    is_designer: bool | None = None
    client_id: str | int | None = None
    creation_time: Number | None = None

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
