"""The `/metrics` body, rendered once per poll and served from cache to every scrape.

A scrape of a busy exporter must not re-render thousands of series: with 200 clients that work
saturates the event loop and polls fall behind. So each gateway's samples are rendered once
after each of its polls (by prometheus_client's own encoder, one family at a time, so escaping
and number formatting are exactly the library's), and the whole body, plain or gzip'd, is
assembled once per change and reused until the next poll or a gateway going stale.

The output is byte for byte what `generate_latest` makes from `SessionCollector` followed by
the runtime collectors (`process_*`, `python_*`); a test holds the two to that.
"""

from __future__ import annotations

import math
import operator
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CONTENT_TYPE_PLAIN_1_0_0,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.config import GatewayConfig
from exporter.polling.poller import GatewayStatus, Work
from exporter.reload import ReloadStatus
from exporter.web.collector import (
    Metric,
    build_info,
    exporter_families,
    health_families,
    lifecycle_families,
    poll_intervals,
    reload_families,
    session_families,
)
from exporter.web.negotiation import Preference, preferences

Encoder = Callable[[Collector], bytes]
_EOF = b"# EOF\n"
# process_cpu_seconds_total and friends change all the time; rendering them for every scrape
# would cost each scrape a /proc read and an encoding, so they are at most this old.
RUNTIME_REFRESH_SECONDS = 1.0


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
_BY_NAME = {fmt.name: fmt for fmt in FORMATS}


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


Lines = tuple[tuple[bytes, bytes], ...]  # per family: (sample lines, trailing blocks)


def _lines(families: Sequence[Metric], encoder: Encoder) -> Lines:
    return tuple(_samples(text) for text in _render(families, encoder))


def _digested_families(status: GatewayStatus, now: float, with_username: bool) -> list[Metric]:
    """The families a status's digest decides: sessions, then the lifecycle's."""
    return (session_families([status], now, with_username)
            + lifecycle_families([status], now))


# The session families come before the health families in the body, the lifecycle families
# after them.
_SESSION_FAMILIES = len(session_families([], 0.0))
# The lines of a gateway not polled successfully yet: no samples in any digested family.
_NO_DIGEST: Lines = ((b"", b""),) * len(_digested_families(GatewayStatus(
    GatewayConfig(name="", url="")), math.inf, True))


def _fresh_at(status: GatewayStatus) -> float:
    """A time at which the status's session data is fresh (never, before a first success)."""
    return status.last_success if status.last_success is not None else math.inf


@dataclass(frozen=True, slots=True)
class Rendered:
    """A new status's digested families' sample lines, rendered by the worker with the
    digest, in the formats served when its poll started (by format name)."""

    with_username: bool
    lines: Mapping[str, Lines]


def render_digested(formats: tuple[str, ...], with_username: bool,
                    status: GatewayStatus) -> Rendered:
    """Pure, so that it runs in a worker process: the work `Exposition.work()` names."""
    return Rendered(with_username, {
        name: _lines(_digested_families(status, _fresh_at(status), with_username),
                     _BY_NAME[name].encoder)
        for name in formats})


class _Fragments:
    """One gateway's (sample lines, trailing blocks) per family, for fresh and for stale
    session data.

    The lines of the families its digest decides come from the worker (`digested`), or from
    the fragments of an earlier status of the same digest (a failed poll changes only the
    health families), or are rendered here. The stale ones are rendered when first needed:
    most statuses are replaced by the next poll before their data goes stale."""

    def __init__(self, status: GatewayStatus, encoder: Encoder, with_username: bool,
                 digested: Lines | None = None, earlier: _Fragments | None = None) -> None:
        self.status = status
        self._encoder = encoder
        self._with_username = with_username
        same = earlier is not None and _same_digest(earlier.status, status)
        self._digested: dict[bool, Lines] = dict(earlier._digested) if same else {}
        if digested is not None:
            self._digested[True] = digested
        self._health = _lines(health_families([status]), encoder)
        self.fresh = self._join(True)
        self._stale: Lines | None = None

    @property
    def stale(self) -> Lines:
        if self._stale is None:
            self._stale = self._join(False)
        return self._stale

    def _join(self, fresh: bool) -> Lines:
        digested = self._digested.get(fresh)
        if digested is None and self.status.last_success is None:
            digested = _NO_DIGEST  # nothing digested yet: nothing to render
        if digested is None:
            now = _fresh_at(self.status) if fresh else math.inf
            digested = self._digested[fresh] = _lines(
                _digested_families(self.status, now, self._with_username), self._encoder)
        return digested[:_SESSION_FAMILIES] + self._health + digested[_SESSION_FAMILIES:]


