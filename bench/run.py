"""The exporter's benchmark: every figure is a ratio against a baseline measured in the same run,
so the speed of the machine cancels out.

    python bench/run.py            # full sizes (a few minutes)
    python bench/run.py --quick    # small sizes, seconds: what the test suite runs

Prints a table and writes bench/results.json (or --output). Needs orjson (the ingest
yardstick; `pip install -e '.[test]'` brings it) and, for the scrape figures, wrk (Debian
`wrk`; an aiohttp client loop stands in when it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import re2

from bench.probes import ingest
from exporter.clock import SystemClock
from exporter.config import GatewayConfig
from exporter.filters import parse_query
from exporter.poller import GatewayPoller
from exporter.sessions_endpoint import render_sessions
from exporter.simulator import WEBDEV_PATH, GatewaySimulator
from exporter.sources import make_source

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {"ingest_ratio": ("<=", 3.0), "scrape_ratio": (">=", 0.5),
            "memory_bytes_per_session": ("<=", 1024), "fanout_ratio": ("<=", 2.0),
            "filter_ratio": ("<=", 3.0)}
GOALS = {"ingest_ratio": 2.0, "scrape_ratio": 0.8, "memory_bytes_per_session": 400}


@dataclass(frozen=True)
class Sizes:
    ingest_sessions: int
    ingest_vision: int
    scrape_series: int
    scrape_seconds: float
    memory_gateways: int
    memory_sessions_each: int
    fanout_gateways: int
    fanout_sessions_each: int
    filter_gateways: int
    filter_sessions_each: int
    repeat: int


FULL = Sizes(100_000, 10_000, 20_000, 5.0, 100, 5_000, 100, 5_000, 100, 5_000, 5)
QUICK = Sizes(5_000, 500, 2_000, 1.0, 10, 500, 10, 500, 10, 500, 3)


def document_bytes(sessions: int, vision: int = 0, seed: int = 0, users: int = 0) -> bytes:
    simulator = GatewaySimulator(name=f"gw{seed}", seed=seed, target_sessions=sessions,
                                 target_clients=vision, distinct_users=users)
    return json.dumps(simulator.document()).encode()


def best(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` runs: the run least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


# --- 1. ingest ------------------------------------------------------------------------------

def measure_ingest(sizes: Sizes) -> dict[str, float]:
    body = document_bytes(sizes.ingest_sessions, sizes.ingest_vision, users=2_000)
    baseline = best(lambda: orjson.loads(body), sizes.repeat)
    ours = best(lambda: asyncio.run(ingest(body, "bench")), sizes.repeat)
    return {"ingest_ratio": ours / baseline, "ingest_seconds": ours,
            "ingest_orjson_seconds": baseline, "ingest_body_bytes": len(body)}


# --- 2. scrape -------------------------------------------------------------------------------

@contextmanager
def process(*args: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A helper process; yields it and the address it reported (`port=N` or the exporter's
    `address=` log field)."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            text = log.read_text(errors="replace")
            found = re.search(r"port=(\d+)", text) or re.search(r"address=http://[\d.]+:(\d+)",
                                                                 text)
            if found:
                yield proc, f"http://127.0.0.1:{found.group(1)}"
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start:\n{text}")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def requests_per_second(url: str, seconds: float) -> float:
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "-t2", "-c32", f"-d{max(1, round(seconds))}s", url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore
    return asyncio.run(_client_loop(url, seconds))


async def _client_loop(url: str, seconds: float) -> float:
    count = 0
    deadline = time.monotonic() + seconds

    async def one(http: aiohttp.ClientSession) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            async with http.get(url) as response:
                await response.read()
            count += 1

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http) for _ in range(32)))
    return count / seconds


def measure_scrape(sizes: Sizes, work: Path) -> dict[str, float]:
    # One session in six is a Designer (few distinct users): 6/5 sessions per series.
    body = document_bytes(sizes.scrape_series * 6 // 5, users=sizes.scrape_series * 20)
    (work / "gateways").mkdir()
    (work / "gateways" / "gateway.json").write_bytes(body)
    with process("-m", "bench.probes", "gateways", "--dir", str(work / "gateways"),
                 "--delay", "0", log=work / "gateways.log") as (_, gateways):
        config = work / "config.yml"
        config.write_text(json.dumps({"poll_interval": "60s", "max_series_per_metric": 10**6,
                                      "gateways": [
            {"name": "gateway", "url": f"{gateways}/gateway{WEBDEV_PATH}", "timeout": "50s"}]}))
        with process("-m", "exporter", "--config", str(config), "--listen", "127.0.0.1:0",
                     log=work / "exporter.log") as (_, exporter):
            exposition = _wait_for_metrics(exporter + "/metrics")
            ours = requests_per_second(exporter + "/metrics", sizes.scrape_seconds)
    (work / "metrics.txt").write_bytes(exposition)
    series = sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))
    with process("-m", "bench.probes", "bare", "--body", str(work / "metrics.txt"),
                 log=work / "bare.log") as (_, bare):
        baseline = requests_per_second(bare + "/metrics", sizes.scrape_seconds)
    with process("-m", "bench.probes", "client-python", "--body",
                 str(work / "gateways" / "gateway.json"), log=work / "client.log") as (_, cp):
        client_python = requests_per_second(cp + "/metrics", sizes.scrape_seconds)
    return {"scrape_ratio": ours / baseline,
            "scrape_ratio_prometheus_client": client_python / baseline,
            "scrape_rps": ours, "scrape_bare_rps": baseline,
            "scrape_prometheus_client_rps": client_python, "scrape_series": series,
            "scrape_body_bytes": len(exposition)}


def _wait_for_metrics(url: str) -> bytes:
    async def poll() -> bytes:
        async with aiohttp.ClientSession() as http:
            for _ in range(1200):
                async with http.get(url) as response:
                    text = await response.read()
                if b'ignition_up{gateway="gateway"} 1.0' in text:
                    return text
                await asyncio.sleep(0.1)
        raise RuntimeError("the exporter never polled its gateway")

    return asyncio.run(poll())


# --- 3. memory -------------------------------------------------------------------------------

def write_gateways(directory: Path, count: int, sessions: int) -> None:
    directory.mkdir(exist_ok=True)
    for i in range(count):
        (directory / f"gw{i:03d}.json").write_bytes(document_bytes(sessions, seed=i,
                                                                   users=2_000))


def measure_memory(sizes: Sizes, work: Path) -> dict[str, float]:
    directory = work / "memory"
    write_gateways(directory, sizes.memory_gateways, sizes.memory_sessions_each)
    out = subprocess.run([sys.executable, "-m", "bench.probes", "memory", "--dir",
                          str(directory)], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=1800)
    result = json.loads(out.stdout)
    added = result["rss_after"] - result["rss_before"]
    return {"memory_bytes_per_session": added / result["sessions"],
            "memory_sessions": result["sessions"], "memory_rss_added_bytes": added}


# --- 4. fan-out ------------------------------------------------------------------------------

async def _round(urls: list[str], repeat: int) -> tuple[float, float]:
    """(wall time of one round of polls, slowest gateway's answer time in it), best round.

    A gateway's answer time runs from the request to its response headers: the gateway's
    part. The round runs until the last snapshot is ready: the exporter's part on top."""
    answered: dict[str, float] = {}
    started: dict[str, float] = {}
    trace = aiohttp.TraceConfig()

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        started[str(params.url)] = time.perf_counter()

    async def on_answer(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        answered[str(params.url)] = time.perf_counter()

    trace.on_request_start.append(on_start)
    trace.on_request_end.append(on_answer)  # the gateway's answer has begun to arrive
    connector = aiohttp.TCPConnector(limit=len(urls) * 2)
    gateways = [GatewayConfig(name=f"gw{i}", url=url, timeout=120, poll_interval=120)
                for i, url in enumerate(urls)]
    # As in the exporter (Fleet.start): one worker thread does every gateway's CPU work.
    with ThreadPoolExecutor(max_workers=1) as cpu:
        async with aiohttp.ClientSession(trace_configs=[trace], connector=connector) as http:
            pollers = [GatewayPoller(g, make_source(g, http, SystemClock()), idle_after=60,
                                     clock=SystemClock(), cpu=cpu) for g in gateways]
            results = await _timed_rounds(pollers, urls, started, answered, repeat)
    return min(results[1:], key=lambda r: r[0] / r[1])


async def _timed_rounds(pollers: list[GatewayPoller], urls: list[str],
                        started: dict[str, float], answered: dict[str, float],
                        repeat: int) -> list[tuple[float, float]]:
    results = []
    for _ in range(repeat + 1):  # the first round also opens the connections
        answered.clear()
        began = time.perf_counter()
        statuses = await asyncio.gather(*(p.poll_once() for p in pollers))
        wall = time.perf_counter() - began
        assert all(s.up for s in statuses), [s.error for s in statuses if not s.up]
        slowest = max(answered[u] - started[u] for u in urls)
        results.append((wall, slowest))
    return results


FANOUT_DELAY = 0.05


def measure_fanout(sizes: Sizes, work: Path) -> dict[str, float]:
    directory = work / "fanout"
    write_gateways(directory, sizes.fanout_gateways, sizes.fanout_sessions_each)
    bodies = [p.read_bytes() for p in sorted(directory.glob("*.json"))]
    # The physical floor of a round: the answers' delay plus parsing every body once with
    # orjson on one core. No Python exporter can finish a round faster than this.
    floor = FANOUT_DELAY + best(lambda: [orjson.loads(b) for b in bodies], sizes.repeat)
    with process("-m", "bench.probes", "gateways", "--dir", str(directory), "--delay",
                 str(FANOUT_DELAY), log=work / "fanout.log") as (_, server):
        urls = [f"{server}/{p.stem}{WEBDEV_PATH}" for p in sorted(directory.glob("*.json"))]
        wall, slowest = asyncio.run(_round(urls, sizes.repeat))
    return {"fanout_ratio": wall / slowest, "fanout_round_seconds": wall,
            "fanout_slowest_answer_seconds": slowest,
            "fanout_parse_floor_seconds": floor, "fanout_ratio_to_parse_floor": wall / floor}


# --- 5. filter -------------------------------------------------------------------------------

def measure_filter(sizes: Sizes, work: Path) -> dict[str, float]:
    directory = work / "memory"
    if not directory.exists():
        write_gateways(directory, sizes.filter_gateways, sizes.filter_sessions_each)
    statuses = [asyncio.run(ingest(p.read_bytes(), p.stem))
                for p in sorted(directory.glob("*.json"))]
    usernames = [json.loads(bytes(raw))["username"] for s in statuses
                 for raw in s.perspective.raw]
    pattern = "user0001[0-4].*"  # 5 of 2,000 users: a selective filter
    compiled = re2.compile(pattern)
    baseline = best(lambda: [u for u in usernames if compiled.fullmatch(u)], sizes.repeat)
    now = time.time()
    names = {s.gateway.name for s in statuses}
    ours = best(lambda: render_sessions(statuses, parse_query({"username": [pattern]}, names),
                                        now), sizes.repeat)
    matched = len(json.loads(render_sessions(statuses, parse_query(
        {"username": [pattern]}, names), now))["perspective"])
    return {"filter_ratio": ours / baseline, "filter_seconds": ours,
            "filter_bare_re2_seconds": baseline, "filter_sessions": len(usernames),
            "filter_matched": matched}


# --- report ----------------------------------------------------------------------------------

def verdict(key: str, value: float) -> str:
    if key not in REQUIRED:
        return ""
    op, limit = REQUIRED[key]
    ok = value <= limit if op == "<=" else value >= limit
    goal = GOALS.get(key)
    goal_text = f", goal {op} {goal:g}" if goal is not None else ""
    return f"{'ok' if ok else 'MISSED'} (required {op} {limit:g}{goal_text})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--only", choices=["ingest", "scrape", "memory", "fanout", "filter"],
                        action="append", help="measure only these (repeatable)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full",
                               "sizes": sizes.__dict__, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ignition-bench-") as tmp:
        work = Path(tmp)
        for name, measure in [("ingest", lambda: measure_ingest(sizes)),
                              ("scrape", lambda: measure_scrape(sizes, work)),
                              ("memory", lambda: measure_memory(sizes, work)),
                              ("fanout", lambda: measure_fanout(sizes, work)),
                              ("filter", lambda: measure_filter(sizes, work))]:
            if args.only and name not in args.only:
                continue
            print(f"measuring {name}...", file=sys.stderr, flush=True)
            results.update(measure())
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'figure':<34} {'value':>14}  verdict")
    for key, value in results.items():
        if isinstance(value, float | int) and key != "cpus":
            print(f"{key:<34} {value:>14.4g}  {verdict(key, value)}")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
