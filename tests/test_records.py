"""The per-record rules every source shares: duplicates, impossible numbers, numeric strings,
deep nesting. Driven through both sources' decoders, since the rules must hold for both."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sources import Reason, SourceError, records
from exporter.sources.records import (
    MAX_DEPTH,
    PERSPECTIVE_DECODER,
    cut_deep_values,
    decode_records,
)
from exporter.sources.rest import read_page, split_page
from exporter.sources.webdev import decode_webdev
from tests.payloads import document, encode, perspective, snapshot_of, vision

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_duplicate_ids_first_wins_and_each_repeat_is_invalid() -> None:
    snap = snapshot_of(document(
        [perspective("A", total=1000), perspective("B", total=7),
         perspective("A", total=400), perspective("A", total=5)],
        [vision("op", client_id="C1"), vision("eng", designer=True, client_id="C1"),
         vision("op2", client_id="C2")]))
    assert [(s.id, s.total_bytes_sent) for s in snap.perspective] == [("A", 1000), ("B", 7)]
    assert [json.loads(bytes(raw))["totalBytesSent"] for raw in snap.perspective_json] == [1000, 7]
    assert [(c.client_id, c.username) for c in snap.clients] == [("C1", "op"), ("C2", "op2")]
    assert len(snap.clients_json) == 2
    assert snap.invalid_sessions == 3


def test_sessions_without_an_id_are_never_duplicates() -> None:
    snap = snapshot_of(document([perspective(None), perspective(None)],  # type: ignore[arg-type]
                                [vision(client_id=None), vision(client_id=None)]))  # type: ignore[arg-type]
    assert (len(snap.perspective), len(snap.clients), snap.invalid_sessions) == (2, 2, 0)


def test_duplicates_are_per_list() -> None:
    """A Perspective session and a Vision client may share an id: different lists."""
    snap = snapshot_of(document([perspective("X1")], [vision(client_id="X1")]))
    assert (len(snap.perspective), len(snap.clients), snap.invalid_sessions) == (1, 1, 0)


def test_duplicates_in_a_rest_page_are_dropped_the_same_way() -> None:
    items = read_page(encode({"items": [perspective("A"), perspective("A", total=1)]}), "g").items
    decoded = decode_records(items, PERSPECTIVE_DECODER)
    assert (len(decoded.records), decoded.invalid) == (1, 1)


IMPOSSIBLE: list[tuple[str, str]] = [
    ("totalBytesSent", "1e308"), ("totalBytesSent", "1e999"), ("totalBytesSent", "-1"),
    ("totalBytesSent", "18446744073709551616"), ("totalBytesSent", "9223372036854775808"),
    ("totalBytesSent", "9.3e18"), ("activePages", "-5"), ("recentBytesSent", "-5"),
    ("recentBytesSent", "-0.5"), ("lastComm", "-1"),
]


def _session_with(key: str, json_text: str) -> bytes:
    body = encode(document([perspective("good"), perspective("odd", **{key: "<value>"})]))
    return body.replace(b'"<value>"', json_text.encode())


@pytest.mark.parametrize(("key", "json_text"), IMPOSSIBLE)
def test_impossible_numbers_make_only_their_session_invalid(key: str, json_text: str) -> None:
    snap = decode_webdev(_session_with(key, json_text), "g")
    assert [s.id for s in snap.perspective] == ["good"]
    assert snap.invalid_sessions == 1


def test_the_largest_possible_values_are_kept() -> None:
    snap = decode_webdev(_session_with("totalBytesSent", str(2**63 - 1)), "g")
    assert snap.perspective[1].total_bytes_sent == 2**63 - 1
    snap = decode_webdev(_session_with("totalBytesSent", "9.2e18"), "g")
    assert snap.perspective[1].total_bytes_sent == 9.2e18


def test_impossible_client_creation_time_is_invalid() -> None:
    row: dict[str, Any] = vision(client_id="C9")
    row["creationTime"] = -1
    snap = snapshot_of(document([], [vision(), row]))
    assert (len(snap.clients), snap.invalid_sessions) == (1, 1)


@pytest.mark.parametrize(("value", "number"), [("12", 12), ("12.5", 12.5), ("0", 0),
                                                ("9223372036854775807", 2**63 - 1)])
def test_numeric_strings_are_accepted(value: str, number: float) -> None:
    """What a script stringifying a Java Long sends: read as the number it spells."""
    item = perspective("s")
    item.update(activePages=value, recentBytesSent=value, totalBytesSent=value, lastComm=value)
    snap = snapshot_of(document([item]))
    session = snap.perspective[0]
    assert (session.active_pages, session.recent_bytes_sent, session.total_bytes_sent,
            session.last_comm) == (number,) * 4
    assert snap.invalid_sessions == 0
    assert json.loads(bytes(snap.perspective_json[0]))["totalBytesSent"] == value  # as sent


@pytest.mark.parametrize("value", ["-5", "1e308", "NaN", "Infinity", "inf", " 12", "12 ",
                                   "0x10", "12abc", "", "three", "1_000"])
def test_other_strings_are_rejected(value: str) -> None:
    snap = snapshot_of(document([perspective("good"), perspective("s", total=value)]))  # type: ignore[arg-type]
    assert [s.id for s in snap.perspective] == ["good"]
    assert snap.invalid_sessions == 1


def test_a_session_nested_100000_deep_costs_only_itself() -> None:
    body = encode(document([perspective("a"), perspective("deep", pageIds="<deep>"),
                            perspective("b")], [vision()]))
    snap = decode_webdev(body.replace(b'"<deep>"', DEEP), "g")
    assert [s.id for s in snap.perspective] == ["a", "b"]
    assert [json.loads(bytes(raw))["id"] for raw in snap.perspective_json] == ["a", "b"]
    assert len(snap.clients) == 1
    assert snap.invalid_sessions == 1


def test_a_rest_page_with_a_deep_session_loses_only_that_session() -> None:
    body = encode({"items": [perspective("a"), perspective("deep", x="<deep>")]})
    items = read_page(body.replace(b'"<deep>"', DEEP), "g").items
    decoded = decode_records(items, PERSPECTIVE_DECODER)
    assert [s.id for s in decoded.records] == ["a"]
    assert decoded.invalid == 1


def test_a_document_nested_100000_deep_is_one_schema_error() -> None:
    with pytest.raises(SourceError) as caught:
        decode_webdev(DEEP, "g")
    assert caught.value.reason is Reason.SCHEMA
    with pytest.raises(SourceError) as caught:
        decode_webdev(b'{"schema": 1, "perspective": ' + DEEP[:-1], "g")
    assert caught.value.reason is Reason.DECODE


def test_cut_deep_values_respects_strings_and_keeps_shallow_text() -> None:
    body = b'{"a": "[[[\\"{", "b": [[[1]]], "c": [2]}'
    assert cut_deep_values(body, 2, b'"X"') == b'{"a": "[[[\\"{", "b": ["X"], "c": [2]}'
    assert cut_deep_values(body, 10, b'"X"') == body
    assert json.loads(cut_deep_values(DEEP, MAX_DEPTH, b'"X"')) is not None


def _cut_reference(value: Any, limit: int, depth: int = 0) -> Any:
    """What cutting means, on Python values: containers deeper than `limit` become "X"."""
    if isinstance(value, list | dict):
        if depth + 1 > limit:
            return "X"
        if isinstance(value, list):
            return [_cut_reference(v, limit, depth + 1) for v in value]
        return {k: _cut_reference(v, limit, depth + 1) for k, v in value.items()}
    return value


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ ,:ax\n'),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet='[]{}"\\ ax', max_size=3), inner, max_size=4),
    max_leaves=40)


@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=6))
@settings(max_examples=300, deadline=None)
def test_cut_deep_values_is_exactly_the_cut_of_the_value(value: Any, limit: int) -> None:
    """Byte for byte what serialising the cut value gives, whatever brackets the strings hold
    and however runs of brackets and plain text are mixed."""
    for separators in ((",", ":"), (", ", ": ")):
        body = json.dumps(value, separators=separators).encode()
        expected = json.dumps(_cut_reference(value, limit), separators=separators).encode()
        assert cut_deep_values(body, limit, b'"X"') == expected


def test_an_answer_too_large_to_cut_is_one_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback's work is bounded: past MAX_BRACKET_RUNS the answer fails as a whole."""
    import exporter.sources.records as records
    monkeypatch.setattr(records, "MAX_BRACKET_RUNS", 1_000)
    sessions = [perspective(f"s{i}") for i in range(300)]
    body = encode(document([*sessions, perspective("deep", pageIds="<deep>")]))
    with pytest.raises(SourceError) as caught:
        decode_webdev(body.replace(b'"<deep>"', DEEP), "g")
    assert caught.value.reason is Reason.DECODE
    assert "nested over a thousand levels deep" in caught.value.detail
    monkeypatch.setattr(records, "MAX_BRACKET_RUNS", 100_000)
    assert len(decode_webdev(body.replace(b'"<deep>"', DEEP), "g").perspective) == 300


