"""The `/metrics` body, rendered once per poll and served from cache to every scrape.

A scrape of a busy exporter must not re-render thousands of series: with 200 clients that work
saturates the event loop and polls fall behind. So each gateway's samples are rendered once
after each of its polls (by prometheus_client's own encoder, one family at a time, so escaping
and number formatting are exactly the library's), and the whole body, plain or gzip'd, is
assembled once per change and reused until the next poll or a gateway going stale.

The output is byte for byte what `generate_latest` makes from `SessionCollector`; a test holds
the two to that.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.collector import (
    Metric,
    build_info,
    exporter_families,
    health_families,
    lifecycle_families,
    poll_intervals,
    session_families,
)
from exporter.poller import GatewayStatus

Encoder = Callable[[Collector], bytes]
_EOF = b"# EOF\n"
_OPENMETRICS = re.compile(
    r"^application/openmetrics-text; version=(\d+)[^;]*; charset=utf-8; escaping=([\w-]+)$")


def negotiate(accept: str) -> tuple[Encoder, str]:
    """prometheus_client's content negotiation, with one change: the OpenMetrics version the
    client asked for is reduced to one the library renders differently (below 2.0.0, or not).

    The content type keys the caches below, and the library echoes any version it is sent
    (`version=1.0.7`, `1.0.8`, ...): unreduced, every made-up version would render and keep
    every gateway's samples once more.
    """
    encoder, content_type = choose_encoder(accept)
    match = _OPENMETRICS.match(content_type)
    if match:
        version = "2.0.0" if int(match.group(1)) >= 2 else "1.0.0"
        encoder, content_type = choose_encoder(
            f"application/openmetrics-text; version={version}; escaping={match.group(2)}")
    return encoder, content_type


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _render(families: Sequence[Metric], encoder: Encoder) -> list[bytes]:
    """Each family's rendering, header lines included, without OpenMetrics' closing line."""
    out = []
    for family in families:
        text = encoder(_Families([family]))
        out.append(text[:-len(_EOF)] if text.endswith(_EOF) else text)
    return out


def _split(rendered: bytes) -> tuple[bytes, bytes]:
    """(the HELP and TYPE lines, the rest) of one rendered family."""
    first = rendered.index(b"\n") + 1
    second = rendered.index(b"\n", first) + 1
    return rendered[:second], rendered[second:]


# A label value cannot hold a raw newline, so this only ever starts a header.
_NEXT_HELP = b"\n# HELP "


def _samples(rendered: bytes) -> tuple[bytes, bytes]:
    """(the sample lines, the trailing blocks) of one rendered family.

    The trailing blocks are the text format's rendering of a gauge histogram's `_gcount`
    and `_gsum` samples: gauges of their own, with their own HELP and TYPE, after the
    buckets, and only when there are samples. Other families have none."""
    rest = _split(rendered)[1]
    cut = rest.find(_NEXT_HELP)
    return (rest, b"") if cut < 0 else (rest[:cut + 1], rest[cut + 1:])


def _merge_trailers(trailers: Iterable[bytes]) -> list[bytes]:
    """Several gateways' trailing blocks as one block per header, as prometheus_client
    renders them from all gateways at once."""
    blocks: dict[bytes, list[bytes]] = {}
    for trailer in trailers:
        for block in trailer.replace(_NEXT_HELP, b"\n\0# HELP ").split(b"\0"):
            if block:
                header, lines = _split(block)
                blocks.setdefault(header, []).append(lines)
    return [part for header, lines in blocks.items() for part in (header, *lines)]


@dataclass(frozen=True, slots=True)
class _Fragments:
    """One gateway's (sample lines, trailing blocks) per family, for fresh and for stale
    session data."""

    status: GatewayStatus
    fresh: tuple[tuple[bytes, bytes], ...]
    stale: tuple[tuple[bytes, bytes], ...]


def _gateway_fragments(status: GatewayStatus, encoder: Encoder, with_username: bool
                       ) -> _Fragments:
    def lines(now: float) -> tuple[tuple[bytes, bytes], ...]:
        families = (session_families([status], now, with_username) + health_families([status])
                    + lifecycle_families([status], now))
        return tuple(_samples(text) for text in _render(families, encoder))

    fresh_at = status.last_success if status.last_success is not None else math.inf
    return _Fragments(status, lines(fresh_at), lines(math.inf))


class Exposition:
    """Cached `/metrics` bodies for one exporter; keyed by content type and compression."""

    def __init__(self, with_username: bool = True) -> None:
        self._with_username = with_username
        self._fragments: dict[tuple[str, str], _Fragments] = {}
        self._bodies: dict[tuple[str, bool], tuple[tuple[object, ...], bytes]] = {}
        self._headers: dict[tuple[str, tuple[float, ...]], tuple[list[bytes], bytes]] = {}

    def _static(self, encoder: Encoder, content_type: str, intervals: tuple[float, ...]
                ) -> tuple[list[bytes], bytes]:
        """Per content type and set of poll intervals (the lifecycle HELP texts name them):
        every family's header lines, and the build info family whole."""
        cached = self._headers.get((content_type, intervals))
        if cached is None:
            empty = (session_families([], 0.0, self._with_username) + health_families([])
                     + lifecycle_families([], 0.0, intervals))
            rendered = _render([*empty, build_info()], encoder)
            cached = self._headers[(content_type, intervals)] = (
                [_split(text)[0] for text in rendered[:-1]], rendered[-1])
        return cached

    def _fragments_for(self, status: GatewayStatus, encoder: Encoder,
                       content_type: str) -> _Fragments:
        key = (status.gateway.name, content_type)
        cached = self._fragments.get(key)
        if cached is None or cached.status is not status:
            cached = self._fragments[key] = _gateway_fragments(status, encoder,
                                                               self._with_username)
        return cached

    def body(self, statuses: Sequence[GatewayStatus], now: float, encoder: Encoder,
             content_type: str, compress: bool) -> bytes:
        # The statuses are immutable and replaced on every poll: identity says "changed".
        fresh = [s.is_fresh(now) for s in statuses]
        key = (*(id(s) for s in statuses), *fresh)
        cached = self._bodies.get((content_type, compress))
        if cached is not None and cached[0] == key:
            return cached[1]
        headers, info = self._static(encoder, content_type, poll_intervals(statuses))
        chosen = [(self._fragments_for(s, encoder, content_type), f)
                  for s, f in zip(statuses, fresh, strict=True)]
        parts: list[bytes] = []
        for index, header in enumerate(headers):
            parts.append(header)
            rendered = [f.fresh[index] if fresh else f.stale[index] for f, fresh in chosen]
            parts.extend(samples for samples, _ in rendered)
            if any(trailer for _, trailer in rendered):
                parts.extend(_merge_trailers(trailer for _, trailer in rendered))
        parts.extend(_render(exporter_families(statuses), encoder))  # two samples: cheap
        parts.append(info)
        if content_type.startswith("application/openmetrics-text"):
            parts.append(_EOF)
        body = b"".join(parts)
        if compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        self._bodies[(content_type, compress)] = (key, body)
        # Statuses are held through the fragments, so an id in `key` cannot be reused
        # by another status while this body is cached.
        return body
