"""Prometheus rules: valid for promtool and vmalert, unit-tested with promtool (one exporter,
replicas, two jobs, a site's threshold overrides), every alert tested both ways and linked
to its runbook section."""

from __future__ import annotations

import functools
import random
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import demo_config, demo_simulator, parse_arguments
from exporter.clock import Clock
from exporter.config import Config, build_config
from exporter.digest.lifecycle import BUCKETS
from exporter.standins import simulate
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.web.appkeys import FLEET
from exporter.web.http import create_app
from tests.conftest import ClientFactory, ServerFactory, eventually, require_tool
from tests.fakes import SteppedClock
from tests.victoria import victoria_with_rules

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
RULES = RULES_DIR / "ignition.rules.yml"
SITE_THRESHOLDS = RULES_DIR / "examples" / "site-thresholds.yml"
RULE_TESTS = (RULES_DIR / "ignition.rules.test.yml", RULES_DIR / "ignition.thresholds.test.yml")
RUNBOOK = ROOT / "docs" / "runbook.md"


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool(tool), *args], capture_output=True, text=True,
                          cwd=RULES_DIR, timeout=120)


def alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


@pytest.mark.parametrize("rules", [RULES, SITE_THRESHOLDS], ids=lambda p: p.name)
def test_rules_are_valid(rules: Path) -> None:
    result = run("promtool", "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_load_in_vmalert() -> None:
    """VictoriaMetrics parses PromQL with its own MetricsQL parser and Go templates itself:
    the rules must load there too."""
    result = run("vmalert", "-dryRun", f"-rule={RULES}", f"-rule={SITE_THRESHOLDS}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tests", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(tests: Path) -> None:
    result = run("promtool", "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = [c for path in RULE_TESTS for t in yaml.safe_load(path.read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        name = alert["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never tested silent"


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings: lower case, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_has_severity_annotations_and_its_runbook_section() -> None:
    anchors = runbook_anchors()
    for alert in alerts():
        assert alert["alert"].startswith("Ignition")
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"]
        assert annotations["runbook_url"] == f"docs/runbook.md#{alert['alert'].lower()}"
        assert alert["alert"].lower() in anchors, f"docs/runbook.md has no {alert['alert']}"


def test_every_default_threshold_is_used_by_its_alert() -> None:
    """A threshold series for an alert that does not read it would be a silent no-op."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    defaults = {r["labels"]["alert"] for g in groups for r in g["rules"]
                if r.get("record") == "ignition:alert_threshold"}
    recorded = "\n".join(r["expr"] for g in groups for r in g["rules"] if "record" in r)
    assert defaults
    for name in defaults:
        assert f'alert="{name}"' in recorded, f"no threshold rule reads {name}'s"
        assert name in {a["alert"] for a in alerts()}


def test_age_bounds_are_the_exporters_buckets() -> None:
    """The age threshold selects its bucket from a table of the bounds: it must list the
    exporter's buckets exactly, each `le` naming its own value."""
    [table] = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"]
               for r in g["rules"]
               if r.get("record") == "le:ignition_perspective_session_age_seconds:bound"]
    pairs = re.findall(r'vector\(([^)]+)\), "le", "([^"]+)"', table)
    assert [float(value) for value, _ in pairs] == [*BUCKETS, float("inf")]
    assert all(float(value) == float(le) for value, le in pairs)


def replicated(*samples: str, minutes: int = 10) -> str:
    """The samples as two replicas and a second job would store them, every 15 s up to now."""
    now = int(time.time() * 1000)
    copies = ('instance="exp-1:9871", job="ignition"', 'instance="exp-2:9871", job="ignition"',
              'instance="exp-1:9871", job="ignition-dr"')
    return "\n".join(f"{name}{{{labels}, {copy}}} {value} {t}"
                     for t in range(now - minutes * 60_000, now + 1, 15_000)
                     for copy in copies
                     for name, labels, value in (s.split("|") for s in samples)) + "\n"


@pytest.mark.slow
async def test_rules_evaluate_in_victoriametrics_with_replicas(tmp_path: Path) -> None:
    """vmalert evaluates every rule against a real VictoriaMetrics holding three copies of
    each series: no rule fails (no many-to-many join), sums are not tripled, and a site's
    thresholds apply."""
    async with victoria_with_rules(tmp_path, [RULES, SITE_THRESHOLDS]) as victoria:
        await victoria.import_text(replicated(
            'ignition_perspective_sessions|gateway="plant-a", project="P", scope="browser", '
            'username="jsmith"|95',
            'ignition_perspective_sessions|gateway="plant-a", project="P", scope="designer", '
            'username="eng"|20',
            'ignition_perspective_session_limit|gateway="plant-a"|100',
            'ignition_up|gateway="plant-a"|1',
            'ignition_exporter_build_info|version="0.1.0"|1',
            'ignition_perspective_session_age_seconds_bucket|gateway="plant-a", project="P", '
            'scope="browser", le="259200.0"|2',
            'ignition_perspective_session_age_seconds_bucket|gateway="plant-a", project="P", '
            'scope="browser", le="604800.0"|3',
            'ignition_perspective_session_age_seconds_bucket|gateway="plant-a", project="P", '
            'scope="browser", le="+Inf"|5'))
        await victoria.wait_for_value(  # vmalert's first rounds, chained
            'gateway:ignition_perspective_licence_usage:ratio{gateway="plant-a"}', 0.95,
            timeout=90)
        await victoria.wait_for_value(
            'gateway_project:ignition_perspective_sessions:sum{gateway="plant-a"}', 115)
        await victoria.wait_for_value(  # the site's default, not the shipped 5
            'gateway_username:ignition_perspective_sessions:threshold{username="jsmith"}', 8)
        age = await victoria.wait_for_value(
            'gateway_project_le:ignition_perspective_session_age_seconds:threshold', 604800)
        assert age["metric"]["le"] == "604800"
        [older] = await victoria.wait_for_query(  # 2 sessions over 7 days, for: 1h
            'ALERTS{alertname="IgnitionSessionsOpenTooLong", alertstate="pending"}')
        assert (older["metric"]["gateway"], older["metric"]["project"]) == ("plant-a", "P")
        rules = await victoria.rules()
        assert len(rules) == sum(len(g["rules"]) for path in (RULES, SITE_THRESHOLDS)
                                 for g in yaml.safe_load(path.read_text())["groups"])
        failing = [(r["name"], r["lastError"]) for r in rules
                   if r["health"] != "ok" or r["lastError"]]
        assert not failing, failing


# --- sample data (the demo, `simulate`), under the shipped rules -------------------------------

SAMPLE_MINUTES = 40
SCRAPE_EVERY = 15  # seconds: Prometheus' default scrape interval
TARGET = {"job": "ignition", "instance": "demo:9871"}
# A simulated plant, and the configuration that polls it given the gateway's root URL.
Plant = tuple[GatewaySimulator, Callable[[str], Config]]


def the_demo(clock: Clock) -> Plant:
    """`--demo`: its plant and its configuration."""
    return demo_simulator(clock), lambda root: demo_config(root + WEBDEV_PATH)


def simulate_defaults(clock: Clock) -> Plant:
    """`ignition-exporter simulate` without options, polled with the configuration it prints,
    as a newcomer would (digesting in the worker thread, as the demo's plant here)."""
    args = parse_arguments(["simulate"])

    def config(root: str) -> Config:
        printed = yaml.safe_load(simulate.exporter_config(root, args))
        return replace(build_config(printed, {}), digest_processes=0)

    return simulate.simulator(args, clock), config


async def sample_scrapes(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory,
                         plant: Callable[[Clock], Plant], minutes: int) -> list[str]:
    """The exporter's `/metrics` every 15 s for `minutes` of a simulated plant's time: the
    plant and the exporter polling it as `plant` sets them up, on a clock the test moves a
    poll at a time."""
    clock = SteppedClock()
    simulator, config_for = plant(clock)
    gateway = await aiohttp_server(simulator_app(simulator))
    config = config_for(str(gateway.make_url("")).rstrip("/"))
    client = await aiohttp_client(create_app(config, clock=clock, rng=random.Random(0)))
    fleet = client.app[FLEET]
    interval = config.gateways[0].poll_interval
    scrapes = []
    for poll in range(1, round(minutes * 60 / interval) + 1):
        await clock.step(interval)
        await eventually(lambda poll=poll: fleet.statuses()[0].polls == poll, what=f"poll {poll}")
        if poll * interval % SCRAPE_EVERY == 0:
            scrapes.append(await (await client.get("/metrics")).text())
    return scrapes


def selector(name: str, labels: dict[str, str]) -> str:
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for k, v in sorted(labels.items()))
    return f"{name}{{{', '.join(escaped)}}}"


def input_series(scrapes: list[str]) -> list[dict[str, str]]:
    """The scrapes as promtool's input series, as Prometheus would store them: the target's
    labels and `up` added, and a series gone from a scrape marked stale there."""
    values: dict[str, list[str]] = {selector("up", TARGET): ["1"] * len(scrapes)}
    stored_as = functools.lru_cache(maxsize=None)(_stored_as)
    for i, text in enumerate(scrapes):
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)  # the exporter sends no timestamps
                key = stored_as(series)
                values.setdefault(key, ["_"] * i + ["stale"] * (len(scrapes) - i))[i] = \
                    repr(float(value)).replace("inf", "Inf").replace("nan", "NaN")
    return [{"series": key, "values": " ".join(v)} for key, v in values.items()]


