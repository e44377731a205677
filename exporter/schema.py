"""The building blocks of a strict YAML configuration: a reader that converts values and
records every problem with its location, the value parsers, and the one error type.

Both configuration files (the exporter's and the web configuration) are read with these, so
they report problems the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Problem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a configuration, each with the key it concerns."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return "invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems)


# --- durations and sizes ---------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {
    "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400,
}
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9,
    "GiB": 2**30,
}


def parse_duration(value: object) -> float:
    """Seconds from `15`, `"15"`, `"500ms"`, `"1m30s"`; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"invalid duration {value!r} (use e.g. 500ms, 15s, 2m or plain seconds)"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `1048576` or `"32MiB"`; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    raise ValueError(f"invalid size {value!r} (use a positive number of bytes or e.g. 32MiB)")


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s"


Parser = Callable[["Reader", object, str], Any]
"""Converts one value at a location, recording problems on the reader; returns INVALID if bad."""


class Reader:
    """Walks the YAML tree, converting values and recording each problem at its location."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, message))

    def mapping(self, value: object, location: str, fields: Mapping[str, Parser],
                required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(location, f"expected a mapping, got {_type_name(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{location}.{key}" if location else str(key)
            parser = fields.get(key) if isinstance(key, str) else None
            if parser is None:
                self.fail(where, f"unknown key (allowed: {', '.join(fields)})")
                continue
            converted = parser(self, item, where)
            if converted is not INVALID:
                out[key] = converted
        for key in required:
            if key not in value:
                self.fail(f"{location}.{key}" if location else key, "required key is missing")
        return out


INVALID = object()


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def converting(convert: Callable[[object], Any]) -> Parser:
    def parse(reader: Reader, value: object, location: str) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            reader.fail(location, str(exc))
            return INVALID

    return parse


def typed(kind: type, description: str) -> Parser:
    def parse(reader: Reader, value: object, location: str) -> Any:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        reader.fail(location, f"expected {description}, got {_type_name(value)}")
        return INVALID

    return parse


def positive_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"expected a positive whole number, got {value!r}")


def one_of(choices: tuple[str, ...]) -> Parser:
    def convert(value: object) -> str:
        if value in choices:
            return str(value)
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return converting(convert)


def mapping_of(value: Parser) -> Parser:
    """A mapping with free-form string keys (user names, header names) and checked values."""

    def parse(reader: Reader, item: object, location: str) -> Any:
        if not isinstance(item, dict):
            reader.fail(location, f"expected a mapping, got {_type_name(item)}")
            return INVALID
        out = {}
        for key, inner in item.items():
            converted = value(reader, inner, f"{location}.{key}")
            if converted is not INVALID:
                out[str(key)] = converted
        return out

    return parse


duration_field = converting(parse_duration)
string_field = typed(str, "a string")
boolean_field = typed(bool, "true or false")



def load_yaml(path: str | Path) -> object:
    """The parsed document, or a ConfigError naming the file (and line, for syntax errors)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), f"cannot read configuration: {exc}")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(where, f"invalid YAML: {problem}")]) from None


def bcrypt_hash_field(reader: Reader, value: object, location: str) -> Any:
    """A password hash as `htpasswd -nBC 10 USER` makes it; the password itself never."""
    if isinstance(value, str) and value[:4] in ("$2y$", "$2b$", "$2a$") and len(value) == 60:
        return value.encode()
    reader.fail(location, "expected a bcrypt hash ($2y$… or $2b$…, 60 characters; make one "
                "with `htpasswd -nBC 10 USER`)")
    return INVALID
