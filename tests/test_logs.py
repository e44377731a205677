"""Log lines: one record is one line, and what others sent cannot forge or repaint it; logfmt
by default, JSON lines with `--log.format json`, the same fields in both."""

from __future__ import annotations

import json
import logging

import pytest

from exporter.logs import Episode, JsonFormatter, LogfmtFormatter
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
