"""The building blocks of a strict YAML configuration: a reader that converts values and
records every problem with its location, the value parsers, and the one error type.

Both configuration files (the exporter's and the web configuration) are read with these, so
they report problems the same way.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml


@dataclass(frozen=True, slots=True)
class Problem:
    location: str
    message: str
    # (line, column) in its file, from 0, where it has a place there: to list a file's
    # problems in the order they are written.
    at: tuple[int, int] | None = None

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


# A configuration error names at most this many problems, then how many more there are: one
# careless file (a log passed as --config) must not make an error of megabytes, which a reload
# logs as one line and answers as one HTTP body.
MAX_PROBLEMS = 100


class ConfigError(Exception):
    """Every problem found in a configuration, each with the key it concerns; `shown` are
    the ones an error message names (MAX_PROBLEMS, then how many more)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = tuple(problems)

    @property
    def shown(self) -> list[str]:
        more = len(self.problems) - MAX_PROBLEMS
        return [*map(str, self.problems[:MAX_PROBLEMS]),
                *([f"and {more} more problems"] if more > 0 else [])]

    def __str__(self) -> str:
        return "invalid configuration:\n" + "\n".join(f"  {p}" for p in self.shown)


# --- durations and sizes ---------------------------------------------------------------------

# Prometheus's duration grammar: whole numbers, units from largest to smallest, each at most
# once (`1h30m`, `500ms`; not `30s1m`, `1m1m` or `1.5m`).
_DURATION_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60),
                   ("s", 1), ("ms", 0.001))
# ASCII digits only: `\d` alone also matches other scripts' digits, which Prometheus refuses.
_DURATION = re.compile("".join(rf"(?:(\d+){unit})?" for unit, _ in _DURATION_UNITS), re.ASCII)
# Plain seconds, as a YAML number or a string of one; a fraction is allowed (`0.5`).
_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_DURATION_HELP = ("whole numbers with the units y, w, d, h, m, s, ms, largest first and each "
                  "at most once (500ms, 15s, 1m30s), or plain seconds")
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.ASCII)
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9,
    "GiB": 2**30,
}


def parse_duration(value: object) -> float:
    """Seconds from `15`, `0.5`, `"15"`, `"500ms"`, `"1m30s"`; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {_type_name(value)}")
    seconds = value if not isinstance(value, str) else _duration_text(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return float(seconds)


def _duration_text(value: str) -> float:
    text = value.strip()
    if text.startswith("-"):
        return -1.0  # reported as "must be positive", as the number -5 is
    if _SECONDS.fullmatch(text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    return sum(int(count) * size for count, (_, size) in zip(match.groups(), _DURATION_UNITS,
                                                              strict=True) if count)


def parse_size(value: object) -> int:
    """Bytes from `1048576` or `"32MiB"`; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    raise ValueError(f"invalid size {value!r} (a positive number of bytes, or with one of the "
                     f"units B, KB, KiB, MB, MiB, GB, GiB: 32MiB)")


def size_at_least(minimum: int, why: str) -> Callable[[object], int]:
    """A size (`parse_size`) of at least `minimum` bytes; `why` says what a smaller one
    cannot hold."""
    def convert(value: object) -> int:
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"expected at least {format_size(minimum)}, got "
                             f"{_as_written(value)}: {why}")
        return size

    return convert


def format_size(size: int) -> str:
    """`65536` as `64KiB`: the largest binary unit that gives a whole number."""
    unit = next(unit for unit in ("GiB", "MiB", "KiB", "B") if size % _SIZE_UNITS[unit] == 0)
    return f"{size // _SIZE_UNITS[unit]}{unit}"


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s"


T = TypeVar("T")

Parser = Callable[["Reader", object, str], Any]
"""Converts one value at a location, recording problems on the reader; returns INVALID if bad."""


_NOWHERE: Mapping[str, str] = MappingProxyType({})
# How many keys deep `Reader.failed` looks inside a location (the schema's are two deep).
_FAILED_DEPTH = 3


