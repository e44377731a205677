"""The WebDev document decoder: shapes, quirks and the raw bytes kept for /sessions."""

from __future__ import annotations

import json

import pytest

from exporter.sources.errors import Reason, SourceError
from exporter.sources.webdev import decode_webdev
from tests.payloads import document, encode, perspective, vision


def test_full_document() -> None:
    doc = document([perspective("s1", extra_key="kept")], [vision(designer=True)],
                   warnings=["Vision module not installed"])
    doc["futureKey"] = {"ignored": True}
    snap = decode_webdev(encode(doc), "plant-a")
    assert snap.perspective[0].username == "jsmith"
    assert snap.perspective[0].last_comm == 450
    assert snap.clients[0].kind == "designer"
    assert (snap.reported_name, snap.version) == ("Ignition-plant-a", "8.1.33")
    assert snap.collected_at == 1_795_000_000
    assert snap.warnings == ("Vision module not installed",)
    assert json.loads(bytes(snap.perspective_json[0])) == perspective("s1", extra_key="kept")


def test_one_malformed_session_is_skipped_and_counted() -> None:
    doc = document([perspective("good"), {"id": "bad", "activePages": "three"}, "text", 7,
                    perspective("good2")])
    snap = decode_webdev(encode(doc), "plant-a")
    assert [s.id for s in snap.perspective] == ["good", "good2"]
    assert len(snap.perspective_json) == 2
    assert snap.invalid_sessions == 3


def test_invalid_utf8_inside_a_session_is_replaced_not_fatal() -> None:
    body = encode(document([perspective("s1", username="XX")])).replace(b"XX", b"J\xffrg")
    snap = decode_webdev(body, "plant-a")
    assert snap.perspective[0].username == "J\ufffdrg"
    assert json.loads(bytes(snap.perspective_json[0]))["username"] == "J\ufffdrg"


@pytest.mark.parametrize("field", [b'"caf\xe9": 1', b'"note": "caf\xe9"', b'"x": ["\xff"]'])
def test_bytes_no_utf8_in_a_field_never_read_are_replaced_in_what_is_kept(field: bytes) -> None:
    """The decoder checks only the strings it decodes; each session's JSON is kept as sent
    for /sessions, whose every answer then held text that is no UTF-8."""
    body = encode(document([perspective("s1")])).replace(b'"id": "s1"', b'"id": "s1", ' + field)
    snap = decode_webdev(body, "plant-a")
    assert [s.id for s in snap.perspective] == ["s1"] and snap.invalid_sessions == 0
    kept = bytes(snap.perspective_json[0])
    assert "\ufffd" in kept.decode("utf-8")  # strict: raises on bytes that are no UTF-8


def test_sections_may_be_absent() -> None:
    snap = decode_webdev(b'{"schema": 1}', "plant-a")
    assert snap.perspective == () and snap.clients == ()


@pytest.mark.parametrize(("body", "reason"), [
    (b"", Reason.DECODE),
    (b"<html>502</html>", Reason.DECODE),
    (b'{"schema": 1, "perspective": [', Reason.DECODE),
    (b"[1, 2]", Reason.SCHEMA),
    (b'{"perspective": []}', Reason.SCHEMA),
    (b'{"schema": 2}', Reason.SCHEMA),
    (b'{"schema": 1, "perspective": {"a": 1}}', Reason.SCHEMA),
    (b'{"schema": "1"}', Reason.SCHEMA),
])
def test_broken_documents(body: bytes, reason: Reason) -> None:
    with pytest.raises(SourceError) as caught:
        decode_webdev(body, "plant-a")
    assert caught.value.reason is reason
    assert caught.value.gateway == "plant-a"
