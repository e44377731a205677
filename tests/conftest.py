"""Shared fixtures: a fake clock, system-tool lookup, and gateway stand-ins on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

# The shapes of pytest-aiohttp's `aiohttp_server` and `aiohttp_client` fixtures.
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
ClientFactory = Callable[[web.Application], Awaitable[TestClient]]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Path of a tool, on PATH or installed beside this Python (the venv's `bin/`, where
    pip-installed tools such as hadolint land). Missing: skip on a laptop, fail in CI."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path:
        return path
    message = f"{name} is not installed (see .ci/run for the package that provides it)"
    if IN_CI:
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


class FakeClock:
    """Time that moves only when told to; `sleep` moves it and yields to the event loop."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start
        self.mono = 1_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """The root logger as it was before each test. A test that runs the command line in this
    process (`cli.main`) points the root logger at that test's captured stderr, which is
    closed once the test ends: every later log line would then be a "Logging error"."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def eventually(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for an asynchronous outcome (a poll landing), failing after `timeout` seconds.
    Checked again after 1 ms, then twice as long each time up to 20 ms: most outcomes land
    within milliseconds, and tests that wait for hundreds of polls would otherwise spend
    most of their time asleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.001
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(2 * pause, 0.02)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for calling sources directly, as the exporter's app would."""
    async with aiohttp.ClientSession() as session:
        yield session


async def poll_source(source: Any) -> Any:
    """One poll through a source, as the poller does it: fetch, then decode."""
    decode = await source.fetch()
    return decode()