class Reader:
    """Walks the YAML tree, converting values and recording each problem at its location.

    `folder` is the folder of the file read (`folder_of`), which its relative file paths are
    read from (`file_field`); without one (a document built in code), from the current one.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.problems: list[Problem] = []
        self.folder = folder
        self._failed: set[str] = set()  # every problem's location and those enclosing it

    def fail(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, message))
        parts = location.split(".", _FAILED_DEPTH)
        self._failed.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))

    def failed(self, location: str) -> bool:
        """Whether a problem is recorded at `location` or inside it (`gateways[0]` for
        `gateways[0].url`), as cross-checks ask before they check a value again: one lookup,
        not a pass over every problem (5,000 gateways lacking a url took 32 s)."""
        return location in self._failed

    def mapping(self, value: object, location: str, fields: Mapping[str, Parser],
                required: tuple[str, ...] = (), elsewhere: Mapping[str, str] = _NOWHERE
                ) -> dict[str, Any]:
        """The known keys of a mapping, converted. `elsewhere` names where keys that belong
        to another mapping go (`token_file` above `gateways:`)."""
        if not isinstance(value, dict):
            self.fail(location or "(top level)", f"expected a mapping, got {_type_name(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{location}.{key}" if location else str(key)
            parser = fields.get(key) if isinstance(key, str) else None
            if parser is None:  # guessed at only while the error would show the guess
                guess = len(self.problems) < MAX_PROBLEMS
                self.fail(where, _unknown(key, fields if guess else {}, value, elsewhere,
                                          allowed=fields))
                continue
            converted = parser(self, item, where)
            if converted is not INVALID:
                out[key] = converted
        for key in required:
            if key not in value:
                self.fail(f"{location}.{key}" if location else key, "required key is missing")
        return out


INVALID = object()


def _unknown(key: object, guesses: Mapping[str, Parser], written: Mapping[Any, Any],
             elsewhere: Mapping[str, str], allowed: Mapping[str, Parser]) -> str:
    if isinstance(key, str) and key in elsewhere:
        return f"not a key here: it is one of {elsewhere[key]}"
    return f"unknown key{_guess(key, guesses, written)} (allowed: {', '.join(allowed)})"


def _guess(key: object, fields: Mapping[str, Parser], written: Mapping[Any, Any]) -> str:
    """`: did you mean timeout?` for `timout`, `stale-after` and the like, and the fields
    that begin with a word given alone (`token`: token_file or token_env...); nothing for a
    key like no field, nor one like a key written beside it (renamed so, it would be written
    twice)."""
    free = [name for name in fields if name not in written]
    text = str(key).replace("-", "_")
    close = difflib.get_close_matches(text, free, n=1, cutoff=0.8) \
        or [name for name in free if name.startswith(text + "_")]
    if not close:
        return ""
    return f": did you mean {' or '.join(close)}?"


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _as_written(value: object) -> str:
    """A value as the YAML that gave it, for an error: `true`, not Python's `True`; `nothing`
    for an empty value, not `None`."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


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
        reader.fail(location, f"expected {description}, got {_type_name(value)}"
                    + (_BOOLEAN_WORDS[value] if kind is str and isinstance(value, bool) else ""))
        return INVALID

    return parse


# Text that YAML 1.1 (PyYAML) reads as a boolean where YAML 1.2 and most people read a word.
_BOOLEAN_WORDS = {
    True: " (YAML reads yes, on and true unquoted as true): quote it, as in 'on'",
    False: " (YAML reads no, off and false unquoted as false): quote it, as in 'off'",
}


def positive_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"expected a positive whole number, got {_as_written(value)}")


def whole_number(low: int, high: int, *, or_auto: bool = False) -> Callable[[object], Any]:
    """A whole number from `low` to `high`, or with `or_auto` also the word `auto` (resolved
    later, where its meaning is known). The upper bound catches what no type check can: a
    digit or a few too many, which would otherwise be taken at their word."""
    words = "auto or " if or_auto else ""

    def convert(value: object) -> int | str:
        if (or_auto and value == "auto") or (isinstance(value, int) and not isinstance(
                value, bool) and low <= value <= high):
            return value  # type: ignore[return-value]
        raise ValueError(f"expected {words}a whole number from {low} to {high}, "
                         f"got {_as_written(value)}")

    return convert


def one_of(choices: tuple[str, ...]) -> Parser:
    def convert(value: object) -> str:
        if value in choices:
            return str(value)
        raise ValueError(f"expected one of {', '.join(choices)}, got {_as_written(value)}")

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


