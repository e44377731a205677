"""The `/sessions` query: parsed and checked once, then applied to every held session.

Username and project filters are regular expressions matched against the whole value, as
`system.util.getSessionInfo` documents its filters (`bi.*` matches `billy`, `bill` does not).
They are compiled with RE2, whose matching time is linear in the input whatever the pattern,
so a hostile pattern such as `(a+)+$` cannot stall the exporter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import re2

KINDS = ("perspective", "vision")
PARAMETERS = ("username", "project", "gateway", "kind")
MAX_PATTERN_LENGTH = 1000
# What an error shows: at most this much of the client's value, and this many of the
# configured gateways (a fleet of thousands must not make an error of megabytes).
MAX_ECHO = 64
MAX_LISTED = 20
_PLAIN_NAME = re2.compile(r"[A-Za-z0-9_.\-]{1,64}")

Matcher = Callable[[str | None], bool]


class BadQuery(Exception):
    """A query the endpoint refuses; `parameter` names the culprit, `message` says why."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(parameter, message)
        self.parameter = parameter
        self.message = message

    def __str__(self) -> str:
        return f"{self.parameter}: {self.message}"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "…"


def echo(value: str) -> str:
    """The client's value as an error shows it: cut short, and quoted with every unprintable
    character escaped (no forged lines, no terminal codes, no reversed text)."""
    return repr(_cut(value))


def parameter_name(name: str) -> str:
    """A query parameter's name as an error starts: as is when it is a plain word."""
    return name if _PLAIN_NAME.fullmatch(name) else echo(name)


def quoted(reason: str) -> str:
    """A regular expression error, whose text after its first ": " is the client's pattern
    from where it went wrong: as is when it is short and printable, else as `echo` shows it."""
    what, colon, text = reason.partition(": ")
    plain = len(text) <= MAX_ECHO and text.isprintable()
    return reason if plain or not colon else f"{what}: {echo(text)}"


def listing(names: Collection[str]) -> str:
    """The configured gateways, sorted: the first `MAX_LISTED` (each cut as an echo is) and
    how many more."""
    if not names:
        return "none configured"
    ordered = sorted(names)
    shown = ", ".join(map(_cut, ordered[:MAX_LISTED]))
    more = len(ordered) - MAX_LISTED
    return f"configured: {shown}" + (f" and {more} more" if more > 0 else "")


# The memory RE2 may give one pattern (its program and its matching state): 1 MiB, not its
# default 8 MiB, since anyone allowed /sessions chooses the patterns and the re2 module keeps
# the last 128 compiled. A username or project pattern needs a few kilobytes; one needing
# more is refused as too large (a 400).
_PATTERN_MAX_MEM = 1 << 20


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a user's bad pattern is a 400, not a line on stderr
    options.max_mem = _PATTERN_MAX_MEM
    return options


def full_matcher(pattern: str, parameter: str) -> Matcher:
    """A predicate true when `pattern` matches the whole value; None counts as ""."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise BadQuery(parameter, f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compiled = re2.compile(pattern, _re2_options())
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise BadQuery(parameter, f"invalid regular expression: {quoted(str(reason))}"
                       ) from None
    # Usernames and projects repeat across thousands of sessions: match each distinct once.
    seen: dict[str | None, bool] = {}

    def matches(value: str | None) -> bool:
        result = seen.get(value)
        if result is None:
            result = seen[value] = compiled.fullmatch(value or "") is not None
        return result

    return matches


@dataclass(frozen=True, slots=True)
class SessionQuery:
    username: Matcher | None = None
    project: Matcher | None = None
    gateways: frozenset[str] | None = None
    kinds: tuple[str, ...] = KINDS

    def wants_gateway(self, name: str) -> bool:
        return self.gateways is None or name in self.gateways

    def wants(self, username: str | None, project: str | None) -> bool:
        return ((self.username is None or self.username(username))
                and (self.project is None or self.project(project)))


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadQuery(name, "given more than once")
    return values[0]


def parse_query(params: Mapping[str, Sequence[str]], known_gateways: Collection[str]
                ) -> SessionQuery:
    """Check every parameter; raise `BadQuery` for the first one that is wrong."""
    for name in params:
        if name not in PARAMETERS:
            raise BadQuery(parameter_name(name),
                           f"unknown parameter (allowed: {', '.join(PARAMETERS)})")
    username, project, kind = (_single(params, n) for n in ("username", "project", "kind"))
    if kind is not None and kind not in KINDS:
        raise BadQuery("kind", f"unknown kind {echo(kind)} (allowed: {', '.join(KINDS)})")
    gateways = params.get("gateway")
    for name in gateways or ():
        if name not in known_gateways:
            raise BadQuery("gateway", f"unknown gateway {echo(name)} ({listing(known_gateways)})")
    return SessionQuery(
        username=full_matcher(username, "username") if username is not None else None,
        project=full_matcher(project, "project") if project is not None else None,
        gateways=frozenset(gateways) if gateways else None,
        kinds=(kind,) if kind else KINDS,
    )