def _stored_as(series: str) -> str:
    """A sample's name and labels, read by the client library's parser, as the selector of
    the series Prometheus stores. Read once per series rather than once per sample: the
    parser takes seconds over the hundred thousand samples of 40 minutes of scrapes."""
    [family] = text_string_to_metric_families(series + " 0\n")
    [sample] = family.samples
    return selector(sample.name, {**sample.labels, **TARGET})


@pytest.mark.slow
@pytest.mark.parametrize("plant", [the_demo, simulate_defaults], ids=["demo", "simulate"])
async def test_sample_data_raises_no_alert(
        tmp_path: Path, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory,
        plant: Callable[[Clock], Plant]) -> None:
    """The demo's users, then `simulate`'s, used to hold more than five sessions each: under
    the shipped rules `make demo` raised IgnitionUserTooManySessions within a minute (firing
    15 minutes later), and so did a newcomer's first `simulate`. No alert may be pending or
    firing at any minute of the first 40 of either."""
    promtool = require_tool("promtool")
    scrapes = await sample_scrapes(aiohttp_server, aiohttp_client, plant, SAMPLE_MINUTES)
    tests = tmp_path / "sample.test.yml"
    tests.write_text(yaml.safe_dump({
        "rule_files": [str(RULES)], "evaluation_interval": f"{SCRAPE_EVERY}s",
        "tests": [{"name": plant.__name__, "interval": f"{SCRAPE_EVERY}s",
                   "input_series": input_series(scrapes),
                   "promql_expr_test": [{"expr": "ALERTS", "eval_time": f"{minute}m",
                                         "exp_samples": []}
                                        for minute in range(1, SAMPLE_MINUTES + 1)]}]}))
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=300)
    # promtool lists what a failed test got on stderr
    raised = sorted(set(re.findall(r'alertname="(\w+)", alertstate="(\w+)"',
                                   result.stdout + result.stderr)))
    assert result.returncode == 0, (raised, result.stdout[-3000:], result.stderr[-2000:])


