"""The custom collector: metric families built fresh, on each scrape, from the pollers' statuses.

Nothing here calls a gateway or mutates state; a scrape costs only the walk over the already
aggregated numbers. Because families are built fresh, a label set that vanished from the data
(a user who logged out) vanishes from the exposition with no bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import buildinfo
from exporter.clock import Clock
from exporter.digest.lifecycle import BUCKETS, Histogram, Lifecycle
from exporter.polling.poller import GatewayStatus
from exporter.reload import ReloadStatus
from exporter.schema import format_duration

__all__ = ["Metric", "SessionCollector", "build_info", "exporter_families", "health_families",
           "lifecycle_families", "poll_intervals", "reload_families", "session_families"]

_AS_OF = " (as of the last poll)"
_PROJECT_SCOPE = ["gateway", "project", "scope"]


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation + _AS_OF, labels=labels)


def _labelled(with_username: bool, labels: list[str], values: list[str]) -> list[str]:
    """Without the username label (username_label: drop) its value is dropped as well."""
    if with_username:
        return values
    return [v for name, v in zip(labels, values, strict=True) if name != "username"]


def session_families(statuses: Sequence[GatewayStatus], now: float,
                     with_username: bool = True) -> list[Metric]:
    session_labels = ["gateway", "project", "scope", "username"]
    client_labels = ["gateway", "project", "username", "kind"]
    sessions = _gauge("ignition_perspective_sessions", "Live Perspective sessions",
                      _labelled(with_username, session_labels, session_labels))
    pages = _gauge("ignition_perspective_active_pages",
                   "Sum of activePages over Perspective sessions", _PROJECT_SCOPE)
    idle = _gauge("ignition_perspective_idle_sessions",
                  "Perspective sessions whose lastComm exceeds idle_after", _PROJECT_SCOPE)
    recent = _gauge("ignition_perspective_recent_sent_bytes",
                    "Sum of recentBytesSent over Perspective sessions", _PROJECT_SCOPE)
    sent = CounterMetricFamily(
        "ignition_perspective_sent_bytes",
        "Bytes sent to the gateway by Perspective sessions (totalBytesSent, as Ignition "
        "documents it), growth summed per session" + _AS_OF,
        labels=_PROJECT_SCOPE)
    clients = _gauge("ignition_client_sessions", "Vision clients and Designers",
                     _labelled(with_username, client_labels, client_labels))
    for status in statuses:
        gateway = status.gateway.name
        for (project, scope), total in status.sent_bytes.items():
            sent.add_metric([gateway, project, scope], total)
        if not status.is_fresh(now):
            continue  # stale: its session series disappear, counters stay
        aggregates = status.aggregates
        for (project, scope, username), count in aggregates.perspective_sessions.items():
            sessions.add_metric(_labelled(with_username, session_labels,
                                          [gateway, project, scope, username]), count)
        for (project, scope), totals in aggregates.scopes.items():
            labels = [gateway, project, scope]
            pages.add_metric(labels, totals.active_pages)
            idle.add_metric(labels, totals.idle_sessions)
            recent.add_metric(labels, totals.recent_sent_bytes)
        for (project, username, kind), count in aggregates.client_sessions.items():
            clients.add_metric(_labelled(with_username, client_labels,
                                         [gateway, project, username, kind]), count)
    return [sessions, pages, idle, recent, sent, clients]


def poll_intervals(statuses: Iterable[GatewayStatus]) -> tuple[float, ...]:
    """The distinct poll intervals of these gateways: the lifecycle HELP texts name them."""
    return tuple(sorted({status.gateway.poll_interval for status in statuses}))


def _unseen(intervals: Sequence[float]) -> str:
    """What comparing polls cannot see, said in every lifecycle family's HELP."""
    if not intervals:
        every = "at each poll"
    elif len(intervals) == 1:
        every = f"every {format_duration(intervals[0])}"
    else:
        every = (f"every {format_duration(intervals[0])} to "
                 f"{format_duration(intervals[-1])}, by gateway")
    return (f"; counted by comparing successive polls ({every}), so a session that starts and "
            "ends between two polls is not seen")


_LE = [floatToGoString(bound) for bound in BUCKETS] + ["+Inf"]


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return list(zip(_LE, histogram.buckets, strict=True))


