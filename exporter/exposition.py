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
from dataclasses import dataclass, field
from functools import partial

from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CONTENT_TYPE_PLAIN_1_0_0,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics
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
from exporter.negotiation import Preference, preferences
from exporter.poller import GatewayStatus

Encoder = Callable[[Collector], bytes]
_EOF = b"# EOF\n"


@dataclass(frozen=True, slots=True)
class Format:
    """One way the exporter renders `/metrics`, with the Content-Type it sends for it.

    Only renderings that differ get a format, so the set is small and fixed and no client can
    make the caches below grow. This exporter's names are all valid legacy names, so the
    `underscores` and `allow-utf-8` escapings leave them alone and the Prometheus text format
    1.0.0 renders them exactly as 0.0.4 does; `dots` and `values` do rewrite them (`_` becomes
    `__`, or `U__` and hex). The installed prometheus_client renders OpenMetrics 2.0.0 as
    1.0.0 when there are no native histograms, and this exporter has none.
    tests/test_exposition.py holds the library to all of this.
    """

    name: str
    content_type: str
    encoder: Encoder = field(compare=False)
    closing: bytes = b""  # after the last family


TEXT = Format("text", CONTENT_TYPE_PLAIN_0_0_4, generate_latest)
OPENMETRICS = Format("openmetrics", openmetrics.CONTENT_TYPE_LATEST,
                     openmetrics.generate_latest, _EOF)
# Escapings that rewrite legacy names: (media type, escaping) to its format.
ESCAPED = {
    **{("text/plain", e): Format(f"text, {e} escaping",
                                 f"{CONTENT_TYPE_PLAIN_1_0_0}; escaping={e}",
                                 partial(generate_latest, escaping=e))
       for e in (openmetrics.DOTS, openmetrics.VALUES)},
    **{("application/openmetrics-text", e): Format(
        f"openmetrics, {e} escaping", f"{openmetrics.CONTENT_TYPE_LATEST}; escaping={e}",
        partial(openmetrics.generate_latest, escaping=e), _EOF)
       for e in (openmetrics.DOTS, openmetrics.VALUES)},
}
FORMATS = (TEXT, OPENMETRICS, *ESCAPED.values())


_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _version(text: str | None) -> tuple[int, ...] | None:
    """`1.0.0` as (1, 0, 0), absent as (); None when not a version. ASCII digits only:
    `str.isdigit` is also true for `²`, which `int` refuses (a 500 for that header)."""
    if text is None:
        return ()
    text = text.strip()
    return tuple(map(int, text.split("."))) if _VERSION.fullmatch(text) else None


def _format_for(media: Preference) -> Format | None:
    """The format for one media range, None if the exporter does not render it.

    As in prometheus_client: OpenMetrics needs no version or 1.0.0 and up; an escaping is
    honoured only where the version says the client knows of escapings (text 1.0.0 and up).
    """
    version = _version(media.params.get("version"))
    if version is None or media.value not in ("text/plain", "application/openmetrics-text"):
        return None
    if media.value == "application/openmetrics-text" and version and version < (1,):
        return None
    escaped = ESCAPED.get((media.value, media.params.get("escaping", "")))
    if escaped is not None and version >= (1,):
        return escaped
    return OPENMETRICS if media.value == "application/openmetrics-text" else TEXT


def negotiate(accept: str) -> Format:
    """The format for an `Accept` header: the most preferred media range the exporter renders,
    else the text format. Never an error: whatever the client sends, one of `FORMATS`."""
    for media in preferences(accept):
        chosen = _format_for(media)
        if chosen is not None:
            return chosen
    return TEXT


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


class _Fragments:
    """One gateway's (sample lines, trailing blocks) per family, for fresh and for stale
    session data.

    The stale lines are rendered when first needed: most statuses are replaced by the next
    poll before their data goes stale, and rendering is most of what a changed body costs."""

    def __init__(self, status: GatewayStatus, encoder: Encoder, with_username: bool) -> None:
        self.status = status
        self._encoder = encoder
        self._with_username = with_username
        fresh_at = status.last_success if status.last_success is not None else math.inf
        self.fresh = self._lines(fresh_at)
        self._stale: tuple[tuple[bytes, bytes], ...] | None = None

    @property
    def stale(self) -> tuple[tuple[bytes, bytes], ...]:
        if self._stale is None:
            self._stale = self._lines(math.inf)
        return self._stale

    def _lines(self, now: float) -> tuple[tuple[bytes, bytes], ...]:
        families = (session_families([self.status], now, self._with_username)
                    + health_families([self.status]) + lifecycle_families([self.status], now))
        return tuple(_samples(text) for text in _render(families, self._encoder))