def test_a_refused_configuration_reload_raises_an_alert() -> None:
    """A reload with any problem is refused and `ignition_exporter_config_last_reload_successful`
    goes to 0 (README, Reloading the configuration), but `systemctl reload` answers success
    whatever happens and the log line is read by nobody: the gateway the engineer just added
    is never polled, and the broken file only shows at the next restart, when the unit's
    `ExecStartPre=--check-config` keeps the exporter from starting at all. Prometheus and
    Alertmanager ship an alert for exactly this (PrometheusBadConfig,
    AlertmanagerFailedReload); no shipped rule reads the gauge."""
    watching = [rule["alert"] for rule in alerts()
                if "ignition_exporter_config_last_reload_successful" in rule["expr"]]
    assert watching, "no alert fires while the exporter runs on a configuration it refused"


def test_the_runbook_tells_a_wheel_install_how_to_get_the_thresholds_example() -> None:
    """`ignition-exporter runbook` prints the runbook for a site that installed a wheel,
    which has no `rules/examples/site-thresholds.yml`: five times it sends the reader to that
    file to change a threshold, and never to `ignition-exporter site-thresholds`, which
    prints it."""
    text = RUNBOOK.read_text(encoding="utf-8")
    assert "rules/examples/site-thresholds.yml" not in text or \
        "ignition-exporter site-thresholds" in text, (
            "the runbook names rules/examples/site-thresholds.yml but not "
            "`ignition-exporter site-thresholds`")
