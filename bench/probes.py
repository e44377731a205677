"""Helper processes for bench/run.py, each started as `python -m bench.probes KIND ...`.

They run apart from the benchmark so that a server's CPU and memory are its own:

- `gateways`: many simulated gateways on one port, with pre-rendered answers and a delay;
- `bare`: a bare aiohttp handler returning fixed bytes (the scrape baseline);
- `client-python`: /metrics the way most Python exporters serve it, prometheus_client
  rendering every scrape from a collector (the comparison the README quotes);
- `memory`: ingests WebDev documents from files and reports resident memory before and after;
- `scraper`: GETs a URL on a fixed tick and reports each request's latency from its tick.

Servers print `port=N` on stdout once listening, then serve until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from bench.load import rss_bytes
from exporter.clock import SystemClock
from exporter.config import GatewayConfig
from exporter.model import Snapshot
from exporter.polling.poller import GatewayPoller, GatewayStatus
from exporter.sources.webdev import decode_webdev
from exporter.standins.simulator import WEBDEV_PATH
from exporter.web.collector import SessionCollector


class BodySource:
    """A source whose gateway answered these bytes: the ingest path without the network."""

    def __init__(self, body: bytes, name: str = "bench") -> None:
        self.body = body
        self.name = name

    async def fetch(self) -> Callable[[], Snapshot]:
        return partial(decode_webdev, self.body, self.name)


def bench_poller(source: BodySource) -> GatewayPoller:
    """A poller whose gateway answers what `source` holds."""
    gateway = GatewayConfig(name=source.name, url="http://bench.invalid/", timeout=600)
    return GatewayPoller(gateway, source, idle_after=60, clock=SystemClock())


def poll(poller: GatewayPoller) -> GatewayStatus:
    """One poll, on an event loop of its own rather than `asyncio.run`: at its end, Python
    3.11's `asyncio.run` formats a message holding the repr of its main task's result, which
    for a large status costs more than the poll itself."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(poller.poll_once())
    finally:
        loop.close()


def ingest(body: bytes, name: str) -> GatewayStatus:
    """Bytes to the finished status that /metrics and /sessions read: decode, aggregate,
    byte counter, index, exactly as a poll does."""
    return poll(bench_poller(BodySource(body, name)))


async def _serve(app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"port={runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def gateways_app(directory: Path, delay: float) -> web.Application:
    app = web.Application()
    for path in sorted(directory.glob("*.json")):
        body = path.read_bytes()

        async def answer(_: web.Request, body: bytes = body) -> web.Response:
            await asyncio.sleep(delay)
            return web.Response(body=body, content_type="application/json")

        app.router.add_get(f"/{path.stem}{WEBDEV_PATH}", answer)
    return app


def bare_app(body: bytes, content_type: str) -> web.Application:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", answer)
    return app


def client_python_app(body: bytes) -> web.Application:
    status = ingest(body, "gateway")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [status], SystemClock()))
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry, disable_compression=True))
    return app


def memory(directory: Path) -> dict[str, int]:
    files = sorted(directory.glob("*.json"))
    ingest(b'{"schema": 1}', "warm-up")  # imports and first-use costs
    gc.collect()
    before = rss_bytes_self()
    # The pollers are held too: what a gateway costs includes the state its poller keeps
    # from poll to poll (the byte counters' last totals).
    sources = [BodySource(path.read_bytes(), path.stem) for path in files]
    pollers = [bench_poller(source) for source in sources]
    held = [poll(poller) for poller in pollers]
    for source in sources:
        source.body = b""  # the answers are the gateways', not the exporter's to hold
    gc.collect()
    after = rss_bytes_self()
    sessions = sum(len(s.perspective) for s in held)
    return {"rss_before": before, "rss_after": after, "sessions": sessions}


def scraper(url: str, interval: float, stop: Path) -> list[tuple[float, float]]:
    """GET `url` every `interval` seconds until the file `stop` exists (at most 10 minutes).

    Each request is due at its tick and its latency is counted from the tick, not from when
    it was sent: a request held up behind a slow one counts the wait too. Returns (tick in
    epoch seconds, latency) per answered request; refused connections (the server not yet
    listening) are not counted."""
    results: list[tuple[float, float]] = []
    start = time.monotonic()
    offset = time.time() - start
    tick = start
    while not stop.exists() and tick - start < 600:
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
        except OSError:
            continue
        results.append((tick + offset, time.monotonic() - tick))
    return results


def rss_bytes_self() -> int:
    import os
    return rss_bytes(os.getpid())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["gateways", "bare", "client-python", "memory",
                                         "scraper"])
    parser.add_argument("--url")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--stop", type=Path)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--body", type=Path)
    parser.add_argument("--content-type", default="text/plain; version=0.0.4; charset=utf-8")
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    if args.kind == "memory":
        json.dump(memory(args.dir), sys.stdout)
        return
    if args.kind == "scraper":
        print("ready", flush=True)
        json.dump(scraper(args.url, args.interval, args.stop), sys.stdout)
        return
    if args.kind == "gateways":
        app = gateways_app(args.dir, args.delay)
    elif args.kind == "bare":
        app = bare_app(args.body.read_bytes(), args.content_type)
    else:
        app = client_python_app(args.body.read_bytes())
    asyncio.run(_serve(app))


if __name__ == "__main__":
    main()