def _lifecycle_list(kind: str, labels: list[str], what: str, source: str, unseen: str
                    ) -> tuple[CounterMetricFamily, CounterMetricFamily, HistogramMetricFamily]:
    """The started and ended counters and the duration histogram of one list."""
    return (
        CounterMetricFamily(f"ignition_{kind}_sessions_started",
                            f"{what} seen for the first time{unseen}", labels=labels),
        CounterMetricFamily(f"ignition_{kind}_sessions_ended",
                            f"{what} present at the previous successful poll and absent now"
                            f"{unseen}", labels=labels),
        HistogramMetricFamily(f"ignition_{kind}_session_duration_seconds",
                              f"How long ended {what} lasted, {source}{unseen}",
                              labels=labels),
    )


def _add_counts(families: Sequence[Metric], gateway: str, lifecycle: Lifecycle) -> None:
    started, ended, duration = families
    for (first, second), counts in lifecycle.shown.items():
        labels = [gateway, first, second]
        started.add_metric(labels, counts.started)
        ended.add_metric(labels, counts.ended)
        duration.add_metric(labels, _buckets(counts.durations), counts.durations.total)


def lifecycle_families(statuses: Sequence[GatewayStatus], now: float,
                       intervals: Sequence[float] | None = None) -> list[Metric]:
    """Sessions started and ended, how long they lasted, how old the open ones are.

    `intervals` (default: those of `statuses`) are the poll intervals the HELP texts name."""
    unseen = _unseen(poll_intervals(statuses) if intervals is None else intervals)
    perspective = _lifecycle_list("perspective", _PROJECT_SCOPE, "Perspective sessions",
                                  "from their last observed uptime", unseen)
    age = GaugeHistogramMetricFamily(
        "ignition_perspective_session_age_seconds",
        "Uptime of the current Perspective sessions" + _AS_OF, labels=_PROJECT_SCOPE)
    clients = _lifecycle_list("client", ["gateway", "project", "kind"],
                              "Vision clients and Designers",
                              "from their creationTime (WebDev) or uptime (REST)", unseen)
    for status in statuses:
        if not status.is_fresh(now):
            continue  # like the other session series
        gateway = status.gateway.name
        _add_counts(perspective, gateway, status.lifecycle.perspective)
        _add_counts(clients, gateway, status.lifecycle.clients)
        for (project, scope), histogram in status.lifecycle.perspective.ages.items():
            age.add_metric([gateway, project, scope], _buckets(histogram), histogram.total)
    return [*perspective, age, *clients]


def health_families(statuses: Sequence[GatewayStatus]) -> list[Metric]:
    """The exporter's view of each gateway's polls, in the order of `_HEALTH`."""
    return [family(statuses) for family in _HEALTH]


def _per_gateway(kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str,
                 documentation: str, value: Callable[[GatewayStatus], float | None]
                 ) -> Callable[[Sequence[GatewayStatus]], Metric]:
    """A family with one sample per gateway, of `value`; none where that is None (a gateway
    not polled yet, a setting not set)."""
    def family(statuses: Sequence[GatewayStatus]) -> Metric:
        built = kind(name, documentation, labels=["gateway"])
        for status in statuses:
            if (sample := value(status)) is not None:
                built.add_metric([status.gateway.name], sample)
        return built
    return family


def _poll_errors(statuses: Sequence[GatewayStatus]) -> Metric:
    errors = CounterMetricFamily("ignition_exporter_poll_errors",
                                 "Failed polls of the gateway, by reason",
                                 labels=["gateway", "reason"])
    for status in statuses:
        for reason, count in status.poll_errors.items():
            errors.add_metric([status.gateway.name, str(reason)], count)
    return errors


def _gateway_info(statuses: Sequence[GatewayStatus]) -> Metric:
    info = GaugeMetricFamily("ignition_gateway_info",
                             "Name, version and redundancy role (Independent, Master, Backup; "
                             "empty where the gateway does not report it) the gateway reports "
                             "about itself" + _AS_OF,
                             labels=["gateway", "system_name", "version", "redundancy_role"])
    for status in statuses:
        if status.last_success is not None and (status.version or status.reported_name):
            info.add_metric([status.gateway.name, status.reported_name or "",
                             status.version or "", status.redundancy_role or ""], 1)
    return info


def _folded_values(statuses: Sequence[GatewayStatus]) -> Metric:
    folded = GaugeMetricFamily("ignition_exporter_folded_label_values",
                               "Distinct project or scope values the last poll of the gateway "
                               "showed as \"__other__\" (max_projects_per_gateway; more than 16 "
                               "scopes is a broken gateway)", labels=["gateway", "label"])
    for status in statuses:
        for name, count in status.aggregates.folded_values.items():
            folded.add_metric([status.gateway.name, name], count)
    return folded