def folder_of(path: str | Path) -> Path:
    """The folder of a configuration file, as an absolute path: what its relative file paths
    are read from, whatever folder the exporter was started in (systemd starts it in `/`)."""
    return Path(path).absolute().parent


def file_field(reader: Reader, value: object, location: str) -> Any:
    """A file's path, made absolute here, so that the check, the running exporter and each
    reload all read the one file: a relative path is read beside the configuration file
    that names it, as Prometheus and exporter-toolkit read theirs."""
    path = string_field(reader, value, location)
    if path == "":
        reader.fail(location, "expected a file's path, got an empty string")
        return INVALID
    if path is INVALID or reader.folder is None:
        return path
    return os.path.join(reader.folder, path)  # an absolute `path` is kept as it is



# A value shown in an error is cut to this: it is the file's text, and may be any length.
_SHOWN_VALUE_CHARS = 40


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
# The numbers YAML 1.1 reads unlike YAML 1.2 (and unlike most people): base 60, `1:30` (90),
# and octal, `010` (8; `07` is 7 in both). Their tags have a space, which no tag written in a
# document has.
_BASE_60_TAG, _OCTAL_TAG = "yaml 1.1 base 60", "yaml 1.1 octal"
_OCTAL = re.compile(r"[-+]?0_*[0-7][0-7_]*", re.ASCII)


class _Loader(yaml.SafeLoader):
    """SafeLoader, whose values that cannot be built are YAML errors at their place, as a
    malformed document's are. PyYAML raises them as bare exceptions, with no place: a date
    that does not exist (`2020-13-45`, which YAML 1.1 takes for a date), an integer of more
    digits than Python reads (4,300), `!!int abc`.

    The plain numbers YAML 1.1 alone reads as base 60 or octal are given tags of their own,
    built as the text YAML 1.2 reads, and refused at their place (`_misread`): PyYAML took
    `poll_interval: 1:30` for 90 seconds and `010` for 8, without a word. Digits grouped with
    `_` (`1_000`) stay numbers: no reader takes them for another number."""

    def resolve(self, kind: type[yaml.Node], value: str,
                implicit: tuple[bool, bool]) -> str:
        tag = super().resolve(kind, value, implicit)
        if tag == _INT_TAG and _OCTAL.fullmatch(value) and _octal_differs(value):
            return _OCTAL_TAG
        if tag in (_INT_TAG, _FLOAT_TAG) and ":" in value:  # YAML 1.1's only numbers with one
            return _BASE_60_TAG
        return tag

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # Where each mapping and list of the document is written, by its id (`_Written`).
        self.places: dict[int, _Written] = {}
        self._alias_marks: dict[tuple[int, int], yaml.Mark] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """The node, noting where a list item written as an alias (`- *g`) is: the node it
        stands for is its anchor's, with the anchor's place."""
        if isinstance(parent, yaml.SequenceNode) and self.check_event(yaml.AliasEvent):
            self._alias_marks[id(parent), index] = self.peek_event().start_mark
        return super().compose_node(parent, index)

    def construct_yaml_map(self, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
        data: dict[Any, Any] = {}
        yield data
        data.update(self.construct_mapping(node))  # merges flattened: before the own keys
        self.places[id(data)] = _Written(data, {self.construct_object(key): key.start_mark
                                                for key, _ in node.value})

    def construct_yaml_seq(self, node: yaml.SequenceNode) -> Iterator[list[Any]]:
        data: list[Any] = []
        yield data
        data.extend(self.construct_sequence(node))
        aliases = {index for index in range(len(node.value))
                   if (id(node), index) in self._alias_marks}
        self.places[id(data)] = _Written(
            data, [self._alias_marks.get((id(node), index), item.start_mark)
                   for index, item in enumerate(node.value)], frozenset(aliases))

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.tag == _INT_TAG and isinstance(node, yaml.ScalarNode) \
                and _OCTAL.fullmatch(node.value) and _octal_differs(node.value):
            # Tagged `!!int 010`, which skips `resolve`: PyYAML would build 8 from it.
            raise yaml.constructor.ConstructorError(None, None, _octal(node.value),
                                                    node.start_mark)
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # KeyError, IndexError, AttributeError too (`!!bool maybe`,
            # `!!int ''`, `!!timestamp foo`): each is the value's fault
            value = str(node.value) if isinstance(node, yaml.ScalarNode) else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_shown(value)!r} as {node.tag.rsplit(':', 1)[-1]}: "
                f"{exc}", node.start_mark) from None


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN_VALUE_CHARS else value[:_SHOWN_VALUE_CHARS] + "…"


