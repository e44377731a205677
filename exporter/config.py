"""Configuration: a strict schema for the YAML file, then the cross-checks that make a `Config`.

The two steps are kept apart on purpose. The schema step only knows shapes (which keys exist,
what type each holds); the resolve step knows meaning (names are unique, a token file can be
read, a timeout fits inside its poll interval). Both record every problem they find, with its
location, so one run of `--check-config` lists everything that is wrong, not just the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from exporter.digest.privacy import USERNAME_LABEL_MODES, Privacy
from exporter.polling.workers import PROCESSES_SUPPORTED, auto_processes, usable_cpus
from exporter.schema import (
    ConfigError,
    Parser,
    Problem,
    Reader,
    bcrypt_hash_field,
    boolean_field,
    converting,
    duration_field,
    file_field,
    folder_of,
    format_duration,
    load_checked,
    mapping_of,
    one_of,
    parse_duration,
    parse_size,
    positive_int,
    size_at_least,
    string_field,
    whole_number,
)

__all__ = ["Config", "ConfigError", "GatewayConfig", "Problem", "build_config", "load_config",
           "parse_duration", "parse_size"]

SOURCES = ("webdev", "rest")
DEFAULT_POLL_INTERVAL = 15.0
DEFAULT_IDLE_AFTER = 60.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
STALE_AFTER_POLLS = 4
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# The least `max_response_size`: an empty answer is about 250 bytes (a WebDev document) or 400
# (a REST poll's three empty pages and gateway-info), and a session adds about 350. A cap
# below this holds fewer than some 180 sessions: it saves no memory worth having, and only
# fails the polls of a gateway that grows. (`1` used to pass, and no answer fitted.)
MIN_MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_REST_PAGE_SIZE = 500
DEFAULT_MAX_SERIES = 10_000
# A gateway's project label values beyond this many (its busiest) are folded into "__other__".
# Real gateways have tens of projects; the cap stops a broken one from multiplying every
# metric with a project label.
DEFAULT_MAX_PROJECTS = 500
# Upper bounds, for the typo of a digit or a few too many (see the README, Performance).
# Projects: each shows in every project-labelled metric, a lifecycle histogram's dozen series
# among them, however small `max_series_per_metric` is (30,000 made a 110 MB /metrics).
MAX_PROJECTS_BOUND = 100_000
# Worker processes: each holds 30-70 MB and 8 open files, and `auto` stops at 4; 64 is a big
# host's every core.
DIGEST_PROCESSES_BOUND = 64
DEFAULT_REST_TOKEN_HEADER = "X-Ignition-API-Token"
WEBDEV_TOKEN_HEADER = "Authorization"


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
    sessions_endpoint: bool = True
    # bcrypt hashes of the users allowed on /sessions (empty: the web config's users apply).
    sessions_users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    privacy: Privacy = field(default_factory=Privacy)
    # Series cap for each metric with a username label, shared equally by the gateways.
    max_series_per_metric: int = DEFAULT_MAX_SERIES
    # Project label values per gateway (digest.groups.SnapshotGroups.capped).
    max_projects_per_gateway: int = DEFAULT_MAX_PROJECTS
    # Worker processes that digest polls, 0 for the worker thread. A configuration file's
    # default is `auto` (workers.auto_processes); in code, the thread.
    digest_processes: int = 0
    warnings: tuple[str, ...] = ()


# --- the schema step -------------------------------------------------------------------------

_GATEWAY_FIELDS: dict[str, Parser] = {
    "name": string_field,
    "url": string_field,
    "source": one_of(SOURCES),
    "poll_interval": duration_field,
    "timeout": duration_field,
    "connect_timeout": duration_field,
    "stale_after": duration_field,
    "token_file": file_field,
    "token_env": string_field,
    "token_header": string_field,
    "ca_file": file_field,
    "tls_verify": boolean_field,
    "max_response_size": converting(size_at_least(
        MIN_MAX_RESPONSE_BYTES, "an empty answer is a few hundred bytes and each session adds "
        "about 350: a smaller cap saves nothing and fails the polls of a gateway that grows")),
    "page_size": converting(positive_int),
    "session_limit": converting(positive_int),
}


def _gateway_list(reader: Reader, value: object, location: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        reader.fail(location, "expected a non-empty list of gateways")
        return []
    return [
        reader.mapping(item, f"{location}[{i}]", _GATEWAY_FIELDS, required=("name", "url"))
        for i, item in enumerate(value)
    ]


_TOP_FIELDS: dict[str, Parser] = {
    "poll_interval": duration_field,
    "idle_after": duration_field,
    "stale_after": duration_field,
    "timeout": duration_field,
    "gateways": _gateway_list,
    "sessions_endpoint": boolean_field,
    "sessions_basic_auth_users": mapping_of(bcrypt_hash_field),
    "mask_addresses": boolean_field,
    "username_label": one_of(USERNAME_LABEL_MODES),
    "username_hash_key_file": file_field,
    "username_hash_key_env": string_field,
    "max_series_per_metric": converting(positive_int),
    "max_projects_per_gateway": converting(whole_number(1, MAX_PROJECTS_BOUND)),
    "digest_processes": converting(whole_number(0, DIGEST_PROCESSES_BOUND, or_auto=True)),
}


# Keys of each gateway alone, said so when written at the top level.
_GATEWAY_ONLY = {key: "each gateway's keys, under gateways:" for key in _GATEWAY_FIELDS
                 if key not in _TOP_FIELDS}


# --- the resolve step ------------------------------------------------------------------------


def _resolve_secret(raw: Mapping[str, Any], where: str, file_key: str, env_key: str,
                    environ: Mapping[str, str], reader: Reader) -> str | None:
    """A secret given either as a file (`file_key`) or an environment variable (`env_key`)."""
    def at(key: str) -> str:
        return f"{where}.{key}" if where else key

    if file_key in raw and env_key in raw:
        reader.fail(where or file_key, f"set {file_key} or {env_key}, not both")
        return None
    if file_key in raw:
        try:
            secret = Path(raw[file_key]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            reader.fail(at(file_key), f"cannot read the file: {exc.strerror}{_beside(reader)}")
            return None
        if not secret:
            reader.fail(at(file_key), "the file is empty")
        return secret or None
    if env_key in raw:
        secret = environ.get(raw[env_key], "").strip()
        if not secret:
            reader.fail(at(env_key), _unset_variable(raw[env_key], file_key))
        return secret or None
    return None


def _beside(reader: Reader) -> str:
    """Where a relative secret's file was looked for: the configuration's folder, never the
    path as written, which may be the secret itself (`token: …`, renamed `token_file` as the
    unknown key's error suggests); its line and column say where it is written."""
    if reader.folder is None:
        return ""
    return f" (a relative path is read from the configuration's folder, {reader.folder})"


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _unset_variable(name: str, file_key: str) -> str:
    """Why a secret's variable gives nothing, never saying its name: the usual first mistake
    is the secret itself written there, which would then reach the log (and the journal,
    through the unit's check). The problem's line and column say where it is written."""
    if not _VARIABLE_NAME.fullmatch(name):
        return (f"this is no environment variable's name (letters, digits and _): it names "
                f"the variable that holds the secret, not the secret itself; to give the "
                f"secret in a file, set {file_key}")
    return ("the environment variable it names is not set, or empty, in the exporter's "
            "environment (under systemd: Environment= or EnvironmentFile=; in a container: "
            "-e)")


def _resolve_privacy(top: Mapping[str, Any], environ: Mapping[str, str],
                     reader: Reader) -> Privacy:
    mode = top.get("username_label", "keep")
    key = _resolve_secret(top, "", "username_hash_key_file", "username_hash_key_env",
                          environ, reader)
    if mode == "hash" and key is None and not _failed(reader, "username_hash_key_file",
                                                       "username_hash_key_env"):
        reader.fail("username_hash_key_file", "username_label: hash needs a key "
                    "(username_hash_key_file or username_hash_key_env)")
    return Privacy(username_label=mode, hash_key=key.encode() if key else None,
                   mask_addresses=top.get("mask_addresses", False))


def _failed(reader: Reader, *locations: str) -> bool:
    """True if a problem is already recorded at one of `locations` (or inside one)."""
    return any(map(reader.failed, locations))


def _written_at(raw: Mapping[str, Any], where: str, key: str, reader: Reader) -> str:
    """Where the user wrote the value a gateway uses for `key`: in the gateway (valid or
    rejected), or at the top level (a default is never wrong, so never a problem's location)."""
    mine = f"{where}.{key}"
    return mine if key in raw or _failed(reader, mine) else key


def _resolve_timing(raw: Mapping[str, Any], where: str, top: Mapping[str, Any],
                    reader: Reader) -> tuple[float, float, float]:
    """poll_interval, timeout and stale_after of one gateway, checked against each other."""
    interval = raw.get("poll_interval", top.get("poll_interval", DEFAULT_POLL_INTERVAL))
    timeout = raw.get("timeout", top.get("timeout", min(DEFAULT_TIMEOUT, interval)))
    stale_after = raw.get("stale_after", top.get("stale_after", interval * STALE_AFTER_POLLS))
    at = {key: _written_at(raw, where, key, reader)
          for key in ("poll_interval", "timeout", "stale_after")}
    if not _failed(reader, at["poll_interval"]):
        _check_timing(interval, timeout, stale_after, at, _named(raw, where), reader)
    return interval, timeout, stale_after


def _named(raw: Mapping[str, Any], where: str) -> str:
    """A gateway's location with its name, for a problem reported away from it (at a
    top-level key): a long file's reader looks for `plant-a`, not for `gateways[31]`."""
    name = raw.get("name")
    return f"{where} {name!r}" if isinstance(name, str) and name.strip() else where


def _check_timing(interval: float, timeout: float, stale_after: float, at: Mapping[str, str],
                  where: str, reader: Reader) -> None:
    """Report a timeout or stale_after that does not fit the gateway's poll interval.

    A problem is reported where the offending value was written (`at`): in the gateway, or at
    the top-level key, naming the gateway (a top-level value may fail for several, and each
    is named). A check that involves a value already rejected by the schema step is skipped
    (it would only repeat the problem): only a gateway's own key can hold such a problem, as
    a top-level value in use is valid, so a problem at its key is another gateway's.
    """
    def rejected(key: str) -> bool:
        return at[key] != key and _failed(reader, at[key])

    def report(key: str, problem: Callable[[str], str]) -> None:
        if not rejected(key):
            reader.fail(at[key], problem("" if at[key] != key else f" of {where}"))

    every, bound = format_duration(interval), format_duration(timeout)
    if timeout > interval:
        report("timeout", lambda of: f"{bound} exceeds the poll interval{of} "
               f"{f'({every})' if of else every}: polls would overlap")
        return
    # The data's age counts from when a poll finished; the next one starts on schedule and
    # may take its whole timeout. (Rounded: 0.1 + 0.2 must not exceed 0.3.)
    needed = round(interval + timeout, 9)
    if stale_after < needed and not rejected("timeout"):
        report("stale_after", lambda of: (
            f"{format_duration(stale_after)} is shorter than poll_interval + timeout{of} "
            f"({every} + {bound}): {'its data' if of else 'data'} would go stale between two "
            f"polls; use {format_duration(needed)} or more"))


def _resolve_connect_timeout(raw: Mapping[str, Any], where: str, timeout: float,
                             reader: Reader) -> float:
    """The connect timeout lies within the poll's timeout: a written one that does not is a
    mistake to report (it could never take effect); the default is simply cut to fit."""
    written = raw.get("connect_timeout")
    if written is None:
        return min(DEFAULT_CONNECT_TIMEOUT, timeout)
    if written > timeout and not _failed(reader, _written_at(raw, where, "timeout", reader)):
        reader.fail(f"{where}.connect_timeout", f"{format_duration(written)} exceeds the "
                    f"timeout {format_duration(timeout)}, which bounds the whole poll")
    return min(written, timeout)


def _url_problem(url: str) -> str | None:
    """What makes `url` one the exporter cannot request, or None. A host or port that does
    not parse would otherwise fail every poll, with the whole URL (and any password in it)
    in the error."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check)
        if parts.scheme in ("http", "https") and parts.hostname:
            parts.hostname.encode("idna")  # as the client encodes it: labels of 1 to 63
            return None
    except ValueError as exc:  # UnicodeError included
        return f"not a valid URL: {exc}"
    return f"expected an http:// or https:// URL, got {url!r}"


def _tls_warnings(raw: Mapping[str, Any], where: str, url: object) -> Iterator[str]:
    """TLS settings that weaken the check, or that cannot take effect: on an `http://` url,
    `ca_file` and `tls_verify` mean nothing, and most likely the url should be `https://`."""
    if raw.get("tls_verify") is False:
        yield f"{where}.tls_verify is false: the gateway's certificate is not checked"
    written = [key for key in ("ca_file", "tls_verify") if key in raw]
    if written and isinstance(url, str) and url.lower().startswith("http://"):
        yield (f"{where}: {' and '.join(written)} take{'s' if len(written) == 1 else ''} no "
               "effect on an http:// url, which uses no TLS; is the url meant to be https://?")


def _resolve_gateway(raw: Mapping[str, Any], where: str, top: Mapping[str, Any],
                     environ: Mapping[str, str], reader: Reader,
                     warnings: list[str]) -> GatewayConfig:
    name, url = raw.get("name", ""), raw.get("url", "")
    if "name" in raw and not name.strip():
        reader.fail(f"{where}.name", "must not be empty")
    problem = _url_problem(url) if "url" in raw else None
    if problem:
        reader.fail(f"{where}.url", problem)
    interval, timeout, stale_after = _resolve_timing(raw, where, top, reader)
    if "ca_file" in raw and not Path(raw["ca_file"]).is_file():
        reader.fail(f"{where}.ca_file", f"no such file: {raw['ca_file']}")
    warnings.extend(_tls_warnings(raw, where, url))
    source = raw.get("source", "webdev")
    _check_source_keys(raw, where, source, reader)
    default_header = DEFAULT_REST_TOKEN_HEADER if source == "rest" else WEBDEV_TOKEN_HEADER
    return GatewayConfig(
        name=name,
        url=url,
        source=source,
        poll_interval=interval,
        timeout=timeout,
        connect_timeout=_resolve_connect_timeout(raw, where, timeout, reader),
        stale_after=stale_after,
        token=_resolve_secret(raw, where, "token_file", "token_env", environ, reader),
        token_header=raw.get("token_header", default_header),
        ca_file=raw.get("ca_file"),
        tls_verify=raw.get("tls_verify", True),
        max_response_bytes=raw.get("max_response_size", DEFAULT_MAX_RESPONSE_BYTES),
        page_size=raw.get("page_size", DEFAULT_REST_PAGE_SIZE),
        session_limit=raw.get("session_limit"),
    )


# Keys only a `source: rest` gateway uses: what it does with each, and why WebDev cannot.
_REST_ONLY = {
    "page_size": "reads pages (the WebDev resource answers in one document)",
    "token_header": "sends the token in another header (the WebDev script, session_exporter.py, "
                    "reads only Authorization: Bearer, and would refuse every poll of {name} "
                    "with 401)",
}


def _check_source_keys(raw: Mapping[str, Any], where: str, source: str,
                       reader: Reader) -> None:
    """A key only another source uses can never take effect, or fails every poll: most
    likely `source: rest` was forgotten, which the user should hear about before the first
    poll fails."""
    if source == "rest" or _failed(reader, f"{where}.source"):
        return
    name = raw.get("name") or where
    for key, does in _REST_ONLY.items():
        if key in raw:
            reader.fail(f"{where}.{key}", f"only a source: rest gateway "
                        f"{does.format(name=name)}: remove it, or set source: rest")


def _resolve_processes(top: Mapping[str, Any], reader: Reader, warnings: list[str]) -> int:
    """`digest_processes` as a number: `auto` from the cores this process may use; a number
    above them is allowed (the workers then share cores), and warned about."""
    written = top.get("digest_processes", "auto")
    cpus = usable_cpus()
    if written == "auto":
        return auto_processes(cpus)
    if written and not PROCESSES_SUPPORTED:
        reader.fail("digest_processes", "worker processes need a forkserver, which this "
                    "platform lacks (Windows): use 0, the worker thread")
    elif written > cpus:
        warnings.append(f"digest_processes is {written}, but this process may use {cpus} "
                        "core(s): the worker processes will share them")
    return int(written)


def _check_unique_names(gateways: tuple[GatewayConfig, ...], reader: Reader) -> None:
    seen: dict[str, int] = {}
    for i, gateway in enumerate(gateways):
        if gateway.name in seen:
            first = seen[gateway.name]
            reader.fail(f"gateways[{i}].name",
                        f"duplicate gateway name {gateway.name!r} (also gateways[{first}])")
        elif gateway.name:  # a missing name is reported as missing, not as a duplicate
            seen[gateway.name] = i


def _check_series_budget(top: Mapping[str, Any], gateways: int, reader: Reader) -> None:
    """`max_series_per_metric` is shared among the gateways, and a gateway not polled yet
    gets an equal share: with fewer series than gateways that share is none, and every
    username of every gateway would start folded into `__other__`."""
    budget = top.get("max_series_per_metric", DEFAULT_MAX_SERIES)
    if budget >= gateways or _failed(reader, "max_series_per_metric"):
        return
    why = (f"each needs at least one series of each capped metric, and an equal share (each "
           f"gateway's until its first poll) would be none; set max_series_per_metric to "
           f"{gateways} or more")
    if "max_series_per_metric" in top:
        reader.fail("max_series_per_metric",
                    f"{budget} is fewer than the {gateways} gateways that share it: {why}")
    else:
        reader.fail("gateways", f"{gateways} gateways are more than the default "
                    f"max_series_per_metric ({budget}) can be shared among: {why}")


def build_config(document: object, environ: Mapping[str, str] | None = None,
                 folder: Path | None = None) -> Config:
    """Validate a parsed YAML document and turn it into a frozen `Config`.

    Both steps always run in full, so a problem of one kind never hides one of the other:
    a wrong `source` and a wrong `url` in one gateway are reported together. Relative file
    paths are read from `folder` (the file's own, as Prometheus reads its configuration's),
    or the current one.
    """
    if document is None:
        raise ConfigError([Problem("(top level)", "the file is empty: it needs at least a "
                                   "`gateways:` list (see the README, Configuration)")])
    environ = os.environ if environ is None else environ
    reader = Reader(folder)
    top = reader.mapping(document, "", _TOP_FIELDS, required=("gateways",),
                         elsewhere=_GATEWAY_ONLY)
    warnings: list[str] = []
    gateways = tuple(
        _resolve_gateway(raw, f"gateways[{i}]", top, environ, reader, warnings)
        for i, raw in enumerate(top.get("gateways", ()))
    )
    _check_unique_names(gateways, reader)
    _check_series_budget(top, len(gateways), reader)
    privacy = _resolve_privacy(top, environ, reader)
    processes = _resolve_processes(top, reader, warnings)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(gateways=gateways, idle_after=top.get("idle_after", DEFAULT_IDLE_AFTER),
                  sessions_endpoint=top.get("sessions_endpoint", True),
                  sessions_users=MappingProxyType(top.get("sessions_basic_auth_users", {})),
                  privacy=privacy,
                  max_series_per_metric=top.get("max_series_per_metric", DEFAULT_MAX_SERIES),
                  max_projects_per_gateway=top.get("max_projects_per_gateway",
                                                   DEFAULT_MAX_PROJECTS),
                  digest_processes=processes, warnings=tuple(warnings))


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    return load_checked(path, lambda document: build_config(document, environ, folder_of(path)))
