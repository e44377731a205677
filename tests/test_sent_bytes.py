"""The byte counter: growth per session, summed per (project, scope); label sets exported
while they hold sessions (within stale_after), their totals kept for when they come back."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

import exporter.polling.workers  # noqa: F401  (read-only mappings pickle as in the workers)
from exporter.config import GatewayConfig
from exporter.digest.lifecycle import NOTHING_YET
from exporter.digest.poll import DigestSettings, digest
from exporter.digest.sent_bytes import GRACE_POLLS, LabelTotals, SentBytes
from exporter.model import PerspectiveSession, Snapshot
from exporter.polling.poller import GatewayPoller
from exporter.standins.simulator import WEBDEV_PATH
from tests.conftest import FakeClock, ServerFactory
from tests.fakes import ScriptedSource, down
from tests.metrics import samples
from tests.payloads import document, perspective, snapshot_of
from tests.processes import ExporterProcess, scraping, write_config

POLL = 15.0  # seconds between the polls a Counter makes
STALE_AFTER = 60.0


class Counter:
    """Feeds polls to a `SentBytes` in order, as a poller does, keeping the latest state: one
    poll every POLL seconds of a fake clock, unless told to wait longer."""

    def __init__(self, remember: int | None = None) -> None:
        self.state = SentBytes() if remember is None else \
            SentBytes(labels=LabelTotals(remember=remember))
        self.clock = FakeClock()

    def observe(self, sessions: Sequence[PerspectiveSession], wait: float = POLL
                ) -> Mapping[tuple[str, str], float]:
        self.clock.advance(wait)
        self.state = self.state.after(sessions, now=self.clock.time(), stale_after=STALE_AFTER)
        return self.state.totals


def s(id: str, total: float | None, project: str = "P", scope: str = "browser"
      ) -> PerspectiveSession:
    return PerspectiveSession(id=id, project=project, session_scope=scope,
                              total_bytes_sent=total)


def test_example_from_the_contract() -> None:
    counter = Counter()
    assert counter.observe([s("A", 5000), s("B", 1000)]) == {("P", "browser"): 6000}
    assert counter.observe([s("A", 7000), s("C", 50)]) == {("P", "browser"): 8050}


def test_reset_adds_the_new_value() -> None:
    counter = Counter()
    counter.observe([s("A", 5000)])
    assert counter.observe([s("A", 300)]) == {("P", "browser"): 5300}
    assert counter.observe([]) == {("P", "browser"): 5300}
    # A came back within the grace: only its growth since it was last seen counts.
    assert counter.observe([s("A", 400)]) == {("P", "browser"): 5400}


def test_never_decreases_and_keeps_idle_keys() -> None:
    counter = Counter()
    totals = counter.observe([s("A", 100, scope="Browser"), s("B", 10, project="Q")])
    assert totals == {("P", "browser"): 100, ("Q", "browser"): 10}
    totals = counter.observe([s("A", 100, scope="Browser")])
    assert totals == {("P", "browser"): 100, ("Q", "browser"): 10}


def test_sessions_without_id_or_total_are_skipped() -> None:
    counter = Counter()
    assert counter.observe([s("A", None), PerspectiveSession(total_bytes_sent=99),
                            s("B", -5)]) == {}


def test_returned_totals_do_not_change_afterwards() -> None:
    counter = Counter()
    first = counter.observe([s("A", 10)])
    counter.observe([s("A", 30)])
    assert first == {("P", "browser"): 10}


def test_a_gateway_inventing_projects_cannot_grow_the_totals_for_ever() -> None:
    """Label sets seen within stale_after are exported; of those no longer exported, only
    the `remember` most recently seen keep their totals (as for the lifecycle counters), so
    a gateway putting a new project name in every answer holds memory and series to a
    bound."""
    counter = Counter(remember=3)
    for poll in range(50):
        totals = counter.observe([s(f"x{poll}", 10, project=f"made-up-{poll}"),
                                  s("steady", 100 + poll)])
    # Seen within 60 s of the last poll (polls 45 to 49, 15 s apart), and P.
    assert set(totals) == {("P", "browser"), *((f"made-up-{poll}", "browser")
                                               for poll in range(45, 50))}
    assert totals[("P", "browser")] == 149
    labels = counter.state.labels
    assert list(labels.hidden) == [(f"made-up-{poll}", "browser") for poll in (42, 43, 44)]
    assert labels.last_seen.keys() == totals.keys()  # nothing else grows with the polls


def test_integer_ids_whose_hashes_collide_keep_their_own_totals() -> None:
    """hash(-1) == hash(-2) in Python: with the bare hash, these two unchanging sessions
    shared one remembered total and the counter grew by 600 at every poll."""
    counter = Counter()
    sessions = [s(-1, 1000), s(-2, 400)]  # type: ignore[arg-type]
    assert counter.observe(sessions) == {("P", "browser"): 1400}
    assert counter.observe(sessions) == {("P", "browser"): 1400}


def test_a_state_is_never_changed_by_the_next_poll() -> None:
    """A failed poll keeps the state it had: `after` must leave its state as it was, its
    label sets too (shown, hidden, when each was last seen)."""
    counter = Counter()
    counter.observe([s("A", 10), s("B", 7, project="Q")])
    counter.observe([s("A", 10)], wait=STALE_AFTER + 1)  # Q hidden
    first = counter.state
    before = (dict(first.totals), dict(first.labels.hidden), dict(first.labels.last_seen),
              first.ids.tolist(), first.missing_ids.tolist())
    first.after([s("A", 30), s("C", 5, project="Q"), s("D", 1, project="R")],
                now=counter.clock.time() + 999, stale_after=STALE_AFTER)
    assert (dict(first.totals), dict(first.labels.hidden), dict(first.labels.last_seen),
            first.ids.tolist(), first.missing_ids.tolist()) == before
    assert first.totals == {("P", "browser"): 10} and first.labels.hidden == {("Q", "browser"): 7}
    again = first.after([s("A", 30)], now=counter.clock.time() + POLL, stale_after=STALE_AFTER)
    assert again.totals == {("P", "browser"): 30}


def test_a_session_missing_for_a_few_polls_is_not_counted_again_when_back() -> None:
    """A list that drops a session for a poll or two (REST pages shifting while read) must
    not add the session's whole total again when it reappears."""
    counter = Counter()
    counter.observe([s("A", 5000), s("B", 100)])
    counter.observe([s("B", 100)])
    counter.observe([s("B", 100)])
    assert counter.observe([s("A", 5200), s("B", 100)]) == {("P", "browser"): 5300}


