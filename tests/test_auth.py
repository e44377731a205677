from __future__ import annotations

import base64

import bcrypt
import pytest

from exporter import auth
from exporter.auth import BasicAuth, parse_basic

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
    assert checks[-1] == auth._DUMMY_HASH, "unknown users cost a bcrypt check too"
    assert not await guard.check(None)
