"""The exposition built from pollers' statuses: names, types, labels, escaping, lifetimes."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__, buildinfo
from exporter.config import GatewayConfig
from exporter.polling.poller import GatewayPoller
from exporter.sources import Reason
from exporter.web.collector import SessionCollector, build_info, session_families
from tests.conftest import FakeClock
from tests.fakes import ScriptedSource, down
from tests.payloads import document, perspective, snapshot_of, vision

GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=15, timeout=5,
                        stale_after=60)


def samples(pollers: list[GatewayPoller], clock: FakeClock) -> dict[tuple, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [p.status for p in pollers], clock))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def key(name: str, **labels: str) -> tuple:
    return name, tuple(sorted(labels.items()))


async def test_metric_contract(clock: FakeClock) -> None:
    snap = snapshot_of(document(
        [perspective("A", "jsmith", "P", "Browser", total=5000, active_pages=2, recent=10),
         perspective("B", "jsmith", "P", "browser", total=1000, last_comm=90_000, recent=5)],
        [vision("op", "P"), vision("eng", "P", designer=True, client_id="7C01")]))
    p = GatewayPoller(GATEWAY, ScriptedSource(clock, snap), idle_after=60, clock=clock)
    await p.poll_once()
    got = samples([p], clock)
    ps = {"gateway": "plant-a", "project": "P", "scope": "browser"}
    assert got[key("ignition_perspective_sessions", username="jsmith", **ps)] == 2
    assert got[key("ignition_perspective_active_pages", **ps)] == 3
    assert got[key("ignition_perspective_idle_sessions", **ps)] == 1
    assert got[key("ignition_perspective_recent_sent_bytes", **ps)] == 15
    assert got[key("ignition_perspective_sent_bytes_total", **ps)] == 6000
    assert got[key("ignition_client_sessions", gateway="plant-a", project="P", username="op",
                   kind="vision")] == 1
    assert got[key("ignition_client_sessions", gateway="plant-a", project="P", username="eng",
                   kind="designer")] == 1
    assert got[key("ignition_up", gateway="plant-a")] == 1
    assert got[key("ignition_exporter_poll_duration_seconds", gateway="plant-a")] == 0.25
    assert got[key("ignition_exporter_last_success_timestamp_seconds", gateway="plant-a")] \
        == clock.time()
    for reason in Reason:
        assert got[key("ignition_exporter_poll_errors_total", gateway="plant-a",
                       reason=str(reason))] == 0
    assert got[key("ignition_gateway_info", gateway="plant-a", system_name="Ignition-plant-a",
                   version="8.1.33", redundancy_role="")] == 1
    assert any(name == "ignition_exporter_build_info" for name, _ in got)
    for label in ("project", "scope"):
        assert got[key("ignition_exporter_folded_label_values", gateway="plant-a",
                       label=label)] == 0


async def test_logged_out_user_disappears_and_counter_keeps_value(clock: FakeClock) -> None:
    first = snapshot_of(document([perspective("A", "alice", total=100),
                                  perspective("B", "bob", total=50)]))
    second = snapshot_of(document([perspective("A", "alice", total=120)]))
    p = GatewayPoller(GATEWAY, ScriptedSource(clock, first, second), idle_after=60, clock=clock)
    await p.poll_once()
    await p.poll_once()
    got = samples([p], clock)
    sessions = {k for k in got if k[0] == "ignition_perspective_sessions"}
    assert sessions == {key("ignition_perspective_sessions", gateway="plant-a", project="Line1",
                            scope="browser", username="alice")}
    assert got[key("ignition_perspective_sent_bytes_total", gateway="plant-a",
                   project="Line1", scope="browser")] == 170


async def test_failed_gateway_keeps_series_until_stale_then_drops_them(clock: FakeClock) -> None:
    snap = snapshot_of(document([perspective("A", total=100)], [vision()]))
    p = GatewayPoller(GATEWAY, ScriptedSource(clock, snap, down(Reason.TIMEOUT)),
                      idle_after=60, clock=clock)
    await p.poll_once()
    await p.poll_once()
    got = samples([p], clock)
    assert got[key("ignition_up", gateway="plant-a")] == 0
    assert got[key("ignition_exporter_poll_errors_total", gateway="plant-a",
                   reason="timeout")] == 1
    assert any(k[0] == "ignition_perspective_sessions" for k in got)
    clock.advance(GATEWAY.stale_after + 1)
    got = samples([p], clock)
    assert not any(k[0] in ("ignition_perspective_sessions", "ignition_client_sessions",
                            "ignition_perspective_active_pages") for k in got)
    assert got[key("ignition_perspective_sent_bytes_total", gateway="plant-a",
                   project="Line1", scope="browser")] == 100
    assert got[key("ignition_exporter_poll_errors_total", gateway="plant-a",
                   reason="timeout")] == 1


async def test_awkward_label_values_round_trip(clock: FakeClock) -> None:
    names = ['O\'Brien "the boss"', "back\\slash", "multi\nline", "Jürgen Müller 山田",
             "with space", "tab\there"]
    snap = snapshot_of(document([perspective(str(i), name, project='Line "1"\\')
                                 for i, name in enumerate(names)]))
    p = GatewayPoller(GATEWAY, ScriptedSource(clock, snap), idle_after=60, clock=clock)
    await p.poll_once()
    got = samples([p], clock)
    users = {dict(labels)["username"] for name, labels in got
             if name == "ignition_perspective_sessions"}
    projects = {dict(labels)["project"] for name, labels in got
                if name == "ignition_perspective_sessions"}
    assert users == set(names)
    assert projects == {'Line "1"\\'}


async def test_session_limit_only_where_configured(clock: FakeClock) -> None:
    from dataclasses import replace
    limited = GatewayPoller(replace(GATEWAY, name="limited", session_limit=250),
                            ScriptedSource(clock, down()), idle_after=60, clock=clock)
    unlimited = GatewayPoller(GATEWAY, ScriptedSource(clock, down()), idle_after=60,
                              clock=clock)
    got = samples([limited, unlimited], clock)
    limits = {dict(labels)["gateway"]: value for (name, labels), value in got.items()
              if name == "ignition_perspective_session_limit"}
    assert limits == {"limited": 250}


async def test_stale_after_follows_each_gateways_configuration(clock: FakeClock) -> None:
    from dataclasses import replace
    pollers = [GatewayPoller(replace(GATEWAY, name="slow", stale_after=600),
                             ScriptedSource(clock, down()), idle_after=60, clock=clock),
               GatewayPoller(GATEWAY, ScriptedSource(clock, down()), idle_after=60,
                             clock=clock)]
    got = samples(pollers, clock)
    assert got[key("ignition_exporter_stale_after_seconds", gateway="slow")] == 600
    assert got[key("ignition_exporter_stale_after_seconds", gateway="plant-a")] == 60


async def test_gateway_never_polled_is_down(clock: FakeClock) -> None:
    p = GatewayPoller(GATEWAY, ScriptedSource(clock, down()), idle_after=60, clock=clock)
    got = samples([p], clock)
    assert got[key("ignition_up", gateway="plant-a")] == 0
    assert not any(k[0] == "ignition_exporter_last_success_timestamp_seconds" for k in got)


def test_build_info_names_version_revision_and_python() -> None:
    (sample,) = build_info().samples
    assert sample.value == 1
    assert sample.labels == {"version": __version__, "revision": buildinfo.revision(),
                             "pythonversion": platform.python_version()}


def test_revision_of_a_checkout_is_its_commit() -> None:
    """Run from this source tree (no stamp from a wheel build), git is asked."""
    root = Path(buildinfo.__file__).resolve().parent.parent
    git = shutil.which("git")
    head = subprocess.run([git, "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=30) if git else None
    if head is None or head.returncode != 0:
        assert buildinfo.revision() == "unknown"
        pytest.skip("not a git checkout, or no git: the revision is unknown")
    assert buildinfo.revision() == head.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", buildinfo.revision())


def test_the_byte_counter_says_what_the_readme_says() -> None:
    """Ignition documents `totalBytesSent` as the bytes a session sent to the gateway (8.0,
    8.1 and 8.3 alike). The HELP said so and the README only "bytes sent by sessions"; both
    now say the same, and name the field, so a reader can check it against the gateway."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    row = next(line for line in readme.splitlines()
               if line.startswith("| `ignition_perspective_sent_bytes_total` |"))
    meaning = row.split("|")[4].replace("`", "").strip()
    families = session_families([], 0.0)
    (sent,) = [f for f in families if f.name == "ignition_perspective_sent_bytes"]
    assert meaning.split(" (")[0].lower() == sent.documentation.split(" (")[0].lower() == \
        "bytes sent to the gateway by perspective sessions"
    assert "totalBytesSent" in meaning and "totalBytesSent" in sent.documentation


