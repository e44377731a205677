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
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson
import re2
from aiohttp import web

from bench.probes import ingest
from exporter.config import build_config
from exporter.model import ClientSession, PerspectiveSession
from exporter.polling.poller import GatewayStatus
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator
from exporter.web.appkeys import FLEET
from exporter.web.filters import parse_query
from exporter.web.http import create_app
from exporter.web.sessions_endpoint import render_sessions

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {"ingest_ratio": ("<=", 0.5), "ingest_ratio_to_floor": ("<=", 3.0),
            "scrape_ratio": (">=", 0.8), "memory_bytes_per_session": ("<=", 600),
            "fanout_ratio_to_floor": ("<=", 2.5),
            "scrape_p99_during_round_seconds": ("<=", 0.25), "filter_ratio": ("<=", 1.0)}
GOALS = {"ingest_ratio": 0.3, "ingest_ratio_to_floor": 2.0, "memory_bytes_per_session": 300,
         "fanout_ratio_to_floor": 1.5, "scrape_p99_during_round_seconds": 0.05}


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


class _Lists(msgspec.Struct):
    perspective: list[PerspectiveSession] = []
    vision: list[ClientSession] = []


_FLOOR_DECODER = msgspec.json.Decoder(_Lists)


def floor_decode(body: bytes) -> object:
    """The decoder's floor: the document's sessions straight into the exporter's own record
    types, in one msgspec call. Any ingest does at least this."""
    return _FLOOR_DECODER.decode(body)


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
    floor = best(lambda: floor_decode(body), sizes.repeat)
    ours = best(lambda: ingest(body, "bench"), sizes.repeat)
    return {"ingest_ratio": ours / baseline, "ingest_ratio_to_floor": ours / floor,
            "ingest_seconds": ours, "ingest_orjson_seconds": baseline,
            "ingest_floor_seconds": floor, "ingest_body_bytes": len(body)}


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

FANOUT_DELAY = 0.05
SCRAPE_INTERVAL = 0.02


class _NoJitter(random.Random):
    """Every gateway's first poll at once: the exporter's start is one round of polls."""

    def uniform(self, a: float, b: float) -> float:
        return a


async def _one_round(urls: list[str], work: Path, scrape: bool) -> tuple[float, list[float]]:
    """Wall time of one round of polls by the real exporter application (every gateway polled
    at once, each by its own task, until the last status is up), and, if `scrape`, the
    latencies of the `/metrics` requests a separate process issued every 20 ms during it."""
    # As a configuration file sets it up: its defaults (digest_processes among them).
    config = build_config({"gateways": [{"name": f"gw{i:03d}", "url": url, "timeout": 300,
                                         "poll_interval": 3600}
                                        for i, url in enumerate(urls)]})
    app = create_app(config, rng=_NoJitter())
    port = _free_port()
    stop = work / "stop-scraper"
    stop.unlink(missing_ok=True)
    scraper = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.probes", "scraper", "--url",
        f"http://127.0.0.1:{port}/metrics", "--interval", str(SCRAPE_INTERVAL),
        "--stop", str(stop), stdout=asyncio.subprocess.PIPE, cwd=ROOT) if scrape else None
    runner = web.AppRunner(app, access_log=None)
    try:
        if scraper is not None:
            assert scraper.stdout is not None
            await scraper.stdout.readline()  # "ready": started, first request due in 20 ms
        began = time.time()
        await runner.setup()  # starts the polls
        await web.TCPSite(runner, "127.0.0.1", port).start()
        statuses = await _first_polls(app)
        assert all(s.up for s in statuses), [s.error for s in statuses if not s.up]
        ended = max(s.last_success or 0.0 for s in statuses)
    finally:
        stop.touch()
        out = (await scraper.communicate())[0] if scraper is not None else b"[]"
        await runner.cleanup()
    latencies = [latency for sent, latency in json.loads(out) if began <= sent <= ended]
    return ended - began, latencies


async def _first_polls(app: web.Application, seconds: float = 600) -> list[GatewayStatus]:
    """The statuses once every gateway has been polled. Readers see statuses, not events:
    they are read here as the landing page reads them, every 10 ms."""
    for _ in range(int(seconds / 0.01)):
        statuses = app[FLEET].statuses()
        if all(s.polls for s in statuses):
            return statuses
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the round took more than {seconds:g} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else math.nan


def measure_fanout(sizes: Sizes, work: Path) -> dict[str, float]:
    directory = work / "fanout"
    write_gateways(directory, sizes.fanout_gateways, sizes.fanout_sessions_each)
    bodies = [p.read_bytes() for p in sorted(directory.glob("*.json"))]
    # The floor of a round: the decoder's floor (as in ingest) for every body, one after
    # the other on one core. Waiting for the answers overlaps; decoding them does not.
    floor = sum(best(lambda b=b: floor_decode(b), sizes.repeat) for b in bodies)
    with process("-m", "bench.probes", "gateways", "--dir", str(directory), "--delay",
                 str(FANOUT_DELAY), log=work / "fanout.log") as (_, server):
        urls = [f"{server}/{p.stem}{WEBDEV_PATH}" for p in sorted(directory.glob("*.json"))]
        # Rounds alone for the wall time; rounds under 50 scrapes a second for the latency
        # (their load is the scraper's, not a real Prometheus's: reported, not judged).
        walls = [asyncio.run(_one_round(urls, work, False))[0] for _ in range(FANOUT_ROUNDS)]
        scraped = [asyncio.run(_one_round(urls, work, True)) for _ in range(FANOUT_ROUNDS)]
    wall = statistics.median(walls)
    return {"fanout_ratio_to_floor": wall / floor,
            "scrape_p99_during_round_seconds": statistics.median(
                [percentile(latencies, 0.99) for _, latencies in scraped]),
            "fanout_round_seconds": wall, "fanout_floor_seconds": floor,
            "fanout_round_scraped_seconds": statistics.median([w for w, _ in scraped]),
            "fanout_scrapes_during_round": statistics.median([len(lat) for _, lat in scraped]),
            "scrape_median_during_round_seconds": statistics.median(
                [percentile(latencies, 0.5) for _, latencies in scraped]),
            "scrape_max_during_round_seconds": max(max(lat, default=0.0)
                                                   for _, lat in scraped)}


FANOUT_ROUNDS = 3


# --- 5. filter -------------------------------------------------------------------------------

def measure_filter(sizes: Sizes, work: Path) -> dict[str, float]:
    directory = work / "memory"
    if not directory.exists():
        write_gateways(directory, sizes.filter_gateways, sizes.filter_sessions_each)
    statuses = [ingest(p.read_bytes(), p.stem)
                for p in sorted(directory.glob("*.json"))]
    usernames = [json.loads(bytes(raw))["username"] for s in statuses
                 for raw in s.perspective.select(None)]
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

def verdict(key: str, value: float, quick: bool) -> str:
    if key not in REQUIRED or quick:
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
    if args.quick:
        print("quick run: sizes too small for the figures to mean anything, so no verdicts;"
              " run without --quick for them")
    print(f"{'figure':<34} {'value':>14}  {'' if args.quick else 'verdict'}")
    for key, value in results.items():
        if isinstance(value, float | int) and key != "cpus":
            print(f"{key:<34} {value:>14.4g}  {verdict(key, value, args.quick)}")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
