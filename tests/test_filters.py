from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

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


def refusal(params: dict[str, list[str]], configured: frozenset[str] = frozenset({"plant-a"})
            ) -> str:
    with pytest.raises(BadQuery) as refused:
        parse_query(params, configured)
    return str(refused.value)


def unknown_gateway_error(value: str, configured: set[str]) -> str:
    return refusal({"gateway": [value]}, frozenset(configured))


def test_an_unknown_gateway_is_answered_with_the_configured_ones() -> None:
    assert unknown_gateway_error("plant-z", {"plant-b", "plant-a"}) == (
        "gateway: unknown gateway 'plant-z' (configured: plant-a, plant-b)")
    assert unknown_gateway_error("plant-z", set()) == (
        "gateway: unknown gateway 'plant-z' (none configured)")


def test_a_fleet_of_a_thousand_gateways_makes_a_short_error() -> None:
    fleet = {f"plant-{i:04d}" for i in range(1000)}
    error = unknown_gateway_error("plant-z", fleet)
    assert error.startswith("gateway: unknown gateway 'plant-z' (configured: plant-0000, "
                            "plant-0001, ")
    assert error.endswith(", plant-0019 and 980 more)")
    long_names = {"x" * 10_000 + str(i) for i in range(1000)}
    assert len(unknown_gateway_error("plant-z", long_names)) < 2000


@pytest.mark.parametrize("value", ["a" * 100_000, "evil\r\nX-Forged: 1\x1b[31m", "\u202eabc"])
def test_the_clients_value_is_echoed_escaped_and_cut(value: str) -> None:
    for error in (refusal({"gateway": [value]}), refusal({"kind": [value]}),
                  refusal({value: ["1"]})):
        assert len(error) < 300
        assert error.isprintable(), error
        assert value not in error
    assert refusal({"user": ["1"]}).startswith("user: unknown parameter")  # a plain word


@pytest.mark.parametrize("pattern", ["(" + "a" * 999, "(\x1b\r\nX-Forged: 1", "[\u202eabc"])
def test_a_bad_patterns_text_is_echoed_escaped_and_cut(pattern: str) -> None:
    """The regular expression library's error repeats the pattern from where it went wrong;
    that text is the client's, so an error shows it as it shows the client's other values."""
    error = refusal({"username": [pattern]})
    assert error.startswith("username: invalid regular expression: missing ")
    assert len(error) < 300
    assert error.isprintable(), error
    assert pattern[1:] not in error


def test_a_plain_bad_patterns_text_is_shown_as_it_is() -> None:
    assert refusal({"username": ["(a"]}) == (
        "username: invalid regular expression: missing ): (a")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
def test_patterns_a_client_sends_cannot_pin_the_exporters_memory() -> None:
    """RE2 bounds a pattern's program by its `max_mem` (8 MiB by default), and the re2
    module keeps the last 128 compiled patterns, so a fourteen-character pattern such as
    `(\\pL|\\pN){300}` costs a quarter of a second to compile and about 4 MB kept after the
    request. A client sending distinct ones to /sessions (two a request, no credentials by
    default) made the exporter hold hundreds of megabytes: 480 MB after 130 of them."""
    before = resident_bytes()
    for n in range(24):
        with contextlib.suppress(BadQuery):  # refusing a pattern too large is an answer too
            full_matcher(r"(\pL|\pN){300}" + "z" * n, "username")("operator1")
    grown = (resident_bytes() - before) >> 20
    assert grown < 24  # MiB: a megabyte a pattern at the very most
