"""Load on loopback: many clients scraping /metrics and querying /sessions of a running
exporter while it polls its gateways, bounded in time and in request count.

Used by tests/test_load.py with the numbers of the reliability contract (200 clients, 30 s,
20 gateways polled every second), and runnable by hand against any exporter:

    python bench/load.py --url http://127.0.0.1:9871 --pid 12345 --clients 200 --seconds 30 \
        --source 127.0.0.2 --source 127.0.0.3 --source 127.0.0.4 --source 127.0.0.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

MAX_REQUESTS = 2_000_000  # a hard cap on top of the time bound
WARM_UP_SHARE = 0.3
_LAG = re.compile(r'^ignition_exporter_poll_lag_seconds\{gateway="[^"]*"\} (\S+)$', re.MULTILINE)
PATHS = ("/metrics", "/sessions?username=op.*", "/metrics", "/sessions?kind=vision&project=Q.*")


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: int = 0
    failures: int = 0
    failure_examples: list[str] = field(default_factory=list)
    worst_poll_lag_seconds: float = 0.0
    rss_samples_bytes: list[int] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def rss_growth_after_warm_up_bytes(self) -> int:
        """Median resident memory of the last third minus that of the third after warm-up:
        medians, because the allocator's RSS swings a few MB from second to second."""
        start = int(len(self.rss_samples_bytes) * WARM_UP_SHARE)
        settled = self.rss_samples_bytes[start:]
        third = len(settled) // 3
        if third == 0:
            return 0
        return int(statistics.median(settled[-third:]) - statistics.median(settled[:third]))

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out.update(requests_per_second=round(self.requests_per_second, 1),
                   rss_growth_after_warm_up_bytes=self.rss_growth_after_warm_up_bytes)
        return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _client(http: aiohttp.ClientSession, url: str, deadline: float, offset: int,
                  report: LoadReport) -> None:
    turn = offset
    while time.monotonic() < deadline and report.requests < MAX_REQUESTS:
        path = PATHS[turn % len(PATHS)]
        turn += 1
        report.requests += 1
        try:
            async with http.get(url + path) as response:
                await response.read()
                ok = response.status == 200
                problem = f"{path}: HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, problem = False, f"{path}: {type(exc).__name__} {exc}"
        if not ok:
            report.failures += 1
            if len(report.failure_examples) < 5:
                report.failure_examples.append(problem)


async def _monitor(http: aiohttp.ClientSession, url: str, pid: int, deadline: float,
                   report: LoadReport) -> None:
    while time.monotonic() < deadline:
        report.rss_samples_bytes.append(rss_bytes(pid))
        try:
            async with http.get(url + "/metrics") as response:
                text = await response.text()
            lags = [float(v) for v in _LAG.findall(text)]
            report.worst_poll_lag_seconds = max([report.worst_poll_lag_seconds, *lags])
        except (aiohttp.ClientError, TimeoutError):
            pass  # the clients count failures; the monitor only samples
        await asyncio.sleep(1)


async def drive(url: str, pid: int, clients: int = 200, seconds: float = 30.0,
                sources: Sequence[str] = ()) -> LoadReport:
    """`clients` at once, spread over the local `sources` addresses (none: the system's
    choice, one address), as many clients on many hosts would be: the exporter holds one
    address to its share of connections (`--web.max-connections-per-address`)."""
    report = LoadReport(clients=clients, seconds=seconds)
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    async with contextlib.AsyncExitStack() as stack:
        https = [await stack.enter_async_context(aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(
                limit=clients + 1, local_addr=(source, 0) if source else None)))
            for source in sources or [None]]
        await asyncio.gather(_monitor(https[0], url, pid, deadline, report),
                             *(_client(https[i % len(https)], url, deadline, i, report)
                               for i in range(clients)))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the exporter, e.g. http://127.0.0.1:9871")
    parser.add_argument("--pid", type=int, required=True, help="the exporter's process id")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--source", action="append", default=[], metavar="ADDRESS",
                        help="a local address to send from; repeat it to spread the clients "
                             "(one address holds at most --web.max-connections-per-address)")
    args = parser.parse_args()
    report = asyncio.run(drive(args.url.rstrip("/"), args.pid, args.clients, args.seconds,
                               args.source))
    print(json.dumps(report.summary(), indent=2))


if __name__ == "__main__":
    main()
