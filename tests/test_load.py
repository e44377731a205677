"""Load and shutdown: the reliability contract's load run, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from bench.load import drive
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, fleet_app, simulator_app
from tests.conftest import FakeClock, ServerFactory
from tests.processes import ExporterProcess, write_config

GATEWAYS = 20


@pytest.mark.slow
async def test_two_hundred_clients_for_thirty_seconds(tmp_path: Path,
                                                      aiohttp_server: ServerFactory) -> None:
    simulators = {f"gw{i:02d}": GatewaySimulator(name=f"gw{i:02d}", seed=i)
                  for i in range(GATEWAYS)}
    server = await aiohttp_server(fleet_app(simulators))
    config = write_config(tmp_path, [
        {"name": name, "url": str(server.make_url(f"/{name}{WEBDEV_PATH}")), "timeout": "900ms"}
        for name in simulators])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="gw19"} 1.0')
        assert exporter.process is not None
        # From eight addresses, 25 clients each: within one address's share of connections.
        report = await drive(exporter.url, exporter.process.pid, clients=200, seconds=30,
                             sources=[f"127.0.0.{n}" for n in range(2, 10)])
        text = await exporter.metrics_text()
        assert await exporter.stop() == 0
    summary = report.summary()
    (tmp_path / "load-report.json").write_text(json.dumps(summary, indent=2))
    print("\nload report:", json.dumps(summary))
    assert report.requests > 1000
    assert report.failures == 0, report.failure_examples
    assert text.count("ignition_up{") == GATEWAYS and "ignition_up{gateway=\"gw00\"} 1.0" in text
    assert report.worst_poll_lag_seconds < 1.0, "polls fell a whole interval behind"
    assert report.rss_growth_after_warm_up_bytes < 16 * 2**20, summary["rss_samples_bytes"]


async def test_sigterm_finishes_the_answer_in_flight(tmp_path: Path,
                                                     aiohttp_server: ServerFactory) -> None:
    big = GatewaySimulator(seed=1, clock=FakeClock(), target_sessions=20_000)
    server = await aiohttp_server(simulator_app(big))
    config = write_config(tmp_path, [{"name": "big", "url": str(server.make_url(WEBDEV_PATH)),
                                      "timeout": "1s"}])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="big"} 1.0')
        assert exporter.process is not None
        async with aiohttp.ClientSession() as http, http.get(
                exporter.url + "/sessions", headers={"Accept-Encoding": "identity"}) as response:
            assert response.status == 200
            first = await response.content.read(1024)
            exporter.send(signal.SIGTERM)
            await asyncio.sleep(0.5)  # let the exporter begin to shut down meanwhile
            body = first + await response.read()
        assert len(json.loads(body)["perspective"]) == 20_000
        assert await exporter.stop(timeout=5) == 0  # a second SIGTERM is not sent
        with pytest.raises(aiohttp.ClientConnectionError):
            await exporter.get("/healthz")


async def test_a_repeated_sigterm_does_not_cut_shutdown_short(tmp_path: Path) -> None:
    async with ExporterProcess(tmp_path, "--demo") as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        assert exporter.process is not None
        for _ in range(5):
            exporter.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.01)
        assert await exporter.stop(timeout=5) == 0
