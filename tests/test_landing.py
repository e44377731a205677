"""The landing page: failing gateways first, how long ago each answered, and example links
that return data, checked against the demo running as a real process."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.config import GatewayConfig
from exporter.polling.poller import GatewayPoller, GatewayStatus
from exporter.sources import Reason, SourceError
from exporter.web.landing import ago, render_landing
from tests.conftest import FakeClock
from tests.fakes import ScriptedSource
from tests.payloads import document, perspective, snapshot_of, vision
from tests.processes import ExporterProcess

GATEWAY = GatewayConfig(name="plant-a", url="http://gw", poll_interval=15, timeout=5,
                        stale_after=60)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s ago"), (42.7, "42 s ago"), (119, "119 s ago"), (120, "2 min ago"),
    (7199, "119 min ago"), (7200, "2 h 0 min ago"), (3 * 3600 + 600, "3 h 10 min ago"),
    (2 * 86400, "2 d ago"), (-5, "0 s ago"),
])
def test_ago(seconds: float, text: str) -> None:
    assert ago(seconds) == text


async def test_failing_gateways_first_with_time_since_last_answer(clock: FakeClock) -> None:
    snap = snapshot_of(document([perspective("a", "jsmith", "Line 1", "browser")], []))
    good = GatewayPoller(GATEWAY, ScriptedSource(clock, snap), idle_after=60, clock=clock)
    await good.poll_once()
    broken = GatewayPoller(replace(GATEWAY, name="plant-b"),
                           ScriptedSource(clock, snap, SourceError("plant-b", Reason.AUTH,
                                                                   "HTTP 401")),
                           idle_after=60, clock=clock)
    await broken.poll_once()
    await broken.poll_once()
    waiting = GatewayStatus(replace(GATEWAY, name="plant-c"))
    clock.advance(90)
    html = render_landing([good.status, waiting, broken.status], clock.time(), "1.0")
    names = re.findall(r'<tr><td><a href="/sessions\?gateway=[^"]+">([^<]+)</a>', html)
    assert names == ["plant-b", "plant-c", "plant-a"]
    rows = {name: row for name, row in zip(names, html.split("<tr><td>")[1:], strict=True)}
    assert "<td>down</td>" in rows["plant-b"] and "90 s ago" in rows["plant-b"]
    assert "auth: HTTP 401" in rows["plant-b"]
    assert "<td>never</td>" in rows["plant-c"]
    assert "<td>up</td>" in rows["plant-a"] and "90 s ago" in rows["plant-a"]


async def test_examples_come_from_the_data(clock: FakeClock) -> None:
    snap = snapshot_of(document(
        [perspective(str(i), user, project, "browser") for i, (user, project) in enumerate([
            ("Unauthenticated", "Tank Farm"), ("Unauthenticated", "Tank Farm"),
            ("k.weber", "Tank Farm"), ("k.weber", "Boilers"), ("ops", "Tank Farm")])],
        [vision("k.weber", "Boilers")]))
    poller = GatewayPoller(GATEWAY, ScriptedSource(clock, snap), idle_after=60, clock=clock)
    await poller.poll_once()
    html = render_landing([poller.status], clock.time(), "1.0")
    assert '/sessions?username=k%5C..%2A">/sessions?username=k\\..*</a>' in html
    assert "/sessions?project=Tank.*&amp;kind=perspective</a>" in html
    assert ">/sessions?kind=vision</a>" in html
    clock.advance(GATEWAY.stale_after + 1)  # nothing held any more: no examples
    assert "/sessions?username" not in render_landing([poller.status], clock.time(), "1.0")


@pytest.mark.slow
async def test_every_link_on_the_demo_landing_page_returns_data(tmp_path: Path) -> None:
    async with ExporterProcess(tmp_path, "--demo") as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        status, page = await exporter.get("/")
        assert status == 200
        links = sorted(set(re.findall(r'href="([^"]+)"', page.decode())))
        queries = [link.replace("&amp;", "&") for link in links if "?" in link]
        assert len(queries) >= 4, links  # the gateway link and the examples
        for link in links:
            status, body = await exporter.get(link.replace("&amp;", "&"))
            assert status == 200 and body, link
            if link.startswith("/sessions"):
                answer = json.loads(body)
                held = [s for kind in ("perspective", "vision") for s in answer.get(kind, [])]
                assert held, f"{link} returned no sessions"
        assert await exporter.stop() == 0


async def test_examples_come_from_the_gateway_holding_most_sessions(clock: FakeClock) -> None:
    """Found by each gateway's digest, not counted over every session held at each request
    (73 ms a request for 100,000 sessions, on the event loop every scrape shares)."""
    pollers = []
    for name, users in (("small", ["zed"] * 3), ("large", ["ann", "bob", "bob", "Unauthenticated",
                                                          "Unauthenticated", "Unauthenticated"])):
        snap = snapshot_of(document([perspective(f"{name}{i}", user, "Tank Farm", "browser")
                                     for i, user in enumerate(users)]))
        gateway = GatewayConfig(name=name, url="http://gw", poll_interval=15, timeout=5,
                                stale_after=60)
        poller = GatewayPoller(gateway, ScriptedSource(clock, snap), idle_after=60, clock=clock)
        await poller.poll_once()
        pollers.append(poller)
    assert pollers[1].status.perspective.common == ("bob", "Tank Farm")  # placeholders aside
    html = render_landing([p.status for p in pollers], clock.time(), "1.0")
    assert ">/sessions?username=bo.*</a>" in html and "username=ze" not in html
