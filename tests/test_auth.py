from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Iterator

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from exporter import logs
from exporter.web import auth
from exporter.web.auth import (
    BasicAuth,
    FairSlots,
    QueueFull,
    ReplaceableAuth,
    auth_middleware,
    parse_basic,
)
from exporter.web.server import running_site
from tests.conftest import eventually

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("header", "expected"), [
    (basic("alice", "pw:with:colons"), ("alice", b"pw:with:colons")),
    ("basic " + base64.b64encode(b"bob:").decode(), ("bob", b"")),
    (None, None), ("", None), ("Bearer abc", None), ("Basic !!!notbase64", None),
    ("Basic " + base64.b64encode(b"no-colon").decode(), None),
])
def test_parse_basic(header: str | None, expected: tuple[str, bytes] | None) -> None:
    assert parse_basic(header) == expected


async def test_right_wrong_and_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checks.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth.bcrypt, "checkpw", counting)
    guard = BasicAuth({"alice": HASH})
    assert await guard.check(basic("alice", "s3cret"))
    assert await guard.check(basic("alice", "s3cret"))
    assert await guard.check(basic("alice", "s3cret"))
    assert len(checks) == 1, "a verified password is remembered"
    assert not await guard.check(basic("alice", "wrong"))
    assert not await guard.check(basic("alice", "wrong"))
    assert len(checks) == 3, "failures are never remembered"
    assert not await guard.check(basic("mallory", "s3cret"))
    assert len(checks) == 4, "unknown users cost a bcrypt check too"
    assert not await guard.check(None)


