"""Helper processes for bench/run.py, each started as `python -m bench.probes KIND ...`.

They run apart from the benchmark so that a server's CPU and memory are its own:

- `gateways`: many simulated gateways on one port, with pre-rendered answers and a delay;
- `bare`: a bare aiohttp handler returning fixed bytes (the scrape baseline);
- `client-python`: /metrics the way most Python exporters serve it, prometheus_client
  rendering every scrape from a collector (the comparison the README quotes);
- `memory`: ingests WebDev documents from files and reports resident memory before and after.

Servers print `port=N` on stdout once listening, then serve until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from bench.load import rss_bytes
from exporter.clock import SystemClock
from exporter.collector import SessionCollector
from exporter.config import GatewayConfig
from exporter.model import Snapshot
from exporter.poller import GatewayPoller, GatewayStatus
from exporter.simulator import WEBDEV_PATH
from exporter.sources.webdev import decode_webdev


class BodySource:
    """A source whose gateway answered these bytes: the ingest path without the network."""

    def __init__(self, body: bytes, name: str = "bench") -> None:
        self.body = body
        self.name = name

    async def fetch(self) -> Callable[[], Snapshot]:
        return partial(decode_webdev, self.body, self.name)


async def ingest(body: bytes, name: str) -> GatewayStatus:
    """Bytes to the finished status that /metrics and /sessions read: decode, aggregate,
    byte counter, exactly as a poll does."""
    gateway = GatewayConfig(name=name, url="http://bench.invalid/", timeout=600)
    poller = GatewayPoller(gateway, BodySource(body, name), idle_after=60, clock=SystemClock())
    return await poller.poll_once()


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
    status = asyncio.run(ingest(body, "gateway"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(lambda: [status], SystemClock()))
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry, disable_compression=True))
    return app


def memory(directory: Path) -> dict[str, int]:
    files = sorted(directory.glob("*.json"))
    asyncio.run(ingest(b'{"schema": 1}', "warm-up"))  # imports and first-use costs
    gc.collect()
    before = rss_bytes_self()
    held = [asyncio.run(ingest(path.read_bytes(), path.stem)) for path in files]
    gc.collect()
    after = rss_bytes_self()
    sessions = sum(len(s.perspective) for s in held)
    return {"rss_before": before, "rss_after": after, "sessions": sessions}


def rss_bytes_self() -> int:
    import os
    return rss_bytes(os.getpid())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["gateways", "bare", "client-python", "memory"])
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--body", type=Path)
    parser.add_argument("--content-type", default="text/plain; version=0.0.4; charset=utf-8")
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    if args.kind == "memory":
        json.dump(memory(args.dir), sys.stdout)
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
