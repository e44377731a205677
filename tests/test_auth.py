from __future__ import annotations

import asyncio
import base64
import logging
import time

import bcrypt
import pytest

from exporter.web import auth
from exporter.web.auth import BasicAuth, FairSlots, QueueFull, parse_basic

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


async def test_fair_slots_round_robin_and_cancellation() -> None:
    slots = FairSlots(slots=1, per_key=2, in_all=4)
    served: list[str] = []
    gate = asyncio.Event()

    async def use(key: str, name: str) -> None:
        async with slots.slot(key):
            served.append(name)
            await gate.wait()

    holder = asyncio.create_task(use("a", "a0"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(use(key, name)) for key, name in
               (("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"))]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):  # per key: "a" has two waiting
        await slots.slot("a").__aenter__()
    with pytest.raises(QueueFull):  # in all: four waiting
        await slots.slot("d").__aenter__()
    waiting[3].cancel()  # c1 gives up its place
    gate.set()
    await asyncio.gather(holder, *waiting[:3])
    assert served == ["a0", "a1", "b1", "a2"]  # "a" does not go twice in a row
    async with asyncio.timeout(2), slots.slot("d"):  # the slot was handed back
        served.append("d")
    assert served[-1] == "d"
