"""One task per gateway: poll on a fixed schedule, keep the last good data, report health.

Readers (the collector, `/sessions`, the landing page) never call a gateway. They read
`GatewayPoller.status`, an immutable `GatewayStatus` that is replaced whole after every poll,
so a reader always sees one consistent poll and never a half-updated one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol, TypeVar

from exporter.clock import Clock
from exporter.config import DEFAULT_MAX_PROJECTS, GatewayConfig
from exporter.digest.aggregate import CAPPED, EMPTY, Aggregates, ScopeKey
from exporter.digest.budget import SeriesBudget
from exporter.digest.lifecycle import NOTHING_YET, GatewayLifecycle
from exporter.digest.poll import Digest, DigestSettings, digest
from exporter.digest.privacy import Privacy
from exporter.digest.sent_bytes import SentBytes
from exporter.model import SessionIndex
from exporter.polling.workers import DigestTimeout, WorkerLost, Workers
from exporter.sources import Decode, Reason, Source, SourceError

log = logging.getLogger(__name__)

# The first poll of each gateway starts after a random part of this share of its interval, so
# gateways configured together do not all poll in the same instant.
JITTER_SHARE = 0.1
_NO_ERRORS: Mapping[Reason, int] = MappingProxyType(dict.fromkeys(Reason, 0))
# An unexpected exception's text is cut to this in the failure's detail.
DETAIL_MAX_CHARS = 200
R = TypeVar("R")


def decode_and_digest(decode: Decode, lifecycle: GatewayLifecycle, sent_bytes: SentBytes,
                      settings: DigestSettings, now: float) -> Digest:
    """The CPU-heavy part of a poll, a pure function of its arguments."""
    return digest(decode(), lifecycle, sent_bytes, settings, now)


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    gateway: GatewayConfig
    up: bool = False
    polls: int = 0
    last_success: float | None = None
    last_duration: float | None = None
    last_lag: float | None = None  # how late the last poll started against its schedule
    error: SourceError | None = None
    # From the last successful poll: the sessions /sessions serves, what the gateway said
    # about itself, and the numbers the metrics show.
    perspective: SessionIndex = field(default_factory=SessionIndex)
    clients: SessionIndex = field(default_factory=SessionIndex)
    reported_name: str | None = None
    version: str | None = None
    redundancy_role: str | None = None
    warnings: tuple[str, ...] = ()
    aggregates: Aggregates = EMPTY
    sent_bytes: Mapping[ScopeKey, float] = field(default_factory=dict)
    poll_errors: Mapping[Reason, int] = field(default_factory=lambda: _NO_ERRORS)
    invalid_sessions: int = 0
    folded_series: Mapping[str, int] = field(default_factory=dict)  # since start, per metric
    # Sessions started and ended up to the last successful poll, and what it held to compare
    # the next one with.
    lifecycle: GatewayLifecycle = NOTHING_YET

    def is_fresh(self, now: float) -> bool:
        """True while the last good data is younger than `stale_after`."""
        return self.last_success is not None and now - self.last_success <= self.gateway.stale_after

    def current(self, now: float) -> GatewayStatus | None:
        """This status while its session data may be shown, None once it has gone stale."""
        return self if self.is_fresh(now) else None


def digested(status: GatewayStatus, result: Digest) -> GatewayStatus:
    """`status` holding what a successful poll's digest gives readers."""
    return replace(
        status,
        perspective=result.perspective,
        clients=result.clients,
        reported_name=result.about.reported_name,
        version=result.about.version,
        redundancy_role=result.about.redundancy_role,
        warnings=result.about.warnings,
        aggregates=result.aggregates,
        sent_bytes=result.sent_bytes.totals,
        lifecycle=result.lifecycle,
    )


Work = Callable[[GatewayStatus], object]


