"""A real VictoriaMetrics (Debian's `victoria-metrics`) with `vmalert` evaluating rule files
against it and writing the recorded series back, on loopback, always stopped."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import require_tool
from tests.processes import QueryAPI, _wait_for, free_port


@contextlib.contextmanager
def _running(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Victoria(QueryAPI):
    """VictoriaMetrics' query API, its import endpoint, and vmalert's rule states."""

    def __init__(self, url: str, vmalert_url: str, log: Path) -> None:
        self.url, self.vmalert_url, self.log = url, vmalert_url, log

    @staticmethod
    async def get(url: str, **params: str) -> Any:
        """The JSON answer, or None unless 200."""
        async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
            return json.loads(await response.read()) if response.status == 200 else None

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The query over what VictoriaMetrics holds now. It makes what it ingests (imports,
        and what vmalert writes back) searchable only every ten seconds or so; a flush first
        spares each step of a chain of recording rules that wait."""
        async with aiohttp.ClientSession() as http, http.get(
                self.url + "/internal/force_flush") as response:
            assert response.status == 200, await response.text()
        return await super().query(promql)

    async def wait_for_value(self, promql: str, value: float, timeout: float = 30
                             ) -> dict[str, Any]:
        """The query's one series once it holds `value`. vmalert's chained rules settle over
        its first rounds: a rule reading another's series (a site's threshold over the
        shipped default) may first answer from a round where that series was not written
        yet."""
        async def settled() -> dict[str, Any] | None:
            result = await self.query(promql)
            return result[0] if len(result) == 1 and float(result[0]["value"][1]) == value \
                else None

        return dict(await _wait_for(settled, timeout, f"PromQL {promql!r} to be {value:g}",
                                    self.log))

    async def import_text(self, text: str) -> None:
        """Samples in the Prometheus text format, with timestamps."""
        async with aiohttp.ClientSession() as http, http.post(
                self.url + "/api/v1/import/prometheus", data=text.encode()) as response:
            assert response.status == 204, await response.text()

    async def rules(self) -> list[dict[str, Any]]:
        """vmalert's state of every rule: health and last error."""
        body = await self.get(self.vmalert_url + "/api/v1/rules")
        assert body, "vmalert did not answer /api/v1/rules"
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


@contextlib.asynccontextmanager
async def victoria_with_rules(tmp_path: Path, rule_files: Sequence[Path]
                              ) -> AsyncIterator[Victoria]:
    storage, evaluator = free_port(), free_port()
    url, vmalert_url = f"http://127.0.0.1:{storage}", f"http://127.0.0.1:{evaluator}"
    log = tmp_path / "vmalert.log"
    with _running([require_tool("victoria-metrics"), f"-storageDataPath={tmp_path / 'vm'}",
                   f"-httpListenAddr=127.0.0.1:{storage}", "-search.latencyOffset=0s",
                   "-search.disableCache"], tmp_path / "victoria-metrics.log"), \
            _running([require_tool("vmalert"), *(f"-rule={path}" for path in rule_files),
                      f"-datasource.url={url}", f"-remoteWrite.url={url}",
                      "-remoteWrite.flushInterval=200ms",
                      # nothing listens there: alerts are read from vmalert's API instead
                      f"-notifier.url=http://127.0.0.1:{free_port()}",
                      "-evaluationInterval=1s", f"-httpListenAddr=127.0.0.1:{evaluator}"],
                     log):
        victoria = Victoria(url, vmalert_url, log)

        async def ready() -> bool:
            try:
                return bool(await victoria.get(url + "/api/v1/labels")
                            and await victoria.get(vmalert_url + "/api/v1/rules"))
            except aiohttp.ClientError:
                return False

        await _wait_for(ready, 30, "VictoriaMetrics and vmalert", log)
        yield victoria