def test_a_gateway_alternating_two_lists_does_not_inflate_the_counter() -> None:
    counter = Counter()
    first, second = [s("A", 1000), s("B", 1000)], [s("C", 1000), s("D", 1000)]
    for _ in range(10):
        counter.observe(first)
        totals = counter.observe(second)
    assert totals == {("P", "browser"): 4000}


def test_a_session_missing_longer_than_the_grace_is_forgotten() -> None:
    counter = Counter()
    counter.observe([s("A", 5000)])
    for _ in range(GRACE_POLLS):
        counter.observe([])
    assert len(counter.state.missing_ids) == 1  # still followed
    counter.observe([])
    assert len(counter.state.missing_ids) == 0
    assert counter.observe([s("A", 5000)]) == {("P", "browser"): 10_000}  # new, in full


def test_a_gateway_renewing_every_id_holds_at_most_the_grace_of_missing_sessions() -> None:
    counter = Counter()
    for poll in range(20):
        counter.observe([s(f"{poll}-{i}", 10) for i in range(100)])
    assert len(counter.state.missing_ids) == GRACE_POLLS * 100


# -- label sets without sessions: exported for stale_after, then kept hidden -----------------

P, Q = ("P", "browser"), ("Q", "browser")


def test_a_label_set_without_sessions_is_exported_for_stale_after_then_not() -> None:
    """Q's last session ends: Q is exported for 60 s more (the poll 60 s after it was last
    seen still shows it), then no longer; its total is kept out of sight."""
    counter = Counter()
    counter.observe([s("A", 100), s("B", 40, project="Q")])
    shown = [Q in counter.observe([s("A", 100)]) for _ in range(5)]  # 15 s to 75 s later
    assert shown == [True, True, True, True, False]
    assert counter.state.totals == {P: 100}
    assert counter.state.labels.hidden == {Q: 40}
    assert Q not in counter.state.labels.last_seen


