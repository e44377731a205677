"""The server's limits on the real exporter process: idle sockets under a low open-file limit,
the shutdown bound with a slow reader, and a port in use. Loopback only; every test opens a
bounded number of sockets and waits a bounded time."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from tests.conftest import FakeClock, ServerFactory
from tests.processes import ExporterProcess, write_config

pytestmark = pytest.mark.slow
resource = pytest.importorskip("resource")

IDLE_SOCKETS = 300
OPEN_FILES = 256
# Idle sockets come from this many loopback addresses, each within its share (64 by default),
# so it is the whole cap that they fill.
IDLE_ADDRESSES = 10


def low_open_file_limit() -> None:
    """In the child: a soft and hard limit of 256, as a cramped service manager might set."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def log_lines(exporter: ExporterProcess, needle: str) -> list[str]:
    return [line for line in exporter.log.read_text().splitlines() if needle in line]


async def test_idle_sockets_do_not_take_the_exporter_offline(tmp_path: Path) -> None:
    """With 1,024 files, 1,500 idle sockets used to make every scrape time out and log
    18,000 traceback lines; here 300 sockets against a limit of 256."""
    async with ExporterProcess(tmp_path, "--demo", preexec=low_open_file_limit) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        host, port = exporter.url.removeprefix("http://").rsplit(":", 1)
        idle = []
        try:
            async with asyncio.timeout(60):
                for i in range(IDLE_SOCKETS):
                    idle.append(await asyncio.open_connection(
                        host, int(port), local_addr=(f"127.0.0.{2 + i % IDLE_ADDRESSES}", 0)))
            status, body = await exporter.get("/metrics", timeout=aiohttp.ClientTimeout(10))
        finally:
            for _, writer in idle:
                writer.close()
        assert status == 200 and b"ignition_up" in body
        assert len(log_lines(exporter, "connection limit reached")) == 1
        assert len(log_lines(exporter, "open file limit allows fewer connections")) == 1
        assert await exporter.stop() == 0
    text = exporter.log.read_text()
    assert "Traceback" not in text and "level=error" not in text, text[-3000:]


async def test_one_address_is_held_to_its_share_of_connections(tmp_path: Path) -> None:
    share = 8
    async with ExporterProcess(tmp_path, "--demo", "--web.max-connections-per-address",
                               str(share)) as exporter:
        host, port = exporter.url.removeprefix("http://").rsplit(":", 1)
        idle = [await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
                for _ in range(share + 1)]
        try:
            first, _ = idle[0]
            async with asyncio.timeout(10):  # dropped for the newest: EOF
                assert await first.read() == b""
            status, _ = await exporter.get("/healthz")
        finally:
            for _, writer in idle:
                writer.close()
        assert status == 200
        assert len(log_lines(exporter, "connection limit per address reached")) == 1
        assert await exporter.stop() == 0


async def test_stop_within_three_seconds_despite_a_slow_reader(
        tmp_path: Path, aiohttp_server: ServerFactory) -> None:
    """A client reading a large /sessions answer slowly held the exit to 6.1 s."""
    simulator = GatewaySimulator(seed=9, clock=FakeClock(), target_sessions=40_000)
    gateway = await aiohttp_server(simulator_app(simulator))
    config = write_config(tmp_path, [{"name": "big", "url": str(gateway.make_url(WEBDEV_PATH)),
                                      "poll_interval": "60s", "timeout": "30s"}])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="big"} 1.0', timeout=60)
        host, port = exporter.url.removeprefix("http://").rsplit(":", 1)
        with socket.socket() as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.settimeout(30)
            reader.connect((host, int(port)))
            reader.sendall(b"GET /sessions HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.recv(1024).startswith(b"HTTP/1.1 200")  # then reads no more
            loop = asyncio.get_running_loop()
            signalled = loop.time()
            status = await exporter.stop(signal.SIGTERM, timeout=15)
            exited_after = loop.time() - signalled
    assert status == 0
    assert exited_after < 3.0, f"exited {exited_after:.1f} s after SIGTERM"
    text = exporter.log.read_text()
    assert "Traceback" not in text and "level=error" not in text, text[-3000:]


def test_port_in_use_exits_3_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "a", "url": "http://127.0.0.1:1/x"}])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "exporter", "--config", config,
                               "--listen", f"127.0.0.1:{port}", "--log-level", "error"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"ignition-exporter: cannot listen on 127.0.0.1:{port}: another process is using it: "
        "stop that process or choose another --web.listen-address"]