def _same_digest(one: GatewayStatus, other: GatewayStatus) -> bool:
    """Whether two statuses hold the same digest (a failed poll keeps the last one)."""
    return (one.aggregates is other.aggregates and one.lifecycle is other.lifecycle
            and one.sent_bytes is other.sent_bytes and one.last_success == other.last_success
            and one.gateway == other.gateway)


def runtime_collectors() -> CollectorRegistry:
    """prometheus_client's own `process_*`, `python_info` and `python_gc_*` collectors, in a
    registry of their own (the library's global one is not used by this exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _same(cached: Sequence[GatewayStatus], statuses: Sequence[GatewayStatus]) -> bool:
    """The statuses are immutable and replaced on every poll: identity says "unchanged"."""
    return len(cached) == len(statuses) and all(map(operator.is_, cached, statuses))


@dataclass(frozen=True, slots=True)
class _Main:
    """Everything but the runtime families, for one format, and what it was made of."""

    statuses: tuple[GatewayStatus, ...]
    fresh: tuple[bool, ...]
    reload: ReloadStatus
    text: bytes


_NEVER_RELOADED = ReloadStatus()


class Exposition:
    """Cached `/metrics` bodies for one exporter: at most one per `Format`, each in plain and
    gzip form. Every cache here is keyed by a `Format` (and configured gateways' names and
    poll intervals), never by anything a client sent, so what a client sends cannot make
    them grow.

    A body is the gateways' part, rebuilt when a status, a freshness or the reload status
    changes, followed by the runtime part (`process_*`, `python_*`), which changes on every
    scrape and is therefore rendered at most once a second. Gzip'd, the gateways' part is
    compressed once and the compressor's state kept, so a new runtime part costs only its own
    compression.
    """

    def __init__(self, with_username: bool = True, runtime: Collector | None = None) -> None:
        self._with_username = with_username
        self._runtime = runtime_collectors() if runtime is None else runtime
        self._clear()

    def _clear(self) -> None:
        self._fragments: dict[tuple[str, Format], _Fragments] = {}
        self._headers: dict[tuple[Format, tuple[float, ...]], tuple[list[bytes], bytes]] = {}
        self._mains: dict[Format, _Main] = {}
        self._runtime_parts: dict[Format, tuple[float, bytes]] = {}
        self._gzip_heads: dict[Format, tuple[bytes, bytes, Any]] = {}
        self._bodies: dict[tuple[Format, bool], tuple[bytes, bytes, bytes]] = {}

    def configure(self, with_username: bool) -> None:
        """After a reload. A different username policy: nothing cached is right any more.
        Otherwise only the headers, which name the poll intervals, are made again, so
        reloads with other intervals do not pile up headers."""
        if with_username != self._with_username:
            self._with_username = with_username
            self._clear()
        else:
            self._headers.clear()

    @property
    def cached_bodies(self) -> int:
        """How many bodies are held (one per format asked for so far, at most len(FORMATS))."""
        return len(self._mains)

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

    def work(self) -> Work | None:
        """Rendering a new status's digested families in every format served so far, done
        by the poller's workers before the status is published (`Prepare`): then a scrape
        only assembles. A scrape that finds a status unrendered renders it itself."""
        if not self._mains:
            return None
        return partial(render_digested, tuple(fmt.name for fmt in self._mains),
                       self._with_username)

    def accept(self, status: GatewayStatus, prepared: object) -> None:
        """The worker's rendering of a new status, kept unless the username policy changed
        while it was made."""
        if not isinstance(prepared, Rendered) or prepared.with_username != self._with_username:
            return
        for name, lines in prepared.lines.items():
            fmt = _BY_NAME[name]
            self._fragments[(status.gateway.name, fmt)] = _Fragments(
                status, fmt.encoder, self._with_username, digested=lines)

    def _fragments_for(self, status: GatewayStatus, fmt: Format) -> _Fragments:
        key = (status.gateway.name, fmt)
        cached = self._fragments.get(key)
        if cached is None or cached.status is not status:
            cached = self._fragments[key] = _Fragments(status, fmt.encoder,
                                                       self._with_username, earlier=cached)
        return cached

    def _assemble(self, statuses: Sequence[GatewayStatus], fresh: Sequence[bool],
                  fmt: Format, reload: ReloadStatus) -> bytes:
        headers, info = self._static(fmt, poll_intervals(statuses))
        chosen = [(self._fragments_for(s, fmt), f) for s, f in zip(statuses, fresh, strict=True)]
        parts: list[bytes] = []
        for index, header in enumerate(headers):
            parts.append(header)
            rendered = [f.fresh[index] if fresh else f.stale[index] for f, fresh in chosen]
            parts.extend(samples for samples, _ in rendered)
            if any(trailer for _, trailer in rendered):
                parts.extend(_merge_trailers(trailer for _, trailer in rendered))
        parts.extend(_render([*exporter_families(statuses), *reload_families(reload)],
                             fmt.encoder))  # a handful of samples: cheap
        parts.append(info)
        return b"".join(parts)

    def _main(self, statuses: Sequence[GatewayStatus], now: float, fmt: Format,
              reload: ReloadStatus) -> bytes:
        fresh = tuple(s.is_fresh(now) for s in statuses)
        cached = self._mains.get(fmt)
        # A reload status, too, is replaced whole on every attempt.
        if cached is not None and cached.fresh == fresh and cached.reload is reload \
                and _same(cached.statuses, statuses):
            return cached.text
        text = self._assemble(statuses, fresh, fmt, reload)
        self._mains[fmt] = _Main(tuple(statuses), fresh, reload, text)
        self._forget_removed({s.gateway.name for s in statuses})
        return text

    def _forget_removed(self, names: set[str]) -> None:
        """Gateways a reload removed must not keep their rendered samples alive."""
        for key in [key for key in self._fragments if key[0] not in names]:
            del self._fragments[key]

    def _runtime_part(self, fmt: Format, now: float) -> bytes:
        cached = self._runtime_parts.get(fmt)
        if cached is None or not 0 <= now - cached[0] < RUNTIME_REFRESH_SECONDS:
            text = fmt.encoder(self._runtime)
            cached = (now, text[:-len(_EOF)] if text.endswith(_EOF) else text)
            self._runtime_parts[fmt] = cached
        return cached[1]

    def _gzip(self, fmt: Format, main: bytes, tail: bytes) -> bytes:
        """One gzip member: `main` compressed once per change, then `tail` per call."""
        cached = self._gzip_heads.get(fmt)
        if cached is None or cached[0] is not main:
            compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            head = compressor.compress(main) + compressor.flush(zlib.Z_SYNC_FLUSH)
            cached = self._gzip_heads[fmt] = (main, head, compressor)
        finish = cached[2].copy()
        return cached[1] + finish.compress(tail) + finish.flush()

    def body(self, statuses: Sequence[GatewayStatus], now: float, fmt: Format,
             compress: bool, reload: ReloadStatus | None = None) -> bytes:
        main = self._main(statuses, now, fmt, reload or _NEVER_RELOADED)
        runtime = self._runtime_part(fmt, now)
        cached = self._bodies.get((fmt, compress))
        if cached is not None and cached[0] is main and cached[1] is runtime:
            return cached[2]
        tail = runtime + fmt.closing
        body = self._gzip(fmt, main, tail) if compress else main + tail
        self._bodies[(fmt, compress)] = (main, runtime, body)
        return body
