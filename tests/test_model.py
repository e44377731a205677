"""The SessionIndex: sessions' bytes held compressed in blocks, returned exactly as sent."""

from __future__ import annotations

import json

import msgspec

from exporter.digest.groups import Groups
from exporter.model import (
    MAX_WARNINGS,
    SESSIONS_PER_BLOCK,
    WARNING_MAX_CHARS,
    PerspectiveSession,
    SessionIndex,
    Snapshot,
)


def sessions(count: int) -> tuple[list[PerspectiveSession], list[bytes]]:
    raw = [json.dumps({"id": str(i), "username": f"u{i % 7}", "project": f"P{i % 3}",
                       "padding": "x" * (i % 50)}).encode() for i in range(count)]
    return [msgspec.json.decode(r, type=PerspectiveSession) for r in raw], raw


def test_every_session_comes_back_byte_for_byte_across_blocks() -> None:
    records, raw = sessions(SESSIONS_PER_BLOCK * 3 + 5)
    index = SessionIndex.of(records, raw)
    assert len(index) == len(raw)
    assert len(index.blocks) == 4
    assert [bytes(view) for view in index.select(None)] == raw


def test_a_filter_returns_the_chosen_pairs_in_the_gateways_order() -> None:
    records, raw = sessions(SESSIONS_PER_BLOCK * 2 + 1)
    index = SessionIndex.of(records, raw)
    chosen = index.select(lambda username, project: username == "u3" and project != "P1")
    expected = [r for r, s in zip(raw, records, strict=True)
                if s.username == "u3" and s.project != "P1"]
    assert [bytes(view) for view in chosen] == expected
    assert index.select(lambda username, project: False) == []


def test_empty_and_repr() -> None:
    assert list(SessionIndex().select(None)) == []
    assert list(SessionIndex.of([], []).select(None)) == []
    records, raw = sessions(3)
    assert repr(SessionIndex.of(records, raw)) == "SessionIndex(sessions=3, blocks=1)"


def test_held_bytes_are_compressed() -> None:
    records, raw = sessions(SESSIONS_PER_BLOCK * 4)
    index = SessionIndex.of(records, raw)
    assert sum(map(len, index.blocks)) < sum(map(len, raw)) / 3


def test_held_blocks_keep_no_more_memory_than_their_bytes() -> None:
    """zstandard's compress() leaves its result in a buffer sized for the worst case; the
    index must hold blocks of their own size, or memory per session triples."""
    import tracemalloc

    raw = [msgspec.Raw(json.dumps({"id": f"{i:08x}", "username": "u"}).encode())
           for i in range(SESSIONS_PER_BLOCK * 50)]
    tracemalloc.start()
    try:
        index = SessionIndex.grouped(raw, Groups.of([("u", "P")] * len(raw)))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    compressed = sum(map(len, index.blocks))
    assert held < 2 * compressed + 64 * 1024, (held, compressed)


def test_a_snapshots_warnings_are_bounded_and_say_how_many_were_left_out() -> None:
    """A gateway's warnings are its own text: at most `MAX_WARNINGS`, each cut, and a
    snapshot made again from a bounded one (the digest's `replace`) keeps them as they are."""
    sent = ("x" * 1_000_000, *[f"w{i}" for i in range(25)])
    warnings = Snapshot(warnings=sent).warnings
    assert len(warnings) == MAX_WARNINGS
    assert warnings[0] == "x" * (WARNING_MAX_CHARS - 1) + "…"
    assert warnings[1:-1] == tuple(f"w{i}" for i in range(MAX_WARNINGS - 2))
    assert warnings[-1] == f"and {len(sent) - MAX_WARNINGS + 1} more warnings left out"
    assert Snapshot(warnings=warnings).warnings == warnings
    assert Snapshot(warnings=("a", "b")).warnings == ("a", "b")
