"""What one poll of a gateway yields, and what is kept of it.

A `Snapshot` has each session twice, on purpose: as a small typed record holding only the
fields the metrics need, and as the exact JSON bytes the gateway sent (`msgspec.Raw`, a view
into the response body). Once the poll is aggregated the records and the body are dropped; a
`SessionIndex` keeps the bytes, compressed in blocks, and whose each session is, so
`/sessions` can return the gateway's own objects without decoding or re-encoding any.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, compress
from operator import attrgetter
from typing import Annotated, ClassVar

import msgspec
import zstandard

from exporter.digest.groups import Groups, shared

Number = int | float
# A count, a byte total, a duration or a timestamp as a gateway reports it. Anything negative,
# above 2^63 (Java's Long.MAX_VALUE) or not finite (NaN, infinity) fails decoding, so the
# session carrying it is counted invalid instead of poisoning a sum or a counter. The bounds
# are msgspec's own constraints, checked while decoding at no measurable cost.
Count = (Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
         | Annotated[float, msgspec.Meta(ge=0, le=2.0**63)])


def id_hashes(ids: Sequence[str | int | None]) -> list[int]:
    """A 64-bit hash per session id, keyed per process, to hold ids compactly between polls.

    Python's hash of a string is keyed; of an int it is the int itself modulo 2^61 - 1 (and
    hash(-1) == hash(-2)), so a gateway numbering its sessions could have two taken for one.
    An int is hashed as a tuple holding its digits: keyed, and apart from the hash of the
    string id with the same digits. Lists of string ids keep the C-speed path."""
    if int not in set(map(type, ids)):
        return list(map(hash, ids))
    return [hash((str(i),)) if type(i) is int else hash(i) for i in ids]


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


class RestClientItem(msgspec.Struct, frozen=True, gc=False):
    """One item of the 8.3 REST API's Vision client or Designer list.

    Not a `getSessionInfo` row: `user` is the username, `id` the client id, `uptime` how long
    the client has been open (ms). Sources turn it into a `ClientSession`.
    """

    IDENTITY: ClassVar[str] = "id"

    id: str | int | None = None
    user: str | None = None
    project: str | None = None
    address: str | None = None
    uptime: Count | None = None


# A gateway's warnings are its own text, logged whenever they change: at most this many, each
# at most this long, so a broken or hostile gateway's log line is not as large as its answer.
MAX_WARNINGS = 10
WARNING_MAX_CHARS = 200


def bounded_warnings(warnings: Sequence[str]) -> tuple[str, ...]:
    """`warnings`, each cut to `WARNING_MAX_CHARS`, the ones past `MAX_WARNINGS` replaced by
    how many they were. Bounded already, they come back the same."""
    kept = [w if len(w) <= WARNING_MAX_CHARS else w[:WARNING_MAX_CHARS - 1] + "…"
            for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        kept[-1] = f"and {len(warnings) - MAX_WARNINGS + 1} more warnings left out"
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one successful poll of one gateway returned. Never mutated after creation;
    its warnings are bounded as it is created, by whichever source decodes them."""

    perspective: tuple[PerspectiveSession, ...] = ()
    perspective_json: tuple[msgspec.Raw | bytes, ...] = ()
    clients: tuple[ClientSession, ...] = ()
    clients_json: tuple[msgspec.Raw | bytes, ...] = ()
    reported_name: str | None = None
    version: str | None = None
    redundancy_role: str | None = None
    collected_at: float | None = None
    warnings: tuple[str, ...] = ()
    invalid_sessions: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "warnings", bounded_warnings(self.warnings))


Selector = Callable[[str | None, str | None], bool]

# Sessions per compressed block. Smaller blocks cost /sessions less decompression for a
# scattered selection and compress worse; at 128, a block is about 45 kB of JSON and
# compresses about 7:1.
SESSIONS_PER_BLOCK = 128
# zstd's fastest regular level: three times zlib's speed at a better ratio on session JSON.
_COMPRESSION_LEVEL = 1


# Usernames that name no one: public sessions (the scripting function's and the 8.3 API's
# words for them) and the series cap's fold.
PLACEHOLDER_USERNAMES = frozenset({"Unauthenticated", "anonymous", "__other__"})


def _most_common_owner(owners: Groups) -> tuple[str | None, str | None]:
    """The username (placeholders aside) and the project most sessions have; ties go to the
    first in sort order, so the same sessions give the same answer."""
    users: Counter[str] = Counter()
    projects: Counter[str] = Counter()
    for code, count in Counter(owners.codes).items():
        user, project = owners.keys[code]
        if user and user not in PLACEHOLDER_USERNAMES:
            users[user] += count
        if project:
            projects[project] += count
    return _most_common(users), _most_common(projects)


