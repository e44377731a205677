"""Hypothesis strategies for what a client of the exporter controls in its headers."""

from __future__ import annotations

from hypothesis import strategies as st


def _as_sent(texts: list[str]) -> list[str]:
    """Text whose UTF-8 bytes, sent as latin-1 header text (all http.client sends), the
    server reads back as `texts`: digits to `str.isdigit` that `int` refuses, or accepts."""
    return [text.encode().decode("latin-1") for text in texts]


latin = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                              exclude_characters="\x7f"), max_size=40)
versions = st.sampled_from(["1.0.0", "0.0.4", "2.0.0", "0.0.1", "+1.0.5", " 1.0.5", "abc",
                            "1..0", "", "1.0.0.0.0", "99999999999999999999", "-1",
                            *_as_sent(["\u00b2", "1.\u0661"])]) | latin
params = st.tuples(st.sampled_from(["version", "escaping", "q", "charset", "Q", " version"]),
                   st.sampled_from(["dots", "values", "underscores", "allow-utf-8", "0", "0.5",
                                    "1", "nan", "1e3", "-0"]) | versions)


def media_list(types: list[str]) -> st.SearchStrategy[str]:
    one = st.tuples(st.sampled_from(types) | latin, st.lists(params, max_size=4)).map(
        lambda t: ";".join([t[0], *(f"{k}={v}" for k, v in t[1])]))
    return st.lists(one, max_size=5).map(",".join) | latin


accepts = media_list(["application/openmetrics-text", "text/plain", "*/*", "application/json",
                      "Application/OpenMetrics-Text", "text/*"])
encodings = media_list(["gzip", "x-gzip", "*", "identity", "deflate", "br", "GZIP"])
