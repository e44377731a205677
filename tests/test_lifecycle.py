"""Counting sessions that start and end, poll after poll, as the metrics show it."""

from __future__ import annotations

import subprocess
from array import array
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.probes import ingest
from exporter.config import GatewayConfig
from exporter.digest.lifecycle import UNKNOWN, Held, Histogram, Lifecycle, compare, perspective_held
from exporter.model import PerspectiveSession, Snapshot
from exporter.polling.poller import GatewayPoller
from exporter.sources import SourceError
from exporter.standins.simulator import WEBDEV_PATH
from exporter.web.collector import SessionCollector
from tests.conftest import FakeClock, ServerFactory, require_tool
from tests.fakes import ScriptedSource, down
from tests.metrics import samples
from tests.payloads import document, encode, perspective, snapshot_of, vision
from tests.processes import ExporterProcess, scraping, write_config

GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=15, timeout=5,
                        stale_after=60)
STARTED = "ignition_perspective_sessions_started_total"
ENDED = "ignition_perspective_sessions_ended_total"
DURATION = "ignition_perspective_session_duration_seconds"
AGE = "ignition_perspective_session_age_seconds"


def s(id: str | None, project: str = "Line1", scope: str = "browser",
      uptime: int | None = 600_000) -> dict[str, Any]:
    return perspective(id, project=project, scope=scope, uptime=uptime)  # type: ignore[arg-type]


def snap(*sessions: dict[str, Any], clients: tuple[dict[str, Any], ...] = ()) -> Snapshot:
    return snapshot_of(document(list(sessions), list(clients)))