def _most_common(counts: Counter[str]) -> str | None:
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0] if counts else None


@dataclass(frozen=True, slots=True)
class SessionIndex:
    """The sessions `/sessions` can return from one list of one gateway.

    Kept instead of the typed records once a poll is aggregated: each session's JSON as the
    gateway sent it, in the gateway's order, concatenated in blocks of `SESSIONS_PER_BLOCK`
    and compressed (zstd), with each session's end offset inside its block; and per session
    the code of its (username, project) pair. A filter tests each distinct pair once, not each
    session, and decompresses only the blocks holding a session it returns. A held session
    costs its compressed bytes plus eight bytes: no Python object of its own.
    """

    blocks: tuple[bytes, ...] = ()
    ends: array = field(default_factory=lambda: array("I"))
    owner_codes: array = field(default_factory=lambda: array("I"))
    # Per owner code, its username and its project: two flat tuples rather than one of
    # pairs, a pair object (56 bytes) fewer per distinct owner.
    usernames: tuple[str | None, ...] = ()
    projects: tuple[str | None, ...] = ()
    # The username (placeholders aside) and the project most of its sessions have, for the
    # landing page's examples: found once here, with the digest, not on every request.
    common: tuple[str | None, str | None] = (None, None)

    @classmethod
    def of(cls, records: Sequence[PerspectiveSession | ClientSession],
           raw: Sequence[msgspec.Raw | bytes]) -> SessionIndex:
        return cls.grouped(raw, Groups.of(zip(map(_USERNAME, records), map(_PROJECT, records),
                                              strict=True)))

    @classmethod
    def grouped(cls, raw: Sequence[msgspec.Raw | bytes], owners: Groups) -> SessionIndex:
        """From a grouping computed already: `owners` groups the sessions by (username,
        project)."""
        blocks, ends = _compressed_blocks(raw)
        usernames, projects = zip(*owners.keys, strict=True) if owners.keys else ((), ())
        return cls(blocks, ends, array("I", owners.codes), shared(usernames), shared(projects),
                   _most_common_owner(owners))

    def __len__(self) -> int:
        return len(self.owner_codes)

    def __repr__(self) -> str:  # the blocks are megabytes: never print them
        return f"SessionIndex(sessions={len(self)}, blocks={len(self.blocks)})"

    def select(self, wants: Selector | None) -> Sequence[memoryview]:
        """The sessions whose (username, project) `wants` accepts, in the gateway's order."""
        if wants is None:
            return self._sessions(range(len(self)))
        owners = zip(self.usernames, self.projects, strict=True)
        accepted = {code for code, owner in enumerate(owners) if wants(*owner)}
        if not accepted:
            return []
        return self._sessions(compress(range(len(self)), map(accepted.__contains__,
                                                             self.owner_codes)))

    def _sessions(self, positions: Iterable[int]) -> list[memoryview]:
        """Each chosen session's bytes, a view into its decompressed block."""
        out: list[memoryview] = []
        ends = self.ends
        current, block = -1, memoryview(b"")
        decompress = zstandard.ZstdDecompressor().decompress
        for position in positions:
            number = position // SESSIONS_PER_BLOCK
            if number != current:
                current, block = number, memoryview(decompress(self.blocks[number]))
            start = 0 if position % SESSIONS_PER_BLOCK == 0 else ends[position - 1]
            out.append(block[start:ends[position]])
        return out


_USERNAME = attrgetter("username")
_PROJECT = attrgetter("project")


def _compressed_blocks(raw: Sequence[msgspec.Raw | bytes]) -> tuple[tuple[bytes, ...], array]:
    """The sessions' bytes joined and compressed in blocks, and each one's end in its block.

    (Compressing in a thread of its own while the digest went on was tried: the GIL hand-offs
    between the two made the digest slower, not faster.)"""
    compressor = zstandard.ZstdCompressor(level=_COMPRESSION_LEVEL)
    blocks = []
    ends = array("I")
    for first in range(0, len(raw), SESSIONS_PER_BLOCK):
        chunk = raw[first:first + SESSIONS_PER_BLOCK]
        ends.extend(accumulate(map(len, chunk)))
        blocks.append(_exact(compressor.compress(b"".join(chunk))))
    return tuple(blocks), ends


def _exact(block: bytes) -> bytes:
    """`block` in an allocation of its own size. zstandard's `compress()` returns its result
    in the buffer it sized for the worst case, and the memory stays held: tracemalloc showed
    20 kB kept per block for a 59-byte result. Held for a whole poll interval per block, the
    copy's cost (a few kB, once) is worth it."""
    return memoryview(block).tobytes()
