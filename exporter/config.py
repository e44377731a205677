"""Configuration: a strict schema for the YAML file, then the cross-checks that make a `Config`.

The two steps are kept apart on purpose. The schema step only knows shapes (which keys exist,
what type each holds); the resolve step knows meaning (names are unique, a token file can be
read, a timeout fits inside its poll interval). Both record every problem they find, with its
location, so one run of `--check-config` lists everything that is wrong, not just the first.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

SOURCES = ("webdev", "rest")
DEFAULT_POLL_INTERVAL = 15.0
DEFAULT_IDLE_AFTER = 60.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
STALE_AFTER_POLLS = 4
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
DEFAULT_REST_PAGE_SIZE = 500
DEFAULT_REST_TOKEN_HEADER = "X-Ignition-API-Token"
WEBDEV_TOKEN_HEADER = "Authorization"


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


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    name: str
    url: str
    source: str = "webdev"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    stale_after: float = DEFAULT_POLL_INTERVAL * STALE_AFTER_POLLS
    # The secret itself: kept out of repr() so it cannot leak through a log or traceback.
    token: str | None = field(default=None, repr=False)
    token_header: str = WEBDEV_TOKEN_HEADER
    ca_file: str | None = None
    tls_verify: bool = True
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    page_size: int = DEFAULT_REST_PAGE_SIZE
    session_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Config:
    gateways: tuple[GatewayConfig, ...]
    idle_after: float = DEFAULT_IDLE_AFTER
    warnings: tuple[str, ...] = ()


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


# --- the schema step -------------------------------------------------------------------------

Parser = Callable[["_Reader", object, str], Any]


class _Reader:
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
            if converted is not _INVALID:
                out[key] = converted
        for key in required:
            if key not in value:
                self.fail(f"{location}.{key}" if location else key, "required key is missing")
        return out


_INVALID = object()


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _converting(convert: Callable[[object], Any]) -> Parser:
    def parse(reader: _Reader, value: object, location: str) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            reader.fail(location, str(exc))
            return _INVALID

    return parse


def _typed(kind: type, description: str) -> Parser:
    def parse(reader: _Reader, value: object, location: str) -> Any:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        reader.fail(location, f"expected {description}, got {_type_name(value)}")
        return _INVALID

    return parse


def _positive_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"expected a positive whole number, got {value!r}")


def _one_of(choices: tuple[str, ...]) -> Parser:
    def convert(value: object) -> str:
        if value in choices:
            return str(value)
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return _converting(convert)


_duration = _converting(parse_duration)
_string = _typed(str, "a string")
_boolean = _typed(bool, "true or false")

_GATEWAY_FIELDS: dict[str, Parser] = {
    "name": _string,
    "url": _string,
    "source": _one_of(SOURCES),
    "poll_interval": _duration,
    "timeout": _duration,
    "connect_timeout": _duration,
    "stale_after": _duration,
    "token_file": _string,
    "token_env": _string,
    "token_header": _string,
    "ca_file": _string,
    "tls_verify": _boolean,
    "max_response_size": _converting(parse_size),
    "page_size": _converting(_positive_int),
    "session_limit": _converting(_positive_int),
}


def _gateway_list(reader: _Reader, value: object, location: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        reader.fail(location, "expected a non-empty list of gateways")
        return []
    return [
        reader.mapping(item, f"{location}[{i}]", _GATEWAY_FIELDS, required=("name", "url"))
        for i, item in enumerate(value)
    ]


_TOP_FIELDS: dict[str, Parser] = {
    "poll_interval": _duration,
    "idle_after": _duration,
    "stale_after": _duration,
    "timeout": _duration,
    "gateways": _gateway_list,
}


# --- the resolve step ------------------------------------------------------------------------


def _resolve_token(raw: Mapping[str, Any], where: str, environ: Mapping[str, str],
                   reader: _Reader) -> str | None:
    if "token_file" in raw and "token_env" in raw:
        reader.fail(where, "set token_file or token_env, not both")
        return None
    if "token_file" in raw:
        try:
            token = Path(raw["token_file"]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            reader.fail(f"{where}.token_file", f"cannot read token file: {exc.strerror}")
            return None
        if not token:
            reader.fail(f"{where}.token_file", "token file is empty")
        return token or None
    if "token_env" in raw:
        token = environ.get(raw["token_env"], "").strip()
        if not token:
            reader.fail(f"{where}.token_env",
                        f"environment variable {raw['token_env']} is not set or empty")
        return token or None
    return None


def _resolve_gateway(raw: Mapping[str, Any], where: str, top: Mapping[str, Any],
                     environ: Mapping[str, str], reader: _Reader,
                     warnings: list[str]) -> GatewayConfig:
    name, url = raw.get("name", ""), raw.get("url", "")
    if "name" in raw and not name.strip():
        reader.fail(f"{where}.name", "must not be empty")
    parts = urlsplit(url)
    if "url" in raw and (parts.scheme not in ("http", "https") or not parts.hostname):
        reader.fail(f"{where}.url", f"expected an http:// or https:// URL, got {url!r}")
    interval = raw.get("poll_interval", top.get("poll_interval", DEFAULT_POLL_INTERVAL))
    timeout = raw.get("timeout", top.get("timeout", min(DEFAULT_TIMEOUT, interval)))
    if timeout > interval:
        reader.fail(f"{where}.timeout", f"{format_duration(timeout)} exceeds the poll interval "
                    f"{format_duration(interval)}: polls would overlap")
    stale_after = raw.get("stale_after", top.get("stale_after", interval * STALE_AFTER_POLLS))
    if stale_after < interval:
        reader.fail(f"{where}.stale_after", f"{format_duration(stale_after)} is shorter than "
                    f"the poll interval {format_duration(interval)}: data would vanish "
                    "between polls")
    if "ca_file" in raw and not Path(raw["ca_file"]).is_file():
        reader.fail(f"{where}.ca_file", f"no such file: {raw['ca_file']}")
    if raw.get("tls_verify") is False:
        warnings.append(f"{where}.tls_verify is false: the gateway's certificate is not checked")
    source = raw.get("source", "webdev")
    default_header = DEFAULT_REST_TOKEN_HEADER if source == "rest" else WEBDEV_TOKEN_HEADER
    return GatewayConfig(
        name=name,
        url=url,
        source=source,
        poll_interval=interval,
        timeout=timeout,
        connect_timeout=min(raw.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT), timeout),
        stale_after=stale_after,
        token=_resolve_token(raw, where, environ, reader),
        token_header=raw.get("token_header", default_header),
        ca_file=raw.get("ca_file"),
        tls_verify=raw.get("tls_verify", True),
        max_response_bytes=raw.get("max_response_size", DEFAULT_MAX_RESPONSE_BYTES),
        page_size=raw.get("page_size", DEFAULT_REST_PAGE_SIZE),
        session_limit=raw.get("session_limit"),
    )


def build_config(document: object, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed YAML document and turn it into a frozen `Config`."""
    environ = os.environ if environ is None else environ
    reader = _Reader()
    top = reader.mapping(document, "", _TOP_FIELDS, required=("gateways",))
    if reader.problems:
        raise ConfigError(reader.problems)
    warnings: list[str] = []
    gateways = tuple(
        _resolve_gateway(raw, f"gateways[{i}]", top, environ, reader, warnings)
        for i, raw in enumerate(top["gateways"])
    )
    seen: dict[str, int] = {}
    for i, gateway in enumerate(gateways):
        if gateway.name in seen:
            first = seen[gateway.name]
            reader.fail(f"gateways[{i}].name",
                        f"duplicate gateway name {gateway.name!r} (also gateways[{first}])")
        seen.setdefault(gateway.name, i)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(gateways=gateways, idle_after=top.get("idle_after", DEFAULT_IDLE_AFTER),
                  warnings=tuple(warnings))


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), f"cannot read configuration: {exc}")]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(where, f"invalid YAML: {problem}")]) from None
    return build_config(document, environ)