class Gateway:
    """A poller over scripted answers, polled every poll_interval on a fake clock."""

    def __init__(self, clock: FakeClock, *answers: Snapshot | SourceError) -> None:
        self.clock = clock
        self.poller = GatewayPoller(GATEWAY, ScriptedSource(clock, *answers, takes=0),
                                    idle_after=60, clock=clock)

    async def polls(self, count: int = 1) -> Gateway:
        for _ in range(count):
            await self.poller.poll_once()
            self.clock.advance(GATEWAY.poll_interval)
        return self

    def metric(self, name: str) -> dict[tuple[str, ...], float]:
        """(label values but gateway, in name order) → value, for one sample name."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SessionCollector(lambda: [self.poller.status], self.clock))
        text = generate_latest(registry).decode()
        return {tuple(v for k, v in sorted(sample.labels.items()) if k != "gateway"):
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == name}


LINE1 = ("Line1", "browser")


async def test_first_poll_counts_nothing_and_shows_zero(clock: FakeClock) -> None:
    gateway = await Gateway(clock, snap(s("A"), s("B", project="QA"))).polls()
    assert gateway.metric(STARTED) == {LINE1: 0, ("QA", "browser"): 0}
    assert gateway.metric(ENDED) == {LINE1: 0, ("QA", "browser"): 0}
    assert gateway.metric(DURATION + "_count") == {LINE1: 0, ("QA", "browser"): 0}
    assert gateway.metric(AGE + "_gcount") == {LINE1: 1, ("QA", "browser"): 1}


async def test_churn_counts_one_start_one_end_and_the_ended_duration(clock: FakeClock) -> None:
    gateway = await Gateway(clock, snap(s("A", uptime=60_000), s("B", uptime=1_000_000)),
                            snap(s("A", uptime=75_000), s("C", uptime=5_000))).polls(2)
    assert gateway.metric(STARTED) == {LINE1: 1}
    assert gateway.metric(ENDED) == {LINE1: 1}
    assert gateway.metric(DURATION + "_sum") == {LINE1: 1000.0}
    buckets = gateway.metric(DURATION + "_bucket")
    assert buckets[("900.0", *LINE1)] == 0 and buckets[("3600.0", *LINE1)] == 1
    assert buckets[("+Inf", *LINE1)] == 1
    ages = gateway.metric(AGE + "_bucket")
    assert ages[("60.0", *LINE1)] == 1 and ages[("300.0", *LINE1)] == 2  # C: 5 s, A: 75 s
    assert gateway.metric(AGE + "_gsum") == {LINE1: 80.0}


async def test_gateway_restart_ends_every_session_and_starts_every_new_one(
        clock: FakeClock) -> None:
    gateway = await Gateway(clock, snap(s("A"), s("B"), s("C")),
                            snap(s("X", uptime=1000), s("Y", uptime=900))).polls(2)
    assert gateway.metric(STARTED) == {LINE1: 2}
    assert gateway.metric(ENDED) == {LINE1: 3}
    assert gateway.metric(DURATION + "_count") == {LINE1: 3}


async def test_outage_changes_nothing_and_recovery_compares_with_last_success(
        clock: FakeClock) -> None:
    gateway = Gateway(clock, snap(s("A"), s("B")), down(), down(), snap(s("B"), s("C")))
    await gateway.polls(1)
    await gateway.polls(2)  # down twice: nothing counted, series kept (not yet stale)
    assert gateway.metric(STARTED) == {LINE1: 0}
    assert gateway.metric(ENDED) == {LINE1: 0}
    await gateway.polls(1)
    assert gateway.metric(STARTED) == {LINE1: 1}
    assert gateway.metric(ENDED) == {LINE1: 1}


async def test_restart_during_long_outage_counts_after_recovery(clock: FakeClock) -> None:
    """Down past stale_after: the series vanish; on recovery the gateway's sessions all
    changed, and the counts show one poll later, after the label set is back at its old
    value (so increase() sees them)."""
    gateway = Gateway(clock, snap(s("A"), s("B")), snap(s("A"), s("B"), s("C")),
                      *[down()] * 5, snap(s("X")), snap(s("X")))
    await gateway.polls(2)
    assert gateway.metric(STARTED) == {LINE1: 1}
    await gateway.polls(5)
    assert gateway.metric(STARTED) == {}  # stale, like every session series
    await gateway.polls(1)
    assert gateway.metric(STARTED) == {LINE1: 1}
    assert gateway.metric(ENDED) == {LINE1: 0}
    await gateway.polls(1)
    assert gateway.metric(STARTED) == {LINE1: 2}
    assert gateway.metric(ENDED) == {LINE1: 3}


async def test_session_moving_project_is_neither_login_nor_logout(clock: FakeClock) -> None:
    gateway = Gateway(clock, snap(s("A"), s("B")), snap(s("A", project="QA"), s("B")),
                      snap(s("B")))
    await gateway.polls(2)
    assert gateway.metric(STARTED) == {LINE1: 0, ("QA", "browser"): 0}
    assert gateway.metric(ENDED) == {LINE1: 0, ("QA", "browser"): 0}
    await gateway.polls(1)  # A ends where it was last seen: in QA
    assert gateway.metric(ENDED) == {LINE1: 0, ("QA", "browser"): 1}
    assert gateway.metric(STARTED) == {LINE1: 0, ("QA", "browser"): 0}


async def test_missing_uptime_ends_but_is_not_observed(clock: FakeClock) -> None:
    gateway = await Gateway(clock, snap(s("A", uptime=None), s("B", uptime=120_000)),
                            snap()).polls(2)
    assert gateway.metric(ENDED) == {LINE1: 2}
    assert gateway.metric(DURATION + "_count") == {LINE1: 1}
    assert gateway.metric(DURATION + "_sum") == {LINE1: 120.0}


async def test_absurd_ages_cost_only_their_observation(clock: FakeClock) -> None:
    """An uptime or creationTime a real session cannot have (over about 30 years): the
    session still counts, its age is not observed."""
    centuries = 10 ** 13  # ms, about 317 years: decodable, but no session's age
    client = vision(client_id="V1")
    client["creationTime"] = 0  # 1970: over 30 years before the poll
    gateway = await Gateway(clock, snap(s("A", uptime=centuries), s("B"), clients=(client,)),
                            snap(s("B"))).polls(2)
    assert gateway.poller.status.up
    assert gateway.poller.status.invalid_sessions == 0
    assert gateway.metric(ENDED) == {LINE1: 1}
    assert gateway.metric(DURATION + "_count") == {LINE1: 0}
    assert gateway.metric("ignition_client_sessions_ended_total") == {("vision", "Line1"): 1}


async def test_impossible_ages_make_their_session_invalid(clock: FakeClock) -> None:
    """An uptime or creationTime above 2^63 (no Java long can hold it) is an impossible
    number: the session is invalid and counted, as for byte totals, and never started."""
    huge = 10 ** 400
    client = vision(client_id="V1")
    client["creationTime"] = huge
    gateway = await Gateway(clock, snap(s("A", uptime=huge), s("B"), clients=(client,)),
                            snap(s("B"))).polls(2)
    assert gateway.poller.status.up
    assert gateway.poller.status.invalid_sessions == 2  # A and V1, in the first poll
    assert gateway.metric(ENDED) == {LINE1: 0}
    assert gateway.metric("ignition_client_sessions_ended_total") == {}


async def test_duplicate_ids_count_once(clock: FakeClock) -> None:
    gateway = await Gateway(clock, snap(s("A")),
                            snap(s("A"), s("B", uptime=1000), s("B", uptime=2000)),
                            snap(s("A"))).polls(2)
    assert gateway.metric(STARTED) == {LINE1: 1}
    await gateway.polls(1)
    assert gateway.metric(ENDED) == {LINE1: 1}
    assert gateway.metric(DURATION + "_sum") == {LINE1: 1.0}  # the first occurrence's
    assert gateway.metric(AGE + "_gcount") == {LINE1: 1}


async def test_sessions_without_id_are_not_counted(clock: FakeClock) -> None:
    gateway = await Gateway(clock, snap(s("A")), snap(s("A"), s(None), s(None)),
                            snap(s("A"))).polls(3)
    assert gateway.metric(STARTED) == {LINE1: 0}
    assert gateway.metric(ENDED) == {LINE1: 0}


async def test_new_label_set_shows_zero_one_poll_before_its_first_count(
        clock: FakeClock) -> None:
    gateway = Gateway(clock, snap(s("A")), snap(s("A"), s("B", project="QA", scope="iOS")),
                      snap(s("A"), s("B", project="QA", scope="iOS"), s("C", project="QA",
                                                                          scope="ios")))
    await gateway.polls(2)
    qa = ("QA", "ios")
    assert gateway.metric(STARTED) == {LINE1: 0, qa: 0}  # B's login is held back one poll
    await gateway.polls(1)
    assert gateway.metric(STARTED) == {LINE1: 0, qa: 2}  # B's, and C's (no longer new)


async def test_label_sets_without_sessions_vanish_after_stale_after_and_keep_totals(
        clock: FakeClock) -> None:
    qa = ("QA", "browser")
    answers = [snap(s("A"), s("B", project="QA")), snap(s("A"))]
    answers += [snap(s("A"))] * 5 + [snap(s("A"), s("C", project="QA"))] * 3
    gateway = Gateway(clock, *answers)
    await gateway.polls(2)
    assert gateway.metric(ENDED) == {LINE1: 0, qa: 1}
    await gateway.polls(5)  # more than stale_after (60 s) without a session in QA
    assert gateway.metric(ENDED) == {LINE1: 0}
    assert gateway.metric(DURATION + "_count") == {LINE1: 0}
    await gateway.polls(1)  # back, at its old value: counters never go down
    assert gateway.metric(ENDED) == {LINE1: 0, qa: 1}
    assert gateway.metric(STARTED) == {LINE1: 0, qa: 0}
    await gateway.polls(1)
    assert gateway.metric(STARTED) == {LINE1: 0, qa: 1}


async def test_stale_gateway_drops_lifecycle_series(clock: FakeClock) -> None:
    gateway = Gateway(clock, snap(s("A")), down())
    await gateway.polls(1)
    clock.advance(GATEWAY.stale_after)
    await gateway.polls(1)
    assert gateway.metric(STARTED) == {}
    assert gateway.metric(AGE + "_gcount") == {}


async def test_client_sessions_by_client_id_with_creation_time(clock: FakeClock) -> None:
    collected_ms = 1_795_000_000_000  # the payload's collectedAt

    def client(client_id: str, created_ms: int | None, designer: bool = False
               ) -> dict[str, Any]:
        row = vision("op", "Line1", designer=designer, client_id=client_id)
        row["creationTime"] = created_ms
        return row

    gateway = await Gateway(
        clock,
        snap(clients=(client("V1", collected_ms - 7_200_000), client("D1", None, True))),
        snap(clients=(client("V2", collected_ms),)),
        snap(clients=(client("V2", collected_ms), client("D2", collected_ms, True)))).polls(3)
    vision_ = ("vision", "Line1")
    designer = ("designer", "Line1")
    assert gateway.metric("ignition_client_sessions_started_total") == {vision_: 1,
                                                                        designer: 1}
    assert gateway.metric("ignition_client_sessions_ended_total") == {vision_: 1,
                                                                      designer: 1}
    durations = gateway.metric("ignition_client_session_duration_seconds_sum")
    assert durations == {vision_: 7200.0, designer: 0.0}  # D1 had no creationTime
    assert gateway.metric("ignition_client_session_duration_seconds_count")[designer] == 0


def test_the_memory_benchmark_holds_the_lifecycle_state() -> None:
    """The benchmark's memory figure is resident memory added by the statuses its probe
    keeps; the state compared at the next poll lives in them, so the figure includes it."""
    sessions = [perspective(f"s{i}", project=f"P{i % 3}") for i in range(50)]
    status = ingest(encode(document(sessions)), "bench")
    assert len(status.lifecycle.perspective.held) == 50
    assert set(status.lifecycle.perspective.shown) == {(f"P{i}", "browser") for i in range(3)}


# -- the pure core ------------------------------------------------------------------------------

def held(*sessions: tuple[str | None, str, float]) -> Held:
    """(id, project, uptime in ms) per session; every scope is browser."""
    return perspective_held([PerspectiveSession(id=i, project=p, session_scope="browser",
                                                uptime=a) for i, p, a in sessions])


def test_compare_without_previous_counts_nothing() -> None:
    assert compare(None, held(("A", "P", 1.0))) == {}


def test_compare_counts_where_sessions_were() -> None:
    change = compare(held(("A", "P", 10_000), ("B", "P", 20_000)),
                     held(("A", "Q", 11_000), ("C", "R", 1_000)))
    assert {k: (c.started, c.ended, c.durations.total) for k, c in change.items()} == {
        ("P", "browser"): (0, 1, 20.0), ("R", "browser"): (1, 0, 0.0)}


def test_held_keeps_first_of_repeated_ids_and_drops_missing_ones() -> None:
    h = held(("A", "P", 1.0), (None, "P", 2.0), ("A", "Q", 3.0), ("B", "P", UNKNOWN))
    assert [h.label_sets[i] for i in h.labels] == [("P", "browser"), ("P", "browser")]
    assert h.ages == array("d", [1.0, UNKNOWN])
    assert len(h) == 2


def test_histogram_buckets_are_cumulative_and_le() -> None:
    histogram = Histogram.of_ages([60_000.0, 61_000.0, 700_000_000.0, UNKNOWN, 1e30])
    assert histogram.buckets[:2] == (1, 2)
    assert histogram.buckets[-2:] == (2, 3)  # the unknown and the broken age left out
    assert histogram.total == 700_121.0


def test_lifecycle_totals_never_go_down() -> None:
    """P empties, vanishes, comes back: its counters resume where they were."""
    p = ("P", "browser")
    polls = [("A", "B"), ("C",), *[()] * 7, ("D",), ("E",), ("F",)]
    state = Lifecycle()
    started, shown = [], []
    for poll, ids in enumerate(polls):
        state = state.after(held(*((i, "P", 1.0) for i in ids)), poll * 15.0, 60.0)
        started.append(state.totals[p].started if p in state.totals else 0)
        shown.append(p in state.shown)
    assert started == sorted(started)
    assert started[-1] == 4  # C, D, E, F
    assert shown[:7] == [True] * 7 and shown[7:9] == [False, False] and all(shown[9:])
    assert state.totals[p].ended == 5  # A, B, C, D, E


# -- end to end: the real process, a scripted gateway on loopback, a real Prometheus ----------

class ScriptedGateway:
    """A loopback WebDev gateway answering each poll with the next scripted document. With
    none left it answers 503, a failed poll, which changes nothing: the test decides when
    the next poll's answer exists."""

    def __init__(self) -> None:
        self.documents: deque[dict[str, Any]] = deque()

    def app(self) -> web.Application:
        async def answer(_: web.Request) -> web.Response:
            if not self.documents:
                return web.Response(status=503, text="not yet")
            return web.json_response(self.documents.popleft())

        app = web.Application()
        app.router.add_get(WEBDEV_PATH, answer)
        return app


