from __future__ import annotations

import pytest

from exporter.web.negotiation import accepts_gzip, preferences


@pytest.mark.parametrize(("header", "expected"), [
    ("gzip", True), ("GZIP", True), ("x-gzip", True), ("deflate, gzip;q=0.5", True),
    ("*", True), ("br, *;q=0.1", True), ("gzip;q=1.000", True),
    ("", False), ("identity", False), ("deflate, br", False),
    ("gzip;q=0", False), ("gzip; q=0.000", False), ("gzip;q=0, *", False),
    ("*;q=0", False), ("*, gzip;q=0", False), ("identity;q=1, *;q=0", False),
    ("gzip;q=abc", False), ("gzip;q=nan", False), ("gzip;q=2", False), ("gzip;q=-1", False),
    (",,;;==", False), ("gzip;;q", True),
])
def test_accepts_gzip_honours_q_values(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_preferences_order_by_q_then_position() -> None:
    got = preferences("a;q=0.5, b, c;q=0.9, d;q=0, e;q=0.9;x=1, f;q=bogus")
    assert [p.value for p in got] == ["b", "c", "e", "a"]
    assert got[2].params == {"x": "1"}
