"""Real processes for end-to-end tests: the exporter itself and a Prometheus server.

Both are started on loopback, waited for without blocking the event loop (the gateway
stand-ins they talk to run in the test's own loop), and always stopped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import require_tool
from tests.metrics import values

# The start-up line, in logfmt or as a JSON line (--log.format json).
_LISTENING = re.compile(r'msg=listening address=(\S+)|"msg": "listening", "address": "([^"]+)"')


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a live process: a zombie has ended, only its parent has not looked."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def forkservers() -> list[int]:
    """multiprocessing's forkserver started by this process (one at most, while it runs)."""
    return [pid for pid in children(os.getpid())
            if "multiprocessing.forkserver" in command_line(pid) and running(pid)]


def digest_workers() -> list[int]:
    """The worker processes this process runs: every process forks from the forkserver."""
    return [pid for server in forkservers() for pid in children(server) if running(pid)]


def write_config(tmp_path: Path, gateways: list[dict[str, object]]) -> str:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"poll_interval": "1s", "gateways": gateways}))
    return str(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_for(check: Any, timeout: float, what: str, log: Path | None = None) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}")
        await asyncio.sleep(0.05)


class ExporterProcess:
    """`python -m exporter ARGS --listen 127.0.0.1:0`, its stderr kept in a file."""

    def __init__(self, tmp_path: Path, *args: str, name: str = "exporter",
                 client_ssl: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None,
                 env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.log = tmp_path / f"{name}.log"
        self.args = [sys.executable, "-m", "exporter", *args, "--listen", "127.0.0.1:0"]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.signalled = False
        self.client_ssl = client_ssl  # how test requests reach a TLS exporter
        self.headers = headers or {}  # e.g. credentials, sent with every test request
        self.env = {**os.environ, **(env or {})}
        self.preexec = preexec  # run in the child before the exporter starts (resource limits)

    async def __aenter__(self) -> ExporterProcess:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.args, stderr=log, stdout=log,
                                            stdin=subprocess.DEVNULL, env=self.env,
                                            preexec_fn=self.preexec)

        async def listening() -> str | None:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"exporter exited with {self.process.returncode}:\n"
                            + self.log.read_text(errors="replace"))
            match = _LISTENING.search(self.log.read_text(errors="replace"))
            return (match.group(1) or match.group(2)) if match else None

        self.url = await _wait_for(listening, 20, "the exporter to listen", self.log)
        return self

    def send(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.signalled = True

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Ask the exporter to stop (once) and wait for its exit status."""
        assert self.process is not None
        if self.process.poll() is None and not self.signalled:
            self.send(sig)

        async def exited() -> bool:
            assert self.process is not None
            return self.process.poll() is not None

        await _wait_for(exited, timeout, "the exporter to exit", self.log)
        return int(self.process.returncode)

    async def __aexit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, bytes]:
        kwargs.setdefault("ssl", self.client_ssl or True)
        kwargs.setdefault("headers", self.headers)
        async with aiohttp.ClientSession() as http, http.get(self.url + path, **kwargs) as r:
            return r.status, await r.read()

    async def metrics_text(self) -> str:
        return (await self.get("/metrics"))[1].decode()

    async def wait_for_metric(self, needle: str, timeout: float = 20) -> str:
        return await self.wait_for_metrics(lambda text: needle in text, f"{needle!r} in /metrics",
                                           timeout)

    async def wait_for_count(self, metric: str, key: str, at_least: float,
                             timeout: float = 20) -> str:
        """The first `/metrics` text where counter `metric` has reached `at_least` for `key`
        (as `metrics.values` names its series): a counter may pass any one value between two
        reads, so waiting for it to show exactly that value fails now and then."""
        return await self.wait_for_metrics(
            lambda text: values(text, metric).get(key, 0) >= at_least,
            f"{metric} {key} reaching {at_least:g}", timeout)

    async def wait_for_metrics(self, check: Callable[[str], bool], what: str,
                               timeout: float = 20) -> str:
        """The first `/metrics` text that `check` accepts."""
        async def found() -> str | None:
            text = await self.metrics_text()
            return text if check(text) else None

        return str(await _wait_for(found, timeout, what, self.log))


class QueryAPI:
    """Instant queries over Prometheus' HTTP API, which VictoriaMetrics serves too."""

    url: str
    log: Path

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(
                self.url + "/api/v1/query", params={"query": promql}) as response:
            body = json.loads(await response.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    async def wait_for_query(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        async def answered() -> list[dict[str, Any]] | None:
            return await self.query(promql) or None

        return list(await _wait_for(answered, timeout, f"PromQL {promql!r} to return data",
                                    self.log))


class PrometheusServer(QueryAPI):
    """A real Prometheus (Debian's `prometheus`) scraping the given targets every second."""

    def __init__(self, tmp_path: Path, scrape_configs: list[dict[str, Any]],
                 rule_files: list[str] | None = None) -> None:
        self.binary = require_tool("prometheus")
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "prometheus.yml"
        document: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        if rule_files:
            document["rule_files"] = rule_files
        self.config.write_text(yaml.safe_dump(document))
        self.log = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> PrometheusServer:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http, \
                        http.get(self.url + "/-/ready") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await _wait_for(ready, 30, "Prometheus to be ready", self.log)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def scraping(tmp_path: Path, exporter: ExporterProcess) -> PrometheusServer:
    """A real Prometheus scraping the running exporter every second, as job `ignition`."""
    return PrometheusServer(tmp_path, [{
        "job_name": "ignition",
        "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}],
    }])


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