@pytest.mark.parametrize(("value", "kind"), [
    (True, "designer"), ("true", "designer"), (1, "designer"), ("false", "vision"), (0, "vision"),
    ("yes", None), (2, None)])
def test_is_designer_accepts_what_a_stringified_java_boolean_gives(value: object,
                                                                   kind: str | None) -> None:
    row = vision(client_id="C1")
    row["isDesigner"] = value
    snap = snapshot_of(document([], [row]))
    assert [c.kind for c in snap.clients] == ([kind] if kind else [])
    assert snap.invalid_sessions == (0 if kind else 1)


@pytest.mark.parametrize("text", ["\ud800", "\udc00", "ok\ud83d", "\ude00tail"])
def test_a_lone_surrogate_escape_costs_nothing(text: str) -> None:
    """`"\\ud800"` is valid JSON text but no Unicode string (what a cut Java string gives);
    the decoder refuses it, which lost the whole answer. It reads as U+FFFD, like invalid
    UTF-8, in the record and in the bytes /sessions serves."""
    body = encode(document([perspective("a", username=text), perspective("b")],
                           warnings=[text]))
    assert b"\\ud" in body  # json.dumps escapes the lone surrogate
    snap = decode_webdev(body, "g")
    assert [s.id for s in snap.perspective] == ["a", "b"]
    assert "\ufffd" in snap.perspective[0].username
    assert "\ufffd" in json.loads(bytes(snap.perspective_json[0]))["username"]
    assert "\ufffd" in snap.warnings[0]
    items = read_page(encode({"items": [perspective("a", username=text)]}), "g").items
    assert decode_records(items, PERSPECTIVE_DECODER).records[0].id == "a"