def _octal_differs(text: str) -> bool:
    """Whether YAML 1.1 (octal) and YAML 1.2 (decimal) read `text` differently: `010`, not
    `07` (a second significant digit always makes them differ)."""
    return len(text.lstrip("+-").replace("_", "").lstrip("0")) > 1


for _tag in (_BASE_60_TAG, _OCTAL_TAG):
    _Loader.add_constructor(_tag, yaml.constructor.SafeConstructor.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq)


def load_checked(path: str | Path, build: Callable[[object], T]) -> T:
    """What `build` makes of the parsed document, or a ConfigError naming every problem.

    Stricter than `yaml.safe_load`: a key repeated in one mapping, at any depth, is an error
    naming both lines. PyYAML would keep the last silently, so `name: plant-a` followed further
    down by `name: plant-b` would configure plant-b without a word. So is a number YAML 1.1
    alone reads as base 60 or octal (`_Loader`), at its line and column. These are reported
    together with whatever `build` finds in the document (which holds the last of each
    repeated key, and the text of each such number, as YAML 1.2 reads it), so one hides no
    other problem. Only where such a number is a value does `build`'s complaint of its type
    or form there (`_FORM_COMPLAINTS`) repeat it, and that alone is left out: a cross-check at its
    place, or a problem with the value of a key so written, says something else. A file with
    any of them is refused even if `build` finds nothing else.
    """
    parsed = _read(path)
    try:
        built = build(parsed.document)
    except ConfigError as exc:
        raise ConfigError(_in_file_order([
            *parsed.written, *(_placed(path, problem, parsed.places) for problem in exc.problems
                               if not _repeats(problem, parsed.misread))])) from None
    if parsed.written:
        raise ConfigError(_in_file_order(parsed.written))
    return built


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """As a file is fixed, top to bottom; those with no place in it last, as found."""
    return sorted(problems, key=lambda problem: (problem.at is None, problem.at or (0, 0)))


def _placed(path: str | Path, problem: Problem, places: _Places) -> Problem:
    """`problem` at the line and column of what it names, or of the nearest mapping or list
    item around that which is written (a required key left out: the gateway lacking it);
    as it is in a file with no document."""
    mark = places.of(problem.location)
    if mark is None:
        return problem
    return _placed_at(path, mark, f"{problem.location}: {problem.message}")


def _placed_at(path: str | Path, mark: yaml.Mark, message: str) -> Problem:
    return Problem(_place(path, mark), message, (mark.line, mark.column))


def _repeats(problem: Problem, misread: set[str]) -> bool:
    """Whether `problem` only says again, of a value written as a number YAML 1.1 alone
    reads (at `misread`), that its text is no value of its kind."""
    return problem.location in misread and problem.message.startswith(_FORM_COMPLAINTS)


# How the schema's complaints of a value's type or form begin (`expected a mapping, got …`,
# `invalid duration …`), as opposed to its cross-checks'.
_FORM_COMPLAINTS = ("expected ", "invalid duration ", "invalid size ")