async def test_unknown_users_cost_the_costliest_configured_hash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user used to be checked against a cost-10 hash, so a user whose hash has
    another cost could be told apart from a missing one by the time a check took."""
    checks: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(auth.bcrypt, "checkpw",
                        lambda password, hashed: checks.append(hashed) or real(password, hashed))
    cheap, dear = bcrypt.hashpw(b"a", bcrypt.gensalt(4)), bcrypt.hashpw(b"b", bcrypt.gensalt(6))
    guard = BasicAuth({"cheap": cheap, "dear": dear, "also-cheap": HASH})
    assert not await guard.check(basic("nobody", "b"))  # even with the decoy's own password
    assert not await guard.check(basic("nobody", "a"))
    assert [auth.bcrypt_cost(h) for h in checks] == [6, 6]


@pytest.mark.parametrize("user", ["alice", "mallory"])
@pytest.mark.parametrize("password", ["x" * 73, "é" * 37, "s3cret" + "x" * 100])
async def test_passwords_longer_than_bcrypt_reads_are_wrong(user: str, password: str) -> None:
    """bcrypt 5 raises ValueError beyond 72 bytes: that was an HTTP 500."""
    assert not await BasicAuth({"alice": HASH}).check(basic(user, password))


async def test_seventy_two_bytes_still_work() -> None:
    password = "p" * 72
    guard = BasicAuth({"alice": bcrypt.hashpw(password.encode(), bcrypt.gensalt(4))})
    assert await guard.check(basic("alice", password))


async def test_failures_do_not_starve_a_first_login(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """32 clients sending wrong passwords used to delay a correct first login by their
    whole backlog (4.8 s); now it waits for about one check per busy queue."""
    order: list[bytes] = []
    real = bcrypt.checkpw

    def slow(password: bytes, hashed: bytes) -> bool:
        order.append(password)
        time.sleep(0.005)  # every check takes a while, as cost 10 to 12 do
        return real(password, hashed)

    monkeypatch.setattr(auth.bcrypt, "checkpw", slow)
    guard = BasicAuth({"alice": HASH})
    flood = [asyncio.create_task(guard.check(basic("alice", f"guess{i}"), "10.0.0.66"))
             for i in range(32)]
    await asyncio.sleep(0)
    assert await guard.check(basic("alice", "s3cret"), "10.0.0.5")
    assert not any(await asyncio.gather(*flood))
    assert order.index(b"s3cret") <= auth.CONCURRENT_CHECKS + 1, order
    # Bounded: the flood's excess was refused without bcrypt, and logged once.
    assert len(order) <= 1 + auth.CONCURRENT_CHECKS + auth.WAITING_PER_QUEUE
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "basic auth checks refused: too many waiting; someone may be guessing passwords"]


class Holders:
    """Tasks that take a slot of `slots` in turn and hold it until `gate` opens; `served`
    lists who got one, in order, `refused` who did not."""

    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.gate = asyncio.Event()
        self.served: list[str] = []
        self.refused: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def arrive(self, client: str, user: str | None, name: str) -> None:
        self.tasks[name] = asyncio.create_task(self._use(client, user, name))
        for _ in range(3):  # it queues; a waiter it displaced learns so
            await asyncio.sleep(0)

    async def _use(self, client: str, user: str | None, name: str) -> None:
        try:
            async with self.slots.slot(client, user):
                self.served.append(name)
                await self.gate.wait()
        except QueueFull:
            self.refused.append(name)

    async def finish(self) -> None:
        self.gate.set()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def test_fair_slots_round_robin_by_client_then_user_and_cancellation() -> None:
    holders = Holders(FairSlots(slots=1, per_key=2, in_all=5))
    await holders.arrive("a", "alice", "a0")  # holds the slot
    for client, user, name in (("a", "alice", "a1"), ("a", "alice", "a2"), ("a", "bob", "ab1"),
                               ("b", "alice", "b1"), ("c", "alice", "c1")):
        await holders.arrive(client, user, name)
    await holders.arrive("a", "alice", "a3")  # its queue holds two already
    assert holders.refused == ["a3"]
    holders.tasks["c1"].cancel()  # c1 gives up its place
    await holders.finish()
    # Client "a" goes once a round, its users in turn, whatever it has queued.
    assert holders.served == ["a0", "a1", "b1", "ab1", "a2"]
    async with asyncio.timeout(2), holders.slots.slot("d", None):  # handed back
        pass


async def test_a_client_with_nothing_waiting_takes_a_place_from_the_one_holding_most() -> None:
    holders = Holders(FairSlots(slots=1, per_key=3, in_all=4))
    await holders.arrive("flood", "alice", "held")
    for name, client in (("f1", "flood"), ("f2", "flood"), ("f3", "flood"), ("g1", "other")):
        await holders.arrive(client, "alice", name)
    await holders.arrive("new", "alice", "n1")  # every place is taken
    assert holders.refused == ["f3"], "the newest waiter of the client holding most"
    await holders.arrive("other", "alice", "g2")  # holds 1 against 2: takes another
    assert holders.refused == ["f3", "f2"]
    await holders.arrive("other", "alice", "g3")  # 2 against 1 and 1: its share already
    assert holders.refused == ["f3", "f2", "g3"]
    await holders.finish()
    assert holders.served == ["held", "f1", "g1", "n1", "g2"]


async def test_behind_one_address_users_share_the_places() -> None:
    """Every client behind a proxy has the proxy's address: places are shared by user."""
    holders = Holders(FairSlots(slots=1, per_key=4, in_all=4))
    await holders.arrive("proxy", "alice", "held")
    for i in range(4):
        await holders.arrive("proxy", "alice", f"guess{i}")
    await holders.arrive("proxy", "prometheus", "scrape")
    assert holders.refused == ["guess3"]
    await holders.arrive("proxy", None, "made-up")  # unknown users: one queue of their own
    assert holders.refused == ["guess3", "guess2"]
    await holders.finish()
    assert holders.served == ["held", "guess0", "scrape", "made-up", "guess1"]


# --- a flood over real sockets from many loopback addresses ------------------------------------

FLOOD_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 22)]  # all of 127/8 is loopback on Linux
FLOOD_PER_ADDRESS = auth.WAITING_PER_QUEUE