def test_escaped_backslashes_and_surrogate_pairs_are_left_alone() -> None:
    names = ["\\ud800", "\\\\ud800", "\U0001f600", "\\\U0001f600"]
    body = encode(document([perspective(str(i), username=n) for i, n in enumerate(names)],
                           warnings=["\ud800"]))
    snap = decode_webdev(body, "g")  # the lone one in the warning makes the repair run
    assert snap.warnings == ("\ufffd",)
    assert [s.username for s in snap.perspective] == names


def test_invalid_utf8_outside_the_sessions_costs_nothing() -> None:
    """Inside a session it was already replaced; in a warning or the gateway's name it lost
    the whole answer."""
    body = encode(document([perspective("a")], warnings=["W-X"])).replace(b"W-X", b"W\xffX")
    snap = decode_webdev(body.replace(b"Ignition-plant-a", b"plant\xfe"), "g")
    assert snap.warnings == ("W\ufffdX",)
    assert snap.reported_name == "plant\ufffd"
    assert [s.id for s in snap.perspective] == ["a"]


def test_a_valid_answer_beyond_ascii_is_checked_without_a_copy_of_it() -> None:
    """Every answer that is not pure ASCII is checked for bytes that are no UTF-8 before it
    is decoded, by decoding it whole to a `str`: one emoji in one username made that string
    four bytes a character, so an answer of 15 MB held 73 MB more while it was split, on
    the event loop's process for a REST page, at every poll (32 MB, the default
    `max_response_size`, held 160 MB). The check needs no copy of a valid answer at all."""
    sessions = [perspective(f"s{n}", f"user{n}", "Line1", "Browser",
                            userAgent="Mozilla/5.0 " + "x" * 200) for n in range(30_000)]
    sessions[0]["username"] = "J\u00fcrgen \U0001f600"
    body = json.dumps({"items": sessions, "metadata": {"total": len(sessions)}},
                      ensure_ascii=False).encode()
    tracemalloc.start()
    try:
        page = split_page(body, "g")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert page is not None and len(page.items) == len(sessions)
    assert peak < len(body), f"{peak / len(body):.1f} times the answer held to split it"


@given(st.binary(max_size=64))
def test_utf8_replaces_as_a_whole_decode_does_across_its_slices(body: bytes) -> None:
    """Checked and rebuilt a slice at a time (slices of 3 bytes here, so that sequences
    straddle them), the answer is what decoding it whole with replacement gives."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "_CHECKED_SLICE", 3)
        assert records.utf8(body) == body.decode("utf-8", "replace").encode("utf-8")