def load_yaml(path: str | Path) -> object:
    """The parsed document, held to the rules of `load_checked`."""
    return load_checked(path, lambda document: document)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A configuration file read: its document; the problems of how it is written (bytes
    that are not UTF-8, `_written_problems`); the locations of the numbers among them
    (`misread`); and where each part of the document is written (`places`)."""
    document: object
    written: list[Problem]
    misread: set[str]
    places: _Places


def _read(path: str | Path) -> _Parsed:
    """The file parsed, or a ConfigError naming the file and line of what keeps it from
    being read at all (and the bytes that are not UTF-8)."""
    text, undecodable = _text(path)
    try:
        parsed = _parse(path, text)
    except ConfigError as exc:
        raise ConfigError([*undecodable, *exc.problems]) from None
    return _Parsed(parsed.document, [*undecodable, *parsed.written], parsed.misread,
                   parsed.places)


def _parse(path: str | Path, text: str) -> _Parsed:
    try:
        loader = _Loader(text)  # its reader refuses control characters at once
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError([_at_position(path, text, exc.position,
                                        f"invalid YAML: character U+{code:04X} is not "
                                        "allowed")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return _Parsed(None, [], set(), _Places(None, None, {}))
        found = list(_written_problems(node, "(top level)"))
        problems = [_placed_at(path, mark, f"{where}: {message}")
                    for where, message, mark, _ in found]
        misread = {where for where, _, _, as_key in found if not as_key}
        document = loader.construct_document(node)
        return _Parsed(document, problems, misread,
                       _Places(document, node.start_mark, loader.places))
    except yaml.YAMLError as exc:
        raise _invalid(path, exc) from None
    except RecursionError:  # PyYAML reads nested collections recursively
        raise ConfigError([Problem(_place(path, loader.get_mark()),
                                   "invalid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()


# The largest configuration file read: thousands of gateways fit in a few hundred kB, so a
# file past this is not a configuration (a log, a dump) and is refused before it is parsed,
# which would take minutes and gigabytes.
MAX_CONFIG_BYTES = 4 * 2**20


def _text(path: str | Path) -> tuple[str, list[Problem]]:
    """The file's text, and the problem of its bytes that are not UTF-8 (`_undecodable`); a
    regular file only: a FIFO (or a device) would be read from for as long as it gives, or
    block the exporter's start, or a reload's thread, for ever."""
    try:
        if Path(path).exists() and not Path(path).is_file():
            raise ConfigError([Problem(str(path), "not a regular file")])
        with Path(path).open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read configuration: {exc}")]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(str(path), f"larger than {MAX_CONFIG_BYTES // 2**20} "
                                              "MiB: not a configuration file?")])
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        return _undecodable(path, data.decode("utf-8", errors="surrogateescape"))


# Past this many bytes that are not UTF-8 a file is not text in another encoding (a few
# accented names) but binary, and is refused without reading the rest for other problems.
MAX_UNDECODABLE_BYTES = 1000
# The characters `surrogateescape` decodes each byte that is not UTF-8 to.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _undecodable(path: str | Path, escaped: str) -> tuple[str, list[Problem]]:
    """The text with each byte that is not UTF-8 read as U+FFFD, and one problem, at the line
    and column of the first, counting the others. A file saved in another encoding (Windows'
    own, Latin-1) has such bytes wherever it has an accent, and one fix for all. The rest of
    the file is still read, so its other problems are reported with it."""
    first = _ESCAPED_BYTE.search(escaped)
    assert first is not None  # the file did not decode
    text, count = _ESCAPED_BYTE.subn("\ufffd", escaped)
    byte = ord(first.group()) - 0xDC00
    others = f" (nor can {count - 1} more after it)" if count > 1 else ""
    problem = _at_position(path, escaped, first.start(),
                           f"not UTF-8: byte 0x{byte:02X} cannot be read{others}; save the "
                           "file as UTF-8")
    if count > MAX_UNDECODABLE_BYTES:  # a binary file: nothing else in it is worth reading
        raise ConfigError([problem])
    return text, [problem]


# What YAML takes for a line break (PyYAML's marks count the same).
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _at_position(path: str | Path, text: str, position: int, message: str) -> Problem:
    """A problem at the line and column of a character position of the file's text."""
    breaks = list(_LINE_BREAK.finditer(text, 0, position))
    start = breaks[-1].end() if breaks else 0
    line, column = len(breaks), position - start
    return Problem(f"{path}:{line + 1}:{column + 1}", message, (line, column))


def _invalid(path: str | Path, exc: yaml.YAMLError) -> ConfigError:
    problem = getattr(exc, "problem", None) or str(exc)
    hint = next((hint for start, hint in _HINTS if problem.startswith(start)), "")
    return ConfigError([Problem(_place(path, getattr(exc, "problem_mark", None)),
                                f"invalid YAML: {problem}{hint}")])


# What the YAML reader's own words for a hand-written file's usual mistakes mean, by how
# they begin: indentation, nearly always.
_HINTS = (
    ("found character '\\t'", ": YAML indents with spaces, never tabs; replace the tab with "
                              "spaces"),
    ("expected <block end>", ": check the indentation here; the keys of one gateway line up "
                             "under its first key, two spaces past the `- `"),
    ("mapping values are not allowed here", ": check the indentation here (a key indented "
                                            "deeper than the key above it), or quote a value "
                                            "that holds ': '"),
    ("could not find expected ':'", ": a key needs a colon and a space after it "
                                    "(`key: value`), or check the indentation here"),
)


