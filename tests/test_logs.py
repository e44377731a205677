"""logfmt lines: one record is one line, and what others sent cannot forge or repaint it."""

from __future__ import annotations

import logging

import pytest

from exporter.logs import Episode, LogfmtFormatter
from tests.conftest import FakeClock


def line(msg: str, **fields: object) -> str:
    record = logging.makeLogRecord({"msg": msg, "levelname": "WARNING", "name": "exporter",
                                    **fields})
    return LogfmtFormatter().format(record)


@pytest.mark.parametrize(("value", "shown"), [
    ("plain", "plain"),
    ("two words", '"two words"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("a=b", '"a=b"'),
    ("", '""'),
    ("line\nforged level=error", '"line\\nforged level=error"'),
    ("cr\rforged", '"cr\\rforged"'),
    ("tab\there", '"tab\\there"'),
    ("bell\x07esc\x1b[2Jdel\x7f", '"bell\\x07esc\\x1b[2Jdel\\x7f"'),
    ("nul\x00c1\x9b", '"nul\\x00c1\\x9b"'),
    ("ls\u2028ps\u2029bidi\u202e", '"ls\\u2028ps\\u2029bidi\\u202e"'),
    ("jürgen", "jürgen"),
])
def test_values_are_escaped(value: str, shown: str) -> None:
    assert line("msg", warning=value).endswith(f" warning={shown}")


def test_every_control_character_is_escaped() -> None:
    every = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
    text = line(every, detail=every)
    assert text.isprintable(), repr(text)
    assert "\n" not in text and "\r" not in text


def test_episode_logs_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    episode = Episode(logging.getLogger("exporter.test"), "limit reached", quiet=60,
                      clock=clock.monotonic)
    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            episode.hit(limit=10)
            clock.advance(0.1)  # a hit every 100 ms: one long episode
        assert [r.getMessage() for r in caplog.records] == ["limit reached"]
        clock.advance(61)  # quiet for longer than `quiet`: the next hit is a new episode
        episode.hit(limit=10)
    assert len(caplog.records) == 2
    assert caplog.records[1].limit == 10
