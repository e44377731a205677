"""The fleet: one task per gateway, one worker thread for every gateway's CPU work."""

from __future__ import annotations

import threading

import aiohttp
import pytest

from exporter.clock import SystemClock
from exporter.config import Config, GatewayConfig
from exporter.fleet import Fleet
from exporter.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.sources import webdev
from tests.conftest import FakeClock, ServerFactory, eventually


async def test_gateways_decode_off_the_event_loop_and_stop_cleanly(
        aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await aiohttp_server(simulator_app(GatewaySimulator(clock=FakeClock())))
    url = str(server.make_url(WEBDEV_PATH))
    config = Config(gateways=tuple(GatewayConfig(name=f"gw{i}", url=url, poll_interval=0.2,
                                                 timeout=0.2) for i in range(3)))
    threads: set[str] = set()
    real = webdev.decode_webdev

    def recording(body: bytes, gateway: str) -> object:
        threads.add(threading.current_thread().name)
        return real(body, gateway)

    monkeypatch.setattr(webdev, "decode_webdev", recording)
    fleet = Fleet(config, SystemClock())
    assert [s.up for s in fleet.statuses()] == [False, False, False]
    async with aiohttp.ClientSession() as http:
        fleet.start(http)
        await eventually(lambda: all(s.polls >= 2 for s in fleet.statuses()), what="polls")
        await fleet.stop()
    assert all(s.up for s in fleet.statuses())
    assert threads == {"digest_0"}  # every poll's decoding, none on the event loop
    assert not any(t.name.startswith("digest") for t in threading.enumerate())