def p_session(id: str, project: str = "P", uptime: int = 600_000) -> dict[str, Any]:
    return perspective(id, project=project, uptime=uptime)


async def test_process_and_prometheus_count_logins(tmp_path: Path,
                                                   aiohttp_server: ServerFactory) -> None:
    gateway = ScriptedGateway()
    url = str((await aiohttp_server(gateway.app())).make_url(WEBDEV_PATH))
    config = write_config(tmp_path, [{"name": "plant-a", "url": url, "stale_after": "60s"}])
    p_started = 'ignition_perspective_sessions_started_total{gateway="plant-a",project="P",' \
                'scope="browser"}'
    q_started = p_started.replace('"P"', '"Q"')
    gateway.documents.append(document([p_session("A"), p_session("B")]))
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric(f"{p_started} 0.0")
        async with scraping(tmp_path, exporter) as prometheus:
            await prometheus.wait_for_query(p_started)  # Prometheus has seen the 0
            gateway.documents.append(document([p_session("A"), p_session("B", uptime=7_200_000),
                                               p_session("C")]))
            await exporter.wait_for_metric(f"{p_started} 1.0")
            gateway.documents.append(document([
                p_session("A", uptime=90_000), p_session("C"), p_session("D"), p_session("E"),
                p_session("G", project="Q")]))
            text = await exporter.wait_for_metric(f"{p_started} 3.0")
            assert f"{q_started} 0.0" in text  # a new label set: shown at 0, counted next poll
            await prometheus.wait_for_query(f"{q_started} == 0")
            gateway.documents.append(document([p_session("C"), p_session("D"), p_session("E"),
                                               p_session("F"), p_session("G", project="Q")]))
            text = await exporter.wait_for_metric(f"{q_started} 1.0")
            ended = samples(text, "ignition_perspective_sessions_ended_total")
            assert ended[(("gateway", "plant-a"), ("project", "P"), ("scope", "browser"))] == 2
            durations = samples(text, "ignition_perspective_session_duration_seconds_sum")
            assert durations[(("gateway", "plant-a"), ("project", "P"),
                              ("scope", "browser"))] == 7290.0  # B's 2 h and A's 90 s
            assert "polls (every 1s), so a session that starts and ends" in text
            check = subprocess.run([require_tool("promtool"), "check", "metrics"],
                                   input=text.encode(), capture_output=True, timeout=30)
            assert check.returncode == 0, check.stdout + check.stderr

            await prometheus.wait_for_query(f"{p_started} == 4 and on() {q_started} == 1")
            stamp = await prometheus.query(f"timestamp({p_started})")
            at = stamp[0]["value"][1]  # the last scrape: increase() extrapolates nothing
            for series, expected in ((p_started, 4), (q_started, 1)):
                result = await prometheus.query(f"increase({series}[10m] @ {at})")
                assert float(result[0]["value"][1]) == expected, series
        assert await exporter.stop() == 0


