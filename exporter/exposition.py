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
    """(the HELP and TYPE lines, the sample lines) of one rendered family."""
    first = rendered.index(b"\n") + 1
    second = rendered.index(b"\n", first) + 1
    return rendered[:second], rendered[second:]


@dataclass(frozen=True, slots=True)
class _Fragments:
    """One gateway's sample lines per family, for fresh and for stale session data."""

    status: GatewayStatus
    fresh: tuple[bytes, ...]
    stale: tuple[bytes, ...]


def _gateway_fragments(status: GatewayStatus, encoder: Encoder, with_username: bool
                       ) -> _Fragments:
    def lines(now: float) -> tuple[bytes, ...]:
        families = session_families([status], now, with_username) + health_families([status])
        return tuple(_split(text)[1] for text in _render(families, encoder))

    fresh_at = status.last_success if status.last_success is not None else math.inf
    return _Fragments(status, lines(fresh_at), lines(math.inf))


class Exposition:
    """Cached `/metrics` bodies for one exporter; keyed by content type and compression."""

    def __init__(self, with_username: bool = True) -> None:
        self._with_username = with_username
        self._fragments: dict[tuple[str, str], _Fragments] = {}
        self._bodies: dict[tuple[str, bool], tuple[tuple[object, ...], bytes]] = {}
        self._headers: dict[str, tuple[list[bytes], bytes]] = {}

    def _static(self, encoder: Encoder, content_type: str) -> tuple[list[bytes], bytes]:
        """Per content type: every family's header lines, and the build info family whole."""
        cached = self._headers.get(content_type)
        if cached is None:
            empty = session_families([], 0.0, self._with_username) + health_families([])
            rendered = _render([*empty, build_info()], encoder)
            cached = self._headers[content_type] = (
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
        headers, info = self._static(encoder, content_type)
        chosen = [(self._fragments_for(s, encoder, content_type), f)
                  for s, f in zip(statuses, fresh, strict=True)]
        parts: list[bytes] = []
        for index, header in enumerate(headers):
            parts.append(header)
            parts.extend(f.fresh[index] if fresh else f.stale[index] for f, fresh in chosen)
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
