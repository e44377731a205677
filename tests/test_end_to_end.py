"""The real exporter process, real HTTP on loopback, promtool and a real Prometheus server."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from exporter.standins.faults import Fault, FaultyGateway, faulty_app
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from tests.conftest import FakeClock, ServerFactory, require_tool
from tests.metrics import total, values
from tests.processes import ExporterProcess, scraping, write_config


@pytest.fixture
async def frozen_gateway(aiohttp_server: ServerFactory) -> tuple[GatewaySimulator, str]:
    """A simulated gateway whose population does not change: counts are exact."""
    simulator = GatewaySimulator(seed=5, clock=FakeClock(), target_sessions=37)
    server = await aiohttp_server(simulator_app(simulator))
    return simulator, str(server.make_url(WEBDEV_PATH))


async def test_process_serves_metrics_that_promtool_accepts(
        tmp_path: Path, frozen_gateway: tuple[GatewaySimulator, str]) -> None:
    promtool = require_tool("promtool")
    _, url = frozen_gateway
    config = write_config(tmp_path, [{"name": "plant-a", "url": url}])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        text = await exporter.wait_for_metric('ignition_up{gateway="plant-a"} 1.0')
        assert total(text, "ignition_perspective_sessions") == 37
        check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        assert await exporter.stop() == 0


async def test_prometheus_scrapes_and_queries(
        tmp_path: Path, frozen_gateway: tuple[GatewaySimulator, str]) -> None:
    simulator, url = frozen_gateway
    expected_jsmith = sum(1 for u in simulator.iter_usernames() if u == "jsmith")
    config = write_config(tmp_path, [{"name": "plant-a", "url": url}])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="plant-a"} 1.0')
        async with scraping(tmp_path, exporter) as prometheus:
            result = await prometheus.wait_for_query(
                'sum(ignition_perspective_sessions{gateway="plant-a"})')
            assert float(result[0]["value"][1]) == 37
            result = await prometheus.query(
                'sum(ignition_perspective_sessions{username="jsmith"})')
            assert float(result[0]["value"][1]) == expected_jsmith
            result = await prometheus.query('up{job="ignition"}')
            assert float(result[0]["value"][1]) == 1


def first_polls_ended(errors: dict[str, float]) -> bool:
    return all(errors[key] >= 1 for key in ("error500:http", "garbage:decode", "slow:timeout"))


async def test_broken_gateways_are_reported_and_the_exporter_keeps_serving(
        tmp_path: Path, aiohttp_server: ServerFactory,
        frozen_gateway: tuple[GatewaySimulator, str]) -> None:
    urls = {}
    for fault in (Fault.HTTP_500, Fault.GARBAGE, Fault.SLOW):
        gateway = FaultyGateway(GatewaySimulator(seed=1), mode=fault, delay=30)
        urls[fault] = str((await aiohttp_server(faulty_app(gateway))).make_url(WEBDEV_PATH))
    config = write_config(tmp_path, [
        {"name": "good", "url": frozen_gateway[1]},
        {"name": "error500", "url": urls[Fault.HTTP_500]},
        {"name": "garbage", "url": urls[Fault.GARBAGE]},
        {"name": "slow", "url": urls[Fault.SLOW], "timeout": "500ms"},
    ])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        # Each gateway's first poll, in whatever order they end: the slow gateway's timeout
        # comes first or last, the answers wait for the worker process in turn.
        text = await exporter.wait_for_metrics(
            lambda text: first_polls_ended(values(text, "ignition_exporter_poll_errors_total"))
            and values(text, "ignition_up")["good"] == 1, "every gateway's first poll")
        assert values(text, "ignition_up") == {"good": 1, "error500": 0, "garbage": 0,
                                               "slow": 0}
        errors = values(text, "ignition_exporter_poll_errors_total")
        assert errors["error500:http"] >= 1
        assert errors["garbage:decode"] >= 1
        assert errors["slow:timeout"] >= 1
        assert errors["good:http"] == 0
        status, _ = await exporter.get("/healthz")
        assert status == 200
        assert await exporter.stop() == 0
    log = exporter.log.read_text()
    # One line per state change, not one per poll.
    assert log.count('msg="gateway down" gateway=error500') == 1
    assert "reason=http" in log and "reason=decode" in log and "reason=timeout" in log


async def test_demo_mode_and_sigint(tmp_path: Path) -> None:
    async with ExporterProcess(tmp_path, "--demo") as exporter:
        text = await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        assert total(text, "ignition_perspective_sessions") > 0
        assert total(text, "ignition_client_sessions") > 0
        assert await exporter.stop(signal.SIGINT) == 0


async def test_check_config_and_bad_config_exit_codes(tmp_path: Path) -> None:
    import sys
    good = write_config(tmp_path, [{"name": "a", "url": "http://a"}])
    run = subprocess.run([sys.executable, "-m", "exporter", "--config", good, "--check-config"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    assert "OK, 1 gateway(s): a" in run.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("gateways:\n  - name: a\n    url: http://a\n    poll_intervall: 5s\n")
    run = subprocess.run([sys.executable, "-m", "exporter", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "gateways[0].poll_intervall: unknown key" in run.stderr
