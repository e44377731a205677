"""Structured logs to stderr in logfmt (`ts=… level=… msg=… key=value`), the format Prometheus
and its exporters use, so the same log tooling reads them; or, with `--log.format json`, one
JSON object a line with the same fields, as Prometheus' own `--log.format json` gives."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    """One character as it may appear between quotes: every control character (and anything
    else a terminal would not print as itself) becomes a visible escape, so text a gateway or
    a client sent can neither forge a log line nor rewrite one on screen."""
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def _quote(value: object) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


# Seconds without a hit that end an episode (`Episode`).
EPISODE_QUIET = 60.0
# What an episode's later lines say of each field: up to NAMED_VALUES distinct values by name,
# and how many others, counted up to COUNTED_VALUES (so a flood from made-up addresses costs a
# bounded set per field), each value cut to VALUE_MAX_CHARS.
NAMED_VALUES = 5
COUNTED_VALUES = 1000
VALUE_MAX_CHARS = 64


class _Tally:
    """The hits of an episode since its last line: how many, and each field's values (each
    number kept as it is, so a field keeps its type in JSON logs when it has one value)."""

    def __init__(self) -> None:
        self.hits = 0
        self.values: dict[str, dict[str, object]] = {}

    def add(self, fields: dict[str, object]) -> None:
        self.hits += 1
        for key, value in fields.items():
            seen = self.values.setdefault(key, {})
            if len(seen) < COUNTED_VALUES:
                text = str(value)[:VALUE_MAX_CHARS]
                seen[text] = value if isinstance(value, int | float) else text

    def summary(self) -> dict[str, object]:
        """`more_hits`, and per field its one value, or the first few and how many more."""
        fields: dict[str, object] = {"more_hits": self.hits}
        for key, seen in self.values.items():
            if len(seen) == 1:
                [fields[key]] = seen.values()
                continue
            named = list(seen)[:NAMED_VALUES]
            others = len(seen) - len(named)
            fields[key] = " ".join(named) + (
                f" and {others}{'+' if len(seen) >= COUNTED_VALUES else ''} more"
                if others else "")
        return fields


class Episode:
    """One log line when a limit starts being hit, never one per hit: a flood of idle sockets
    or of failed logins must not become a flood of log lines. The episode ends after `quiet`
    seconds without a hit; the next hit starts a new one, and logs again.

    The hits after the first are not lost: while the episode lasts, a line at most every
    `quiet` seconds says how many there were and from whom (their fields' values), and
    so does one line for those after it, once it is over. So a client that keeps an episode
    going cannot hide the others behind its first line. That last line comes with the next
    hit, or with `flush()`, which owners with a timer call."""

    def __init__(self, logger: logging.Logger, message: str, quiet: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._message = message
        self._quiet = EPISODE_QUIET if quiet is None else quiet
        self._clock = clock
        self._last_hit: float | None = None
        self._last_line = 0.0
        self._tally = _Tally()

    def hit(self, **fields: object) -> None:
        now = self._clock()
        if self._last_hit is None or now - self._last_hit > self._quiet:
            self._summarise("over")
            self._logger.warning(self._message, extra=fields)
            self._last_line = now
        else:
            self._tally.add(fields)
            if now - self._last_line >= self._quiet:
                self._summarise("going on")
                self._last_line = now
        self._last_hit = now

    def flush(self) -> None:
        """Log what the last episode's hits since its last line were, once it is over."""
        if self._last_hit is not None and self._clock() - self._last_hit > self._quiet:
            self._summarise("over")

    def close(self) -> None:
        """Log what the hits since the last line were, over or not: when nothing will
        flush this episode any more (its owner stops, or is replaced)."""
        self._summarise("over")

    def _summarise(self, state: str) -> None:
        if self._tally.hits:
            self._logger.warning(f"{self._message} ({state})", extra=self._tally.summary())
            self._tally = _Tally()


LOG_FORMATS = ("logfmt", "json")


def _fields(record: logging.LogRecord, formatter: logging.Formatter
            ) -> Iterator[tuple[str, object]]:
    """The fields of one line, in order: time, level, logger, message, then `extra=` fields."""
    ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    yield "ts", ts.replace("+00:00", "Z")
    yield "level", record.levelname.lower()
    yield "logger", record.name
    yield "msg", record.getMessage()
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            yield key, value
    if record.exc_info:
        yield "error", formatter.formatException(record.exc_info)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_quote(value)}" for key, value in _fields(record, self))


class JsonFormatter(logging.Formatter):
    """ASCII-only JSON: every control and non-ASCII character is a \\u escape, so, as in
    logfmt, text a gateway or a client sent can neither forge a line nor rewrite one."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value if isinstance(value, int | float | bool) else str(value)
                  for key, value in _fields(record, self)}
        return json.dumps(fields)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a client's malformed request (a 20 kB request line, a broken header) as an
    error with a traceback. It is the client's mistake, answered with a 400: not worth a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


def setup_logging(level: str, log_format: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    if level.lower() != "debug":
        handler.addFilter(MalformedRequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
