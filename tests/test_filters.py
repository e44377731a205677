from __future__ import annotations

import json

import msgspec
import pytest
import re2

from exporter.web.filters import BadQuery, full_matcher, parse_query
from exporter.web.sessions_endpoint import append_with_gateway

SUFFIX = b',"gateway":"plant-a"}'


def test_full_matcher_is_anchored_and_treats_none_as_empty() -> None:
    matches = full_matcher("bi.*", "username")
    assert [matches(v) for v in ("billy", "bi", "abi", None)] == [True, True, False, False]
    assert full_matcher(".*", "username")(None)


def test_matcher_handles_non_ascii() -> None:
    assert full_matcher("mar.a.l.pez", "username")("maría.lópez")
    assert full_matcher("山.", "username")("山田")


def test_patterns_compile_with_re2() -> None:
    with pytest.raises(BadQuery, match="invalid regular expression"):
        full_matcher(r"(?=lookahead)", "username")  # only backtracking engines have these
    assert isinstance(re2.compile("a"), re2._Regexp)


def test_parse_query_defaults() -> None:
    query = parse_query({}, {"a"})
    assert query.kinds == ("perspective", "vision")
    assert query.wants_gateway("anything") and query.wants("x", None)


@pytest.mark.parametrize("raw", [
    b'{"id":"x"}', b'{}', b'{ }', b'{"id":"x" }', b'{\n}', b'{"gateway":"fake","id":1}',
])
def test_append_with_gateway_keeps_json_valid_and_ours_wins(raw: bytes) -> None:
    out: list[bytes | memoryview] = []
    append_with_gateway(out, msgspec.json.decode(b"[" + raw + b"]", type=list[msgspec.Raw])[0],
                        SUFFIX)
    append_with_gateway(out, raw, SUFFIX)
    items = json.loads(b"[" + b"".join(out) + b"]")
    expected = {**json.loads(raw), "gateway": "plant-a"}
    assert items == [expected, expected]