def test_a_label_set_that_comes_back_continues_from_its_total() -> None:
    """The counter never goes down while the process runs: Q comes back at 40 plus what its
    new sessions add, not at what they add alone."""
    counter = Counter()
    counter.observe([s("A", 100), s("B", 40, project="Q")])
    counter.observe([s("A", 100)], wait=STALE_AFTER + 1)
    assert Q not in counter.state.totals
    assert counter.observe([s("A", 100), s("C", 25, project="Q")])[Q] == 65
    assert counter.state.labels.hidden == {}
    assert counter.observe([s("A", 100), s("C", 30, project="Q")])[Q] == 70


def test_a_label_set_that_comes_back_without_growth_is_exported_at_its_total() -> None:
    """Holding a session is what exports a label set, whether or not it sent anything."""
    counter = Counter()
    counter.observe([s("B", 40, project="Q")])
    counter.observe([], wait=STALE_AFTER + 1)
    assert counter.state.totals == {}
    assert counter.observe([s("C", 0, project="Q")]) == {Q: 40}


def test_a_label_set_is_shown_from_its_first_bytes() -> None:
    """As before: sessions that sent nothing (or lack an id or a total) add no series."""
    counter = Counter()
    assert counter.observe([s("A", 0), s("B", None, project="Q")]) == {}
    assert counter.observe([s("A", 3), s("B", None, project="Q")]) == {P: 3}


def test_a_label_set_dropped_beyond_the_bound_starts_again_from_zero() -> None:
    """Beyond `remember` label sets out of sight, the least recently seen goes first; only
    that one, long after its series disappeared, can start again."""
    counter = Counter(remember=2)
    for project, total in (("old", 7), ("mid", 8), ("new", 9)):
        counter.observe([s(project, total, project=project)])
    counter.observe([], wait=STALE_AFTER + 1)
    assert list(counter.state.labels.hidden) == [("mid", "browser"), ("new", "browser")]
    totals = counter.observe([s("old-2", 1, project="old"), s("mid-2", 1, project="mid")])
    assert totals == {("old", "browser"): 1, ("mid", "browser"): 9}
    assert counter.state.labels.hidden == {("new", "browser"): 9}


def test_the_state_pickles_as_the_digest_workers_send_it() -> None:
    counter = Counter()
    counter.observe([s("A", 100), s("B", 40, project="Q")])
    counter.observe([s("A", 120)], wait=STALE_AFTER + 1)
    copy = pickle.loads(pickle.dumps(counter.state))
    assert copy == counter.state and copy.labels.hidden == {Q: 40}
    now = counter.clock.time() + POLL
    assert copy.after([s("C", 5, project="Q")], now=now, stale_after=STALE_AFTER) == \
        counter.state.after([s("C", 5, project="Q")], now=now, stale_after=STALE_AFTER)


# -- through the digest and the poller --------------------------------------------------------

def settings(max_projects: int = 500) -> DigestSettings:
    return DigestSettings(idle_after=60, stale_after=STALE_AFTER, username=str,
                          max_projects=max_projects)


def renamed(poll: int, count: int) -> Snapshot:
    """The same sessions, growing, in projects renamed on every poll."""
    return snapshot_of(document([perspective(f"s{i}", "u", f"p{poll}-{i}", total=1000 + poll)
                                 for i in range(count)]))


