"""Log lines: one record is one line, and what others sent cannot forge or repaint it; logfmt
by default, JSON lines with `--log.format json`, the same fields in both."""

from __future__ import annotations

import json
import logging

import pytest

from exporter.logs import (
    COUNTED_VALUES,
    NAMED_VALUES,
    VALUE_MAX_CHARS,
    Episode,
    JsonFormatter,
    LogfmtFormatter,
)
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
    # The new episode's line comes after one for the last episode's other hits.
    assert [r.getMessage() for r in caplog.records] == [
        "limit reached", "limit reached (over)", "limit reached"]
    assert (caplog.records[1].more_hits, caplog.records[1].limit) == (499, 10)
    assert caplog.records[2].limit == 10


@pytest.fixture
def timed() -> tuple[FakeClock, Episode]:
    """An episode on a fake clock, and its clock."""
    clock = FakeClock()
    return clock, Episode(logging.getLogger("exporter.test"), "limit reached", quiet=60,
                          clock=clock.monotonic)


def test_an_episode_kept_going_names_who_else_hit_it(
        timed: tuple[FakeClock, Episode],
        caplog: pytest.LogCaptureFixture) -> None:
    clock, episode = timed
    with caplog.at_level(logging.WARNING):
        episode.hit(address="127.0.0.2")  # the first line names the one who started it
        for second in range(1, 70):  # it keeps the episode going; others join at 10 s
            clock.advance(1)
            episode.hit(address="127.0.0.2")
            if second >= 10:
                episode.hit(address=f"127.0.0.{3 + second % 2}")
    lines = caplog.records
    assert [r.getMessage() for r in lines] == ["limit reached", "limit reached (going on)"]
    assert lines[0].address == "127.0.0.2"
    # Every hit after the first, up to the one 60 s after the first line, is in the second:
    # 60 from the first address, 50 from the others (seconds 10 to 59).
    assert lines[1].more_hits == 60 + 50
    assert lines[1].address == "127.0.0.2 127.0.0.3 127.0.0.4"


def test_the_hits_after_the_last_line_are_logged_once_it_is_over(
        timed: tuple[FakeClock, Episode],
        caplog: pytest.LogCaptureFixture) -> None:
    clock, episode = timed
    with caplog.at_level(logging.WARNING):
        episode.hit(address="127.0.0.2")
        clock.advance(1)
        episode.hit(address="127.0.0.9")
        clock.advance(60)
        episode.flush()  # 60 s since the last hit: not over yet
        assert len(caplog.records) == 1
        clock.advance(1)
        episode.flush()
        episode.flush()  # said once
    assert [r.getMessage() for r in caplog.records] == ["limit reached",
                                                        "limit reached (over)"]
    assert (caplog.records[1].more_hits, caplog.records[1].address) == (1, "127.0.0.9")


def test_without_flush_the_next_episode_says_what_the_last_one_left(
        timed: tuple[FakeClock, Episode],
        caplog: pytest.LogCaptureFixture) -> None:
    clock, episode = timed
    with caplog.at_level(logging.WARNING):
        episode.hit(client="a")
        episode.hit(client="b")
        clock.advance(3600)
        episode.hit(client="c")
    assert [(r.getMessage(), r.client) for r in caplog.records] == [
        ("limit reached", "a"), ("limit reached (over)", "b"), ("limit reached", "c")]


def test_an_episode_of_made_up_values_costs_a_bounded_set(
        timed: tuple[FakeClock, Episode],
        caplog: pytest.LogCaptureFixture) -> None:
    clock, episode = timed
    with caplog.at_level(logging.WARNING):
        episode.hit(address="first")
        for n in range(COUNTED_VALUES * 3):
            episode.hit(address=f"10.{n}" + "x" * 100, limit=8)
        assert all(len(values) <= COUNTED_VALUES for values in episode._tally.values.values())
        clock.advance(61)
        episode.flush()
    summary = caplog.records[-1]
    assert summary.more_hits == COUNTED_VALUES * 3
    assert summary.limit == 8  # one value: a number stays one
    named = summary.address.split(" and ")[0].split()
    assert len(named) == NAMED_VALUES
    assert all(len(value) == VALUE_MAX_CHARS for value in named)
    assert summary.address.endswith(f" and {COUNTED_VALUES - NAMED_VALUES}+ more")


def record(**extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "exporter.polling.poller", "levelno": logging.WARNING,
                                  "levelname": "WARNING", "msg": "gateway down",
                                  "created": 1_795_000_000.123, **extra})
    return made


def test_json_has_the_logfmt_fields() -> None:
    line = record(gateway="plant a", reason="connect", sessions=3, detail='say "no"\nnow')
    logfmt = LogfmtFormatter().format(line)
    assert logfmt == ('ts=2026-11-18T11:06:40.123Z level=warning logger=exporter.polling.poller '
                      'msg="gateway down" gateway="plant a" reason=connect sessions=3 '
                      'detail="say \\"no\\"\\nnow"')
    parsed = json.loads(JsonFormatter().format(line))
    assert parsed == {"ts": "2026-11-18T11:06:40.123Z", "level": "warning",
                      "logger": "exporter.polling.poller", "msg": "gateway down",
                      "gateway": "plant a", "reason": "connect", "sessions": 3,
                      "detail": 'say "no"\nnow'}
    assert "\n" not in JsonFormatter().format(line)


def test_json_error_field_carries_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        line = record(exc_info=sys.exc_info())
    parsed = json.loads(JsonFormatter().format(line))
    assert parsed["error"].startswith("Traceback") and "ValueError: boom" in parsed["error"]


@pytest.mark.parametrize("value", [None, object(), b"bytes", ["a"]])
def test_json_never_fails_on_a_field(value: object) -> None:
    parsed = json.loads(JsonFormatter().format(record(field=value)))
    assert parsed["field"] == str(value)


def test_json_escapes_what_could_forge_or_repaint_a_line() -> None:
    every = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) + "\u2028\u202ejürgen"
    text = JsonFormatter().format(record(detail=every))
    assert text.isascii() and text.isprintable(), repr(text)
    assert json.loads(text)["detail"] == every
