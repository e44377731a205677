"""HTTP content negotiation: `Accept` and `Accept-Encoding` lists with their q-values.

Both headers come from whoever can reach the port, so they are read in one place, by rules
that cannot fail: an element that does not parse is ignored, never an error. q-values follow
RFC 9110 section 12.4.2 (`q=0` means "not acceptable"; at most three decimals, 0 to 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")


@dataclass(frozen=True, slots=True)
class Preference:
    """One element of a header list: `text/plain; version=0.0.4; q=0.5`."""

    value: str  # lower-cased: media types and content codings are case-insensitive
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0


def _parse_element(element: str) -> Preference | None:
    value, *raw_params = element.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, sep, param = raw.partition("=")
        if sep:
            params[key.strip().lower()] = param.strip().strip('"')
    q = params.pop("q", "1")
    if not _QVALUE.fullmatch(q):
        return None  # a q-value that does not parse says nothing we can rely on
    value = value.strip().lower()
    return Preference(value, params, float(q)) if value else None


def _elements(header: str) -> list[Preference]:
    parsed = (_parse_element(element) for element in header.split(","))
    return [p for p in parsed if p is not None]


def preferences(header: str) -> list[Preference]:
    """The acceptable elements of a header list, most preferred first (stable for ties)."""
    return sorted((p for p in _elements(header) if p.q > 0), key=lambda p: -p.q)


def accepts_gzip(accept_encoding: str) -> bool:
    """True if the client accepts gzip: named (as `gzip` or `x-gzip`) with q above 0, or, when
    not named at all, covered by `*` with q above 0. `gzip;q=0` refuses it."""
    elements = _elements(accept_encoding)
    named = [p.q for p in elements if p.value in ("gzip", "x-gzip")]
    if named:
        return max(named) > 0
    return any(p.value == "*" and p.q > 0 for p in elements)