@dataclass(slots=True)
class _Body:
    """One format's body: the statuses it was made from, plain, and gzip'd once asked for."""

    key: tuple[object, ...]
    plain: bytes
    gzipped: bytes | None = None

    def encoded(self, compress: bool) -> bytes:
        if not compress:
            return self.plain
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.plain, compresslevel=6, mtime=0)
        return self.gzipped


class Exposition:
    """Cached `/metrics` bodies for one exporter: at most one per `Format`, each in plain and
    gzip form. Every cache here is keyed by a `Format` (and configured gateways' names and
    poll intervals), never by anything a client sent, so what a client sends cannot make
    them grow."""

    def __init__(self, with_username: bool = True) -> None:
        self._with_username = with_username
        self._fragments: dict[tuple[str, Format], _Fragments] = {}
        self._bodies: dict[Format, _Body] = {}
        self._headers: dict[tuple[Format, tuple[float, ...]], tuple[list[bytes], bytes]] = {}

    @property
    def cached_bodies(self) -> int:
        """How many bodies are held (one per format asked for so far, at most len(FORMATS))."""
        return len(self._bodies)

    def _static(self, fmt: Format, intervals: tuple[float, ...]) -> tuple[list[bytes], bytes]:
        """Per format and set of poll intervals (the lifecycle HELP texts name them): every
        family's header lines, and the build info family whole."""
        cached = self._headers.get((fmt, intervals))
        if cached is None:
            empty = (session_families([], 0.0, self._with_username) + health_families([])
                     + lifecycle_families([], 0.0, intervals))
            rendered = _render([*empty, build_info()], fmt.encoder)
            cached = self._headers[(fmt, intervals)] = (
                [_split(text)[0] for text in rendered[:-1]], rendered[-1])
        return cached

    def prepare(self, status: GatewayStatus) -> None:
        """Render a new status's lines in every format served so far, before it is
        published: then a scrape only assembles. Called from the poller's worker thread; a
        scrape that still finds a status unrendered renders it itself."""
        for fmt in list(self._bodies):
            self._fragments_for(status, fmt)

    def _fragments_for(self, status: GatewayStatus, fmt: Format) -> _Fragments:
        key = (status.gateway.name, fmt)
        cached = self._fragments.get(key)
        if cached is None or cached.status is not status:
            cached = self._fragments[key] = _Fragments(status, fmt.encoder,
                                                       self._with_username)
        return cached

    def _assemble(self, statuses: Sequence[GatewayStatus], fresh: Sequence[bool],
                  fmt: Format) -> bytes:
        headers, info = self._static(fmt, poll_intervals(statuses))
        chosen = [(self._fragments_for(s, fmt), f) for s, f in zip(statuses, fresh, strict=True)]
        parts: list[bytes] = []
        for index, header in enumerate(headers):
            parts.append(header)
            rendered = [f.fresh[index] if fresh else f.stale[index] for f, fresh in chosen]
            parts.extend(samples for samples, _ in rendered)
            if any(trailer for _, trailer in rendered):
                parts.extend(_merge_trailers(trailer for _, trailer in rendered))
        parts.extend(_render(exporter_families(statuses), fmt.encoder))  # two samples: cheap
        parts += (info, fmt.closing)
        return b"".join(parts)

    def body(self, statuses: Sequence[GatewayStatus], now: float, fmt: Format,
             compress: bool) -> bytes:
        # The statuses are immutable and replaced on every poll: identity says "changed".
        fresh = [s.is_fresh(now) for s in statuses]
        key = (*(id(s) for s in statuses), *fresh)
        cached = self._bodies.get(fmt)
        if cached is None or cached.key != key:
            # Statuses are held through the fragments, so an id in `key` cannot be reused
            # by another status while this body is cached.
            cached = self._bodies[fmt] = _Body(key, self._assemble(statuses, fresh, fmt))
        return cached.encoded(compress)