async def test_the_folded_series_counter_never_goes_down_when_a_gateway_leaves(
        clock: FakeClock) -> None:
    """`ignition_exporter_folded_series_total` had no gateway label: it was the sum of every
    running gateway's count since it started. A reload that removes a gateway (or starts one
    afresh, its settings changed) took that gateway's share out of the sum, so the counter
    went down without going to zero, and `rate()` read the drop as a reset and counted the
    whole remaining value again as new folds. Per gateway, a series leaves with its
    gateway, and every series that stays keeps counting up."""
    many = snapshot_of(document([perspective(f"s{n}", f"user{n}") for n in range(6)]))
    pollers = [GatewayPoller(GatewayConfig(name=name, url="http://gw", poll_interval=15,
                                           timeout=5, stale_after=60),
                             ScriptedSource(clock, many), idle_after=60, clock=clock,
                             max_series=2)
               for name in ("plant-a", "plant-b")]
    for poller in pollers:
        await poller.poll_once()
    name = "ignition_exporter_folded_series_total"
    before = {k: v for k, v in samples(pollers, clock).items() if k[0] == name}
    after = {k: v for k, v in samples(pollers[1:], clock).items() if k[0] == name}
    plant_b = key(name, gateway="plant-b", metric="ignition_perspective_sessions")
    assert before[plant_b] > 0 and after.keys() < before.keys()
    assert all(value >= before[series] for series, value in after.items())
