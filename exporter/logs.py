"""Structured logs to stderr in logfmt (`ts=… level=… msg=… key=value`), the format Prometheus
and its exporters use, so the same log tooling reads them."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        fields = [f"ts={ts.replace('+00:00', 'Z')}", f"level={record.levelname.lower()}",
                  f"logger={record.name}", f"msg={_quote(record.getMessage())}"]
        fields += [f"{key}={_quote(value)}" for key, value in vars(record).items()
                   if key not in _STANDARD and not key.startswith("_")]
        if record.exc_info:
            fields.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(fields)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a client's malformed request (a 20 kB request line, a broken header) as an
    error with a traceback. It is the client's mistake, answered with a 400: not worth a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    if level.lower() != "debug":
        handler.addFilter(MalformedRequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