def test_a_gateway_renaming_its_projects_shows_no_more_byte_series_than_the_cap() -> None:
    """Renamed projects beyond max_projects_per_gateway go to "__other__" while the old
    names are still shown (for stale_after); then the old ones leave, new ones take their
    room, and no counter ever goes down."""
    state = digest(renamed(0, 30), NOTHING_YET, SentBytes(), settings(max_projects=10), 0.0)
    seen: dict[tuple[str, str], float] = dict(state.sent_bytes.totals)
    for poll in range(1, 12):
        state = digest(renamed(poll, 30), state.lifecycle, state.sent_bytes,
                       settings(max_projects=10), POLL * poll)
        totals = state.sent_bytes.totals
        assert len(totals) <= 10 + 1, poll
        assert all(total >= seen.get(key, 0.0) for key, total in totals.items()), poll
        seen.update(totals)
    # Poll 0 showed ten p0-* projects; polls 1 to 4 (within 60 s) had no room for new names;
    # poll 5 hid p0-* and showed ten p5-*, poll 10 the same with p10-*.
    projects = [project for project, _ in state.sent_bytes.totals if project != "__other__"]
    assert len(projects) == 10 and all(project.startswith("p10-") for project in projects)
    hidden = [project for project, _ in state.sent_bytes.labels.hidden]
    assert len(hidden) == 20 and {project.split("-")[0] for project in hidden} == {"p0", "p5"}


GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=POLL, timeout=5,
                        stale_after=STALE_AFTER)


async def test_failed_polls_change_nothing_and_the_next_success_catches_up(
        clock: FakeClock) -> None:
    """While the gateway fails, its byte counters stay as the last success left them (the
    rule's clock is the polls'); the first success after the outage hides Q."""
    both = snapshot_of(document([perspective("A", total=100),
                                 perspective("B", project="Q", total=40)]))
    only_a = snapshot_of(document([perspective("A", total=100)]))
    p = GatewayPoller(GATEWAY, ScriptedSource(clock, both, down(), down(), only_a),
                      idle_after=60, clock=clock)
    good = await p.poll_once()
    for _ in range(2):
        clock.advance(STALE_AFTER)
        assert (await p.poll_once()).sent_bytes is good.sent_bytes
    clock.advance(POLL)
    assert (await p.poll_once()).sent_bytes == {("Line1", "browser"): 100}


# -- end to end: the real process, a loopback gateway, a real Prometheus ----------------------

class SteadyGateway:
    """A loopback WebDev gateway answering every poll with the sessions the test set last."""

    def __init__(self, *sessions: dict[str, Any]) -> None:
        self.document = document(list(sessions))

    def app(self) -> web.Application:
        async def answer(_: web.Request) -> web.Response:
            return web.json_response(self.document)

        app = web.Application()
        app.router.add_get(WEBDEV_PATH, answer)
        return app


async def test_prometheus_sees_a_series_leave_and_come_back_without_a_reset(
        tmp_path: Path, aiohttp_server: ServerFactory) -> None:
    """Project Gone loses its session: 2 s (stale_after) later its series leaves /metrics,
    and Prometheus stops returning it at its next scrape (a staleness marker), history kept.
    A new session brings it back at its old total plus the new bytes: no reset."""
    stay = perspective("B", project="Stay", total=10)
    gateway = SteadyGateway(perspective("A", project="Gone", total=1000), stay)
    url = str((await aiohttp_server(gateway.app())).make_url(WEBDEV_PATH))
    config = write_config(tmp_path, [{"name": "plant-a", "url": url, "poll_interval": "500ms",
                                      "stale_after": "2s"}])
    gone = 'ignition_perspective_sent_bytes_total{gateway="plant-a",project="Gone",' \
           'scope="browser"}'
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric(f"{gone} 1000.0")
        async with scraping(tmp_path, exporter) as prometheus:
            await prometheus.wait_for_query(f"{gone} == 1000")
            gateway.document = document([stay])
            text = await exporter.wait_for_metrics(lambda text: gone not in text,
                                                   "Gone's series to leave /metrics")
            assert samples(text, "ignition_perspective_sent_bytes_total") == {
                (("gateway", "plant-a"), ("project", "Stay"), ("scope", "browser")): 10}
            await prometheus.wait_for_query(f"absent({gone})")
            history = await prometheus.query(f"max_over_time({gone}[5m])")
            assert float(history[0]["value"][1]) == 1000
            gateway.document = document([stay, perspective("C", project="Gone", total=50)])
            await exporter.wait_for_metric(f"{gone} 1050.0")
            await prometheus.wait_for_query(f"{gone} == 1050")
            resets = await prometheus.query(f"resets({gone}[5m])")
            assert float(resets[0]["value"][1]) == 0
        assert await exporter.stop() == 0