_HEALTH: tuple[Callable[[Sequence[GatewayStatus]], Metric], ...] = (
    _per_gateway(GaugeMetricFamily, "ignition_up",
                 "1 if the last poll of the gateway succeeded, else 0",
                 lambda status: 1 if status.up else 0),
    _per_gateway(GaugeMetricFamily, "ignition_exporter_poll_duration_seconds",
                 "Duration of the last poll of the gateway",
                 lambda status: status.last_duration),
    _per_gateway(GaugeMetricFamily, "ignition_exporter_poll_lag_seconds",
                 "How late the last poll of the gateway started against its schedule (a busy "
                 "exporter falls behind)", lambda status: status.last_lag),
    _per_gateway(GaugeMetricFamily, "ignition_exporter_last_success_timestamp_seconds",
                 "Unix time of the last successful poll of the gateway",
                 lambda status: status.last_success),
    _poll_errors,
    _per_gateway(CounterMetricFamily, "ignition_exporter_invalid_sessions",
                 "Sessions skipped because the gateway sent them malformed, with impossible "
                 "values, or repeated", lambda status: status.invalid_sessions),
    _per_gateway(GaugeMetricFamily, "ignition_perspective_session_limit",
                 "Perspective sessions the site allows on the gateway (session_limit in the "
                 "exporter's configuration)", lambda status: status.gateway.session_limit),
    _per_gateway(GaugeMetricFamily, "ignition_exporter_stale_after_seconds",
                 "Age of the last successful poll past which the gateway's session series are "
                 "dropped (stale_after), so alerts can follow the configuration",
                 lambda status: status.gateway.stale_after),
    _gateway_info,
    _folded_values,
)


FOLDABLE = ("ignition_perspective_sessions", "ignition_client_sessions")


def exporter_families(statuses: Sequence[GatewayStatus]) -> list[Metric]:
    """The series the cap folded, per gateway: each gateway's count since its poller
    started. (Summed over gateways, the counter went down whenever a reload removed or
    restarted one, and `rate()` took the drop for a reset.)"""
    folded = CounterMetricFamily(
        "ignition_exporter_folded_series",
        "Series folded into username=\"__other__\" because max_series_per_metric was reached",
        labels=["gateway", "metric"])
    for status in statuses:
        for metric in FOLDABLE:
            folded.add_metric([status.gateway.name, metric], status.folded_series.get(metric, 0))
    return [folded]


def reload_families(reload: ReloadStatus) -> list[Metric]:
    """As Prometheus names its own: the start-up load counts as the first successful one."""
    successful = GaugeMetricFamily(
        "ignition_exporter_config_last_reload_successful",
        "Whether the last configuration reload attempt was successful")
    successful.add_metric([], 1 if reload.successful else 0)
    timestamp = GaugeMetricFamily(
        "ignition_exporter_config_last_reload_success_timestamp_seconds",
        "Timestamp of the last successful configuration reload")
    timestamp.add_metric([], reload.last_success)
    return [successful, timestamp]


def build_info() -> Metric:
    labels = buildinfo.labels()
    info = GaugeMetricFamily("ignition_exporter_build_info",
                             "Always 1; the exporter's version, the commit it was built from "
                             "and the Python running it as labels", labels=list(labels))
    info.add_metric(list(labels.values()), 1)
    return info


class SessionCollector(Collector):
    """The same families as a standard prometheus_client collector.

    `/metrics` is served from `exposition.Exposition`, which renders these families per
    gateway once per poll; this collector is the reference it must match byte for byte (a
    test holds them to it), and what the benchmark measures per-scrape rendering with.
    """

    def __init__(self, statuses: Callable[[], Sequence[GatewayStatus]], clock: Clock,
                 with_username: bool = True,
                 reload: Callable[[], ReloadStatus] = ReloadStatus) -> None:
        self._statuses = statuses
        self._clock = clock
        self._with_username = with_username
        self._reload = reload

    def collect(self) -> Iterator[Metric]:
        statuses = self._statuses()
        yield from session_families(statuses, self._clock.time(), self._with_username)
        yield from health_families(statuses)
        yield from lifecycle_families(statuses, self._clock.time())
        yield from exporter_families(statuses)
        yield from reload_families(self._reload())
        yield build_info()

    def describe(self) -> Iterator[Metric]:
        """Nothing to describe up front: the registry must not call collect() at register time."""
        return iter(())