async def get_from(address: str, url: str, authorization: str) -> int:
    """GET `url` over a socket bound to `address`; the status."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, http.get(
            url, headers={"Authorization": authorization},
            timeout=aiohttp.ClientTimeout(total=30)) as response:
        return response.status


def guarded_app(users: dict[str, bytes]) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(ReplaceableAuth(users),
                                                       ReplaceableAuth({}))])

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    return app


@pytest.fixture
def gated_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[bytes]]]:
    """The real bcrypt, held at a gate until the test opens it: the checks that start first
    keep the slots while everything after them queues. Records the order checks start in."""
    gate, order = threading.Event(), []
    real = bcrypt.checkpw

    def gated(password: bytes, hashed: bytes) -> bool:
        order.append(password)
        gate.wait(timeout=30)
        return real(password, hashed)

    monkeypatch.setattr(auth.bcrypt, "checkpw", gated)
    yield gate, order
    gate.set()


async def test_a_flood_from_many_addresses_leaves_a_place_for_another(
        gated_bcrypt: tuple[threading.Event, list[bytes]],
        caplog: pytest.LogCaptureFixture) -> None:
    """80 clients sending wrong passwords from 20 addresses used to take all 64 waiting places,
    so a correct first login from another address was refused at once (401)."""
    gate, order = gated_bcrypt
    async with running_site(guarded_app({"alice": HASH}), "127.0.0.1", 0) as url:
        flood = [asyncio.create_task(get_from(address, url, basic("alice", f"guess-{address}-{i}")))
                 for address in FLOOD_ADDRESSES for i in range(FLOOD_PER_ADDRESS)]
        # Four checks hold the slots, 64 wait, every later one is refused: 12 answered.
        refused_at_once = len(flood) - auth.CONCURRENT_CHECKS - auth.WAITING_IN_ALL
        await eventually(lambda: sum(t.done() for t in flood) == refused_at_once,
                         what="the flood's excess refused")
        login = asyncio.create_task(get_from("127.0.0.100", url, basic("alice", "s3cret")))
        await eventually(lambda: login.done() or sum(t.done() for t in flood) > refused_at_once,
                         what="the login queued, or refused")
        gate.set()
        assert await login == 200
        assert set(await asyncio.gather(*flood)) == {401}
    # Within one round of the busy addresses, not behind their whole backlog.
    assert order.index(b"s3cret") <= auth.CONCURRENT_CHECKS + len(FLOOD_ADDRESSES), order
    # The flood paid for itself: what was refused never ran bcrypt, and was logged once.
    assert len(order) == auth.CONCURRENT_CHECKS + auth.WAITING_IN_ALL
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "basic auth checks refused: too many waiting; someone may be guessing passwords"]


async def test_a_reload_that_replaces_the_users_keeps_a_flood_s_last_hits(
        gated_bcrypt: tuple[threading.Event, list[bytes]],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each BasicAuth has its own episode: a reload with other users (what an operator does
    on reading `someone may be guessing passwords`) dropped it with the hits it had not
    told yet, so the flood's summary never came."""
    gate, _ = gated_bcrypt
    monkeypatch.setattr(logs, "EPISODE_QUIET", 0.2)  # read when a BasicAuth makes its episode
    guards = ReplaceableAuth({"alice": HASH})
    flooded = guards.current
    assert flooded is not None
    # Four checks take the slots, four wait in the client's queue, the last two are refused.
    checks = [asyncio.create_task(flooded.check(basic("alice", f"guess{i}"), "10.0.0.66"))
              for i in range(auth.CONCURRENT_CHECKS + auth.WAITING_PER_QUEUE + 2)]
    await eventually(lambda: sum(check.done() for check in checks) == 2,
                     what="the checks past the queue refused")
    gate.set()
    assert not any(await asyncio.gather(*checks))
    guards.set_users({"alice": HASH, "bob": HASH})
    await asyncio.sleep(0.3)  # the episode is over
    assert guards.current is not None
    assert await guards.current.check(basic("bob", "s3cret"), "10.0.0.5")
    flood = [r for r in caplog.records if r.getMessage().startswith("basic auth checks refused")]
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in flood] == ["passwords", "(over)"]
    assert (flood[1].more_hits, flood[1].client) == (1, "10.0.0.66")
