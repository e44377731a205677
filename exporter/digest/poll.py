"""A whole poll's digest as one pure function, from the snapshot and what the previous poll
left, to everything the exporter shows and holds until the next poll.

Whatever a gateway's digest carries from one successful poll to the next (the lifecycle and
the byte counter) goes in and comes out as immutable values, and the settings are plain data:
so the digest can run wherever the poller chooses, a worker thread or another process, and a
failed poll simply keeps what it had.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from exporter.digest.aggregate import Aggregates, aggregate, label, scope_label
from exporter.digest.groups import Shown, ShownLabels, SnapshotGroups
from exporter.digest.lifecycle import GatewayLifecycle, LabelSet
from exporter.digest.sent_bytes import SentBytes
from exporter.model import SessionIndex, Snapshot


@dataclass(frozen=True, slots=True)
class DigestSettings:
    """The gateway's settings a digest needs (a reload may change them between polls)."""

    idle_after: float  # seconds
    stale_after: float  # seconds
    username: Callable[[str], str]  # the username label policy (privacy.Privacy.username)
    max_projects: int  # project label values kept per gateway (groups.capped)
    caps: int | Mapping[str, int] | None = None  # series caps (aggregate.aggregate)


@dataclass(frozen=True, slots=True)
class Digest:
    """What one poll turns into: the numbers, the sessions to hold, the carried state, and
    what the gateway said about itself (`about`: the snapshot without its session lists,
    which the digest has used up)."""

    aggregates: Aggregates
    perspective: SessionIndex
    clients: SessionIndex
    sent_bytes: SentBytes
    lifecycle: GatewayLifecycle
    about: Snapshot


def digest(snapshot: Snapshot, lifecycle: GatewayLifecycle, sent_bytes: SentBytes,
           settings: DigestSettings, now: float) -> Digest:
    """`lifecycle` and `sent_bytes` are the previous successful poll's; `now` is this poll's
    time (epoch seconds)."""
    groups = SnapshotGroups.of(snapshot)  # shared: grouping is most of a digest's cost
    # Every label is made from the capped groups; /sessions keeps the values as sent.
    labelled, folded = groups.capped(settings.max_projects,
                                     shown_labels(lifecycle, now, settings.stale_after))
    aggregates = aggregate(snapshot, settings.idle_after, settings.username, settings.caps,
                           labelled)
    return Digest(
        aggregates=replace(aggregates, folded_values=folded),
        perspective=SessionIndex.grouped(snapshot.perspective_json,
                                         groups.perspective.coarser(2, 0)),  # user, project
        clients=SessionIndex.grouped(snapshot.clients_json, groups.clients.coarser(1, 0)),
        sent_bytes=sent_bytes.after(snapshot.perspective, labelled.scopes, now=now,
                                    stale_after=settings.stale_after),
        lifecycle=lifecycle.after(snapshot, now, settings.stale_after, labelled),
        about=replace(snapshot, perspective=(), perspective_json=(), clients=(),
                      clients_json=()),
    )


def shown_labels(lifecycle: GatewayLifecycle, now: float, stale_after: float) -> ShownLabels:
    """The project and scope values the metrics show as of `now`: those of the label sets
    seen within `stale_after` (the lifecycle keeps when each was last seen)."""
    perspective = _recent(lifecycle.perspective.last_seen, now, stale_after)
    clients = _recent(lifecycle.clients.last_seen, now, stale_after)
    return ShownLabels(Shown(frozenset(project for project, _ in perspective), label),
                       Shown(frozenset(scope for _, scope in perspective), scope_label),
                       Shown(frozenset(project for project, _ in clients), label))


def _recent(last_seen: Mapping[LabelSet, float], now: float, stale_after: float
            ) -> list[LabelSet]:
    return [labels for labels, seen in last_seen.items() if now - seen <= stale_after]