class Prepare(Protocol):
    """Readers' work on each new status, done before it is published (rendering its samples
    for /metrics): `work()` is that work as things stand, a pure function of the status that
    runs where the digest runs (so it must pickle); `accept` takes its result, on the event
    loop."""

    def work(self) -> Work | None: ...

    def accept(self, status: GatewayStatus, prepared: object) -> None: ...


def poll_work(decode: Decode, lifecycle: GatewayLifecycle, sent_bytes: SentBytes,
              settings: DigestSettings, now: float, gateway: GatewayConfig,
              prepare: Work | None) -> tuple[Digest, object]:
    """A poll's CPU part, run by the workers: the digest, then readers' work on the status it
    makes (as far as the digest decides it: a status for `gateway`, up, fresh as of `now`)."""
    result = decode_and_digest(decode, lifecycle, sent_bytes, settings, now)
    if prepare is None:
        return result, None
    return result, prepare(digested(GatewayStatus(gateway, up=True, last_success=now), result))


class GatewayPoller:
    def __init__(self, gateway: GatewayConfig, source: Source, *, idle_after: float,
                 clock: Clock, rng: random.Random | None = None,
                 privacy: Privacy | None = None, max_series: int | SeriesBudget | None = None,
                 max_projects: int = DEFAULT_MAX_PROJECTS,
                 cpu: Workers | None = None,
                 prepare: Prepare | None = None) -> None:
        self.gateway = gateway
        # What the workers need to know of the gateway; not its token.
        self._for_workers = replace(gateway, token=None)
        self._source = source
        self._idle_after = idle_after
        self._username = (privacy or Privacy()).username
        self._max_series = max_series
        self._max_projects = max_projects
        # The worker thread or processes, shared by all gateways, for decoding and
        # aggregation (None: inline).
        self._cpu = cpu
        # Readers' work on a new status (rendering its samples), done by the workers before
        # the status is published.
        self._prepare = prepare
        self._clock = clock
        self._rng = rng or random.Random()
        self._sent_bytes = SentBytes()  # replaced after each successful poll
        self.status = GatewayStatus(gateway)

    def retune(self, *, idle_after: float, max_series: int | SeriesBudget | None,
               max_projects: int = DEFAULT_MAX_PROJECTS) -> None:
        """Settings a reload may change without a new poller; the next poll uses them."""
        self._idle_after = idle_after
        self._max_series = max_series
        self._max_projects = max_projects

    async def run(self) -> None:
        """Poll forever at a fixed rate; a poll that overruns skips the ticks it missed."""
        interval = self.gateway.poll_interval
        await self._clock.sleep(self._rng.uniform(0, interval * JITTER_SHARE))
        next_at = self._clock.monotonic()
        while True:
            await self.poll_once(lag=max(0.0, self._clock.monotonic() - next_at))
            next_at += interval
            now = self._clock.monotonic()
            if next_at <= now:
                next_at += math.ceil((now - next_at) / interval) * interval
                if next_at <= now:
                    next_at += interval
            await self._clock.sleep(next_at - now)

    async def poll_once(self, lag: float | None = None) -> GatewayStatus:
        started = self._clock.monotonic()
        self.status = replace(self.status, last_lag=lag)
        try:
            async with asyncio.timeout(self.gateway.timeout):
                decode = await self._source.fetch()
            work = self._prepare.work() if self._prepare is not None else None
            result, prepared = await self._in_worker(
                poll_work, decode, self.status.lifecycle, self._sent_bytes, self._settings(),
                self._clock.time(), self._for_workers, work)
            status = self._succeeded(result, self._clock.monotonic() - started)
            if self._prepare is not None and work is not None:
                self._prepare.accept(status, prepared)
            self.status = status
            return self.status
        except TimeoutError:
            error = SourceError(self.gateway.name, Reason.TIMEOUT,
                                f"poll took longer than {self.gateway.timeout:g}s")
        except DigestTimeout:
            error = SourceError(self.gateway.name, Reason.TIMEOUT, "digesting the answer took "
                                f"longer than {self.gateway.timeout:g}s")
        except WorkerLost as exc:
            error = SourceError(self.gateway.name, Reason.DECODE, exc.detail)
        except SourceError as exc:
            error = exc
        except Exception as exc:  # a bug must cost one poll, not the gateway's poll task
            error = self._unexpected(exc)
        self._failed(error, self._clock.monotonic() - started)
        return self.status

    def _unexpected(self, exc: Exception) -> SourceError:
        """An exception no source anticipated, as a failed poll: logged like any other failure
        (once per change of state, see `_failed`), its traceback only at debug level, so an
        answer that trips it on every poll does not flood the log."""
        log.debug("unexpected error while polling", exc_info=exc,
                  extra={"gateway": self.gateway.name})
        text = str(exc)
        text = text if len(text) <= DETAIL_MAX_CHARS else text[:DETAIL_MAX_CHARS] + "…"
        return SourceError(self.gateway.name, Reason.DECODE, f"unexpected {type(exc).__name__} "
                           f"while reading the answer{': ' + text if text else ''}")

    async def _in_worker(self, work: Callable[..., R], *arguments: object) -> R:
        """CPU-bound work off the event loop, in the workers (inline without them), bounded
        by the gateway's timeout where the workers can bound it (processes).

        Every digest goes there, small ones too: inline, a round of gateways answering at
        once would hold the loop for the whole round, and a scrape needs several passes of
        the loop."""
        if self._cpu is None:
            return work(*arguments)
        return await self._cpu.run(self.gateway.timeout, work, *arguments)

    def _settings(self) -> DigestSettings:
        return DigestSettings(self._idle_after, self.gateway.stale_after, self._username,
                              self._max_projects, self._caps())

    def _caps(self) -> int | dict[str, int] | None:
        """This poll's series caps: fixed, or this gateway's share of a fleet's budget."""
        if not isinstance(self._max_series, SeriesBudget):
            return self._max_series
        return {metric: self._max_series.limit(self.gateway.name, metric) for metric in CAPPED}

    def _succeeded(self, digest: Digest, duration: float) -> GatewayStatus:
        """The status after this successful poll; the caller publishes it."""
        previous, snapshot = self.status, digest.about
        self._sent_bytes = digest.sent_bytes
        if isinstance(self._max_series, SeriesBudget):
            self._max_series.report(self.gateway.name, digest.aggregates.demand)
        folded = dict(previous.folded_series)
        for metric, count in digest.aggregates.folded.items():
            folded[metric] = folded.get(metric, 0) + count
        status = replace(
            digested(previous, digest),
            up=True,
            polls=previous.polls + 1,
            last_success=self._clock.time(),
            last_duration=duration,
            error=None,
            folded_series=MappingProxyType(folded),
            invalid_sessions=previous.invalid_sessions + snapshot.invalid_sessions,
        )
        if not previous.up:
            log.info("gateway up", extra={
                "gateway": self.gateway.name,
                "perspective_sessions": len(digest.perspective),
                "client_sessions": len(digest.clients),
                "version": snapshot.version or "unknown",
            })
        if snapshot.warnings != previous.warnings and snapshot.warnings:
            log.warning("gateway reports a problem", extra={
                "gateway": self.gateway.name, "warnings": "; ".join(snapshot.warnings)})
        return status

    def _failed(self, error: SourceError, duration: float) -> None:
        previous = self.status
        errors = dict(previous.poll_errors)
        errors[error.reason] += 1
        self.status = replace(
            previous,
            up=False,
            polls=previous.polls + 1,
            last_duration=duration,
            error=error,
            poll_errors=MappingProxyType(errors),
        )
        if previous.error is None or previous.error.reason != error.reason:
            log.warning("gateway down", extra={
                "gateway": self.gateway.name, "reason": str(error.reason), "detail": error.detail})