def _place(path: str | Path, mark: yaml.Mark | None) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)


_MERGE_TAG = "tag:yaml.org,2002:merge"


Written = tuple[str, str, yaml.Mark, bool]


@dataclass(frozen=True, slots=True)
class _Written:
    """Where a mapping or list of a built document is written: for a mapping, each key's
    mark (of a key written twice, or also given by a merge key (`<<`), the one whose value
    is kept); for a list, each item's, and which items are aliases (`- *g`: its own mark,
    not its anchor's)."""
    value: Any  # held, so that its id is not another's while this is
    marks: Mapping[Any, yaml.Mark] | list[yaml.Mark]
    aliases: frozenset[int] = frozenset()


class _Places:
    """Where the parts of a built document are written, found from the location the schema
    names a problem with (`gateways[0].url`), by walking down the document: so keys as built
    (`yes:` is `True`), and nothing kept per location (locations repeat every key above
    them: kept for every key, a long key over many others would cost gigabytes)."""

    def __init__(self, document: object, start: yaml.Mark | None,
                 written: Mapping[int, _Written]) -> None:
        self._document, self._start, self._written = document, start, written
        self._names: dict[int, dict[str, Any]] = {}

    def of(self, location: str) -> yaml.Mark | None:
        """The mark of what `location` names, or of the nearest part around it that is
        written; inside an alias, the alias's."""
        value, rest, mark = self._document, location, self._start
        if value is None:  # an empty file: no place is better than its first line
            return None
        if location == "(top level)":
            return mark
        while rest and id(value) in self._written:
            written = self._written[id(value)]
            step = self._step(value, rest)
            if step is None:
                return mark
            part, length = step
            mark, rest = written.marks[part], rest[length:].removeprefix(".")
            if part in written.aliases:
                return mark
            value = value[part]
        return mark

    def _step(self, value: object, rest: str) -> tuple[Any, int] | None:
        """The key or index `rest` begins with in `value`, and its length as written."""
        if isinstance(value, list):
            end = rest.find("]")
            index = rest[1:end]
            if rest.startswith("[") and index.isascii() and index.isdigit() \
                    and int(index) < len(value):
                return int(index), end + 1
            return None
        if not isinstance(value, dict):
            return None
        if id(value) not in self._names:
            self._names[id(value)] = {str(key): key for key in value}
        names = self._names[id(value)]
        ends = [m.start() for m in itertools.islice(_STEP_END.finditer(rest), _MAX_DOTS)]
        for end in [*ends, len(rest)]:  # a key may hold dots: the shortest that is one
            if rest[:end] in names:
                return names[rest[:end]], end
        return None


# Where a key in a location may end, and how many such places in one key are tried (each
# costs the location's length: a key of many dots must not cost their number squared).
_STEP_END = re.compile(r"[.\[]")
_MAX_DOTS = 16


def _written_problems(node: yaml.Node, location: str, visited: set[int] | None = None,
                      as_key: bool = False) -> Iterator[Written]:
    """(location, message, mark, whether of a key) for each key written twice in one
    mapping (at the second; the message names both lines) and each number YAML 1.1 alone
    reads as base 60 or octal, anywhere in the tree, in the order written.

    Walks the composed nodes, before any value is built, so the first occurrence of a key is
    still there to be named. Aliases are walked once (`visited`); merge keys (`<<`) are not
    keys, and what they merge is walked at the mapping's place.
    """
    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.ScalarNode) and node.tag in _MISREAD:
        yield location, _misread(node.tag, node.value), node.start_mark, as_key
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _written_problems(item, f"{location}[{index}]", visited)
    elif isinstance(node, yaml.MappingNode):
        yield from _mapping_problems(node, location, visited)