def test_label_sets_gone_for_longest_are_forgotten_beyond_the_bound() -> None:
    """A gateway inventing a project per poll: memory stays bounded, shown series intact."""
    state = Lifecycle()
    for poll in range(30):
        state = state.after(held(("keep", "P", 1.0), (f"s{poll}", f"X{poll}", 1.0)),
                            poll * 15.0, 60.0, remember=5)
    assert len(state.last_seen) == len(state.shown) + 5
    assert ("P", "browser") in state.shown and ("X29", "browser") in state.shown
    assert ("X0", "browser") not in state.totals
    kept = {labels for labels in state.last_seen if labels not in state.shown}
    # X{k} was last seen when it ended, at poll k + 1: X24 to X29 are still shown
    assert kept == {(f"X{i}", "browser") for i in range(19, 24)}  # the most recently seen


def test_integer_ids_whose_hashes_collide_are_distinct_sessions() -> None:
    """Python's hash of an int is not keyed (hash(-1) == hash(-2), hash(2**61 - 1) == 0), so
    a gateway numbering its sessions must not have two of them taken for one."""
    ids: list[str | int] = [-1, -2, 0, 2**61 - 1, 1, "1"]
    sessions = [PerspectiveSession(id=i, project="P", session_scope="browser", uptime=1000)
                for i in ids]
    assert len(perspective_held(sessions)) == len(ids)
    change = compare(perspective_held(sessions[0:1]), perspective_held(sessions[1:2]))
    assert {k: (c.started, c.ended) for k, c in change.items()} == {("P", "browser"): (1, 1)}