def _mapping_problems(node: yaml.MappingNode, location: str, visited: set[int]
                      ) -> Iterator[Written]:
    first_line: dict[Hashable, int] = {}
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            for merged in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                yield from _written_problems(merged, location, visited)
            continue
        if not isinstance(key, yaml.ScalarNode):
            continue
        where = key.value if location == "(top level)" else f"{location}.{key.value}"
        yield from _written_problems(key, where, visited, as_key=True)
        line, built = key.start_mark.line + 1, _built_key(key)
        if built in first_line:
            first = first_line[built]
            lines = f"lines {first} and {line}" if first != line else f"line {line}"
            yield where, f"key written twice, on {lines}: keep one", key.start_mark, True
        first_line.setdefault(built, line)
        yield from _written_problems(value, where, visited)


def _built_key(key: yaml.ScalarNode) -> Hashable:
    """A key as the mapping built from it holds it: `null:` and `~:` are both None, `yes:`,
    `on:` and `1:` all True (a dict takes True and 1 for one key), so either of a pair is
    the same key written twice. A key that cannot be built stays as written."""
    try:
        built = yaml.constructor.SafeConstructor().construct_object(key)
        hash(built)
    except Exception:  # not built here (a YAML 1.1 misread number), or unhashable
        return key.tag, key.value
    return built


def _base_60(text: str) -> str:
    """What to write instead of `1:30`, which YAML 1.1 reads as 90."""
    seconds = 0.0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        seconds = seconds * 60 + float(part)
    milliseconds = round(seconds * 1000)
    sign = "-" if text.startswith("-") and milliseconds else ""
    durations = " or ".join(_duration_forms(milliseconds)) if milliseconds > 0 and not sign \
        else "it with its units (1m30s)"  # a duration is positive
    return (f"{text} is a base-60 number in YAML 1.1 ({sign}{_seconds(milliseconds)}) and text "
            f"in YAML 1.2: for a duration write {durations}; for text, quote it ('{text}')")


def _octal(text: str) -> str:
    """What to write instead of `010`, which YAML 1.1 reads as 8 (and YAML 1.2 as 10)."""
    digits = text.replace("_", "")
    return (f"{text} is octal in YAML 1.1 ({int(digits, 8)}) and decimal in YAML 1.2 "
            f"({int(digits, 10)}): write the number meant without the leading zero; for text, "
            f"quote it ('{text}')")


# The numbers only YAML 1.1 reads: what each is, and what to write instead.
_MISREAD: dict[str, tuple[str, Callable[[str], str]]] = {
    _BASE_60_TAG: ("a base-60 number in YAML 1.1 and text in YAML 1.2", _base_60),
    _OCTAL_TAG: ("an octal number in YAML 1.1 and a decimal one in YAML 1.2", _octal)}


def _misread(tag: str, text: str) -> str:
    """Why a number only YAML 1.1 reads is refused; past a setting's length (where its value
    may not even be printable: Python converts at most 4,300 digits), just what it is."""
    kind, explain = _MISREAD[tag]
    if len(text) > _SHOWN_VALUE_CHARS:
        return f"{_shown(text)} is {kind}: quote it"
    return explain(text)


def _duration_forms(milliseconds: int) -> list[str]:
    """`90000` ms as `90s` and `1m30s`, durations as the configuration takes them
    (`parse_duration`); a fraction of a second in plain seconds, the one form that takes a
    fraction, and in milliseconds."""
    plain = _seconds(milliseconds) + ("s" if milliseconds % 1000 == 0 else "")
    units = "".join(f"{count}{unit}" for unit, count in _in_units(milliseconds) if count)
    return [plain] if units == plain else [plain, units]


def _seconds(milliseconds: int) -> str:
    """`90500` ms as `90.5`: no exponent, however many (`:g` writes 1.296e+07)."""
    whole, fraction = divmod(milliseconds, 1000)
    return f"{whole}.{fraction:03}".rstrip("0") if fraction else str(whole)


def _in_units(milliseconds: int) -> Iterator[tuple[str, int]]:
    for unit, size in _DURATION_UNITS:
        count, milliseconds = divmod(milliseconds, round(size * 1000))
        yield unit, count


def bcrypt_hash_field(reader: Reader, value: object, location: str) -> Any:
    """A password hash as `htpasswd -nBC 10 USER` makes it; the password itself never."""
    if isinstance(value, str) and value[:4] in ("$2y$", "$2b$", "$2a$") and len(value) == 60:
        return value.encode()
    reader.fail(location, "expected a bcrypt hash ($2y$… or $2b$…, 60 characters; make one "
                "with `htpasswd -nBC 10 USER`)")
    return INVALID
