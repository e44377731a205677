"""Decoding session lists one record at a time, so one odd session never costs a whole poll.

Every source goes through here, for every list, so the rules hold for all of them alike:

- A record of the wrong shape (a string where a number belongs, a negative or impossible
  number, not an object at all) is skipped and counted invalid.
- Numbers sent as numeric strings (`"12"`, what a script stringifying a Java `Long` gives) are
  accepted and held to the same bounds (`strict=False`).
- One session per identity within one list: the first occurrence wins, every further record
  with the same `id` (Perspective) or `clientId` (clients) is counted invalid and left out of
  the metrics and `/sessions`. A gateway cannot report one session twice, so a repeat is a
  broken answer; keeping both would count its bytes twice.
- JSON nested deeper than the decoder can follow costs only the records that contain it.
- Text that is no Unicode costs nothing: invalid UTF-8 and escapes of lone surrogates
  (what a Java string cut between the two halves of a pair gives) read as U+FFFD, wherever
  they are in the answer.

The common case, a list where every record is well-formed, is decoded in one msgspec call
by the source (`typed_or_none`) and only checked here (`decode_list`); only when that call
fails is the list decoded one record at a time (`decode_records`), so an odd record costs
itself and the speed of the fast path.
"""

from __future__ import annotations

import codecs
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, TypeVar

import msgspec

from exporter.model import ClientSession, PerspectiveSession, RestClientItem

T = TypeVar("T", PerspectiveSession, ClientSession, RestClientItem)
D = TypeVar("D")

# Decoders are immutable and reusable; building one per call would cost more than decoding.
PERSPECTIVE_DECODER = msgspec.json.Decoder(PerspectiveSession, strict=False)
CLIENT_DECODER = msgspec.json.Decoder(ClientSession, strict=False)
REST_CLIENT_DECODER = msgspec.json.Decoder(RestClientItem, strict=False)

# msgspec decodes (and skips) nested JSON recursively, so a value nested about a thousand
# levels deep raises RecursionError. When that happens, the body is read again with every
# container nested deeper than this replaced by a marker string, and each record holding a
# marker is replaced by a value no record decoder accepts. Real sessions are four levels deep.
MAX_DEPTH = 200
# Random per process, so no gateway can send it and have a good session taken for a deep one.
_MARKER = b'"\\u0000nested too deeply ' + secrets.token_hex(8).encode() + b'"'
_NOT_A_RECORD = msgspec.Raw(b'"a record nested too deeply to read"')
# The fallback's cost is bounded: it reads the body as runs of opening or closing brackets,
# each run one step of a Python loop. A real answer has about four runs per session (420,000
# for 100,000 sessions and 10,000 clients, cut in about a second); past this many the answer
# is refused as a whole (reason decode) rather than cost seconds of CPU at every poll.
MAX_BRACKET_RUNS = 1_000_000
# One bracket run per match: first any text and whole strings (no structure in them), then a
# run of openers or of closers, with only plain text (no string, no other bracket) between
# them; or an unterminated string, or the end. Possessive, so no match ever backtracks.
_NEXT_RUN = re.compile(
    rb'(?:[^"\[\]{}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+'
    rb'((?:[\[{][^"\[\]{}]*+)++|(?:[\]}][^"\[\]{}]*+)++|"|\Z)', re.DOTALL)
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
# A lone surrogate escape: a high one with no low one after it, a low one with no high one
# before it. Matched with literal replacements only (C speed, whatever the number of escapes),
# once every escaped backslash is out of the way (`_BACKSLASH`), so every backslash left
# starts an escape and `\\ud800` (a backslash, then text) is never taken for one.
_LONE_HIGH = re.compile(rb'\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})')
_LONE_LOW = re.compile(rb'\\(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\)u[dD][c-fC-F][0-9a-fA-F]{2}')
_REPLACEMENT_ESCAPE = rb"\\ufffd"  # a template: `\\` is one backslash
_ESCAPED_BACKSLASH = b"\\\\"
# Stands for an escaped backslash meanwhile: a byte UTF-8 never holds (the text is UTF-8 by then).
_BACKSLASH = b"\xff"
# What might be surrogate escapes (`\ud`, `\uD`: an upper bound), counted at C speed before
# a repair on the event loop: past this many, the repair's replacements (a regex step each)
# are left to the workers.
MAX_QUICK_REPAIRS = 10_000
_OPENERS = frozenset(b"[{")


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    records: tuple[T, ...]
    raw: tuple[msgspec.Raw | bytes, ...]
    invalid: int


def decode_records(items: Sequence[msgspec.Raw], decoder: msgspec.json.Decoder[T]) -> Decoded[T]:
    """Typed records plus the raw bytes they came from; invalid and repeated ones are counted.

    Missing or null fields are fine (they default to None). Invalid UTF-8 inside an item is
    replaced (U+FFFD) rather than rejected: a mangled username is still a session.
    """
    records: list[T] = []
    raw: list[msgspec.Raw | bytes] = []
    invalid = 0
    decode = decoder.decode
    for item in items:  # the hot loop of every poll: kept to the bare decode and appends
        try:
            records.append(decode(item))
        except UnicodeDecodeError:
            repaired = bytes(item).decode("utf-8", "replace").encode("utf-8")
            record = _decode_or_none(decoder, repaired)
            if record is None:
                invalid += 1
            else:
                records.append(record)
                raw.append(repaired)
            continue
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            invalid += 1
            continue
        raw.append(item)
    return _first_per_identity(records, raw, invalid, attrgetter(decoder.type.IDENTITY))


def typed_or_none(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any | None:
    """The whole body decoded in one call, or None when anything in it is off: the caller
    then takes the per-record path, which finds and counts what was off."""
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def decode_list(items: Sequence[msgspec.Raw], typed: Sequence[T] | None,
                decoder: msgspec.json.Decoder[T]) -> Decoded[T]:
    """Like `decode_records`, with the records already decoded in one call when that
    succeeded (`typed`, one per item, in order): then nothing is decoded twice, and only
    the repeats are looked for."""
    if typed is None or len(typed) != len(items):
        return decode_records(items, decoder)
    return _first_per_identity(list(typed), list(items), 0,
                               attrgetter(decoder.type.IDENTITY))


def _first_per_identity(records: list[T], raw: list[msgspec.Raw | bytes], invalid: int,
                        identity: Callable[[T], str | int | None]) -> Decoded[T]:
    """Drop (and count) every record whose identity an earlier one already had.

    Checked in bulk first: repeats are rare, and a per-record check in the loop above cost
    half as much again as decoding.
    """
    ids = list(map(identity, records))
    distinct = set(ids)
    distinct.discard(None)
    if len(distinct) == len(ids) - ids.count(None):
        return Decoded(tuple(records), tuple(raw), invalid)
    seen: set[str | int] = set()
    kept: list[int] = []
    for position, key in enumerate(ids):
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(position)
    return Decoded(tuple(records[i] for i in kept), tuple(raw[i] for i in kept),
                   invalid + len(records) - len(kept))


def _decode_or_none(decoder: msgspec.json.Decoder[T], item: bytes) -> T | None:
    try:
        return decoder.decode(item)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None


def decode_bounded(decoder: msgspec.json.Decoder[D], body: bytes) -> tuple[D, bool]:
    """`decoder.decode(body)`, and whether over-deep values had to be cut out to get it.

    When True, pass every list of records taken from the result through `screened`.
    Decoding errors other than the depth propagate as msgspec raises them; an answer too
    large to cut within `MAX_BRACKET_RUNS` raises msgspec.DecodeError.
    """
    body = utf8(body)
    try:
        return _decode_or_cut(decoder, body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        repaired = as_unicode(body)
        if repaired is body:
            raise
        return _decode_or_cut(decoder, repaired)


def _decode_or_cut(decoder: msgspec.json.Decoder[D], body: bytes) -> tuple[D, bool]:
    try:
        return decoder.decode(body), False
    except RecursionError:
        return decoder.decode(cut_deep_values(body, MAX_DEPTH, _MARKER, MAX_BRACKET_RUNS)), True


class Costly(Exception):
    """Decoding `body` needs Python work in proportion to its size: cutting a value nested
    too deep, or repairing more surrogate escapes than `MAX_QUICK_REPAIRS`."""

    def __init__(self, body: bytes) -> None:
        super().__init__("decoding needs work in proportion to the answer")
        self.body = body


def decode_quickly(decoder: msgspec.json.Decoder[D], body: bytes) -> D:
    """`decode_bounded` without its costly steps, for the event loop: C-speed passes over the
    body only, so a hostile answer holds the loop no longer than a decode; `Costly` where
    `decode_bounded` would need more (it then gives the same result)."""
    body = utf8(body)
    try:
        return _decode_or_costly(decoder, body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        if body.count(b"\\ud") + body.count(b"\\uD") > MAX_QUICK_REPAIRS:
            raise Costly(body) from None
        repaired = as_unicode(body)
        if repaired is body:
            raise
        return _decode_or_costly(decoder, repaired)


def _decode_or_costly(decoder: msgspec.json.Decoder[D], body: bytes) -> D:
    try:
        return decoder.decode(body)
    except RecursionError:
        raise Costly(body) from None


def utf8(body: bytes) -> bytes:
    """`body` with bytes that are no UTF-8 replaced by U+FFFD, or `body` itself. The decoder
    checks only the strings it decodes, and each session's JSON is kept as sent for
    `/sessions`: a field name in Latin-1 in one session made every `/sessions` answer text
    that is no UTF-8, which a strict client cannot read at all. C-speed passes: an ASCII
    answer is told at once; any other is checked a slice at a time, keeping nothing (decoded
    whole, one emoji made the check hold four bytes a character); only an answer that fails
    is rebuilt, a slice at a time too."""
    if body.isascii() or _valid_utf8(body):
        return body
    return _rebuilt(codecs.getincrementaldecoder("utf-8")("replace"), body)


_CHECKED_SLICE = 1 << 20


def _valid_utf8(body: bytes) -> bool:
    check = codecs.getincrementaldecoder("utf-8")().decode
    view = memoryview(body)
    try:
        for start in range(0, len(view), _CHECKED_SLICE):
            check(view[start:start + _CHECKED_SLICE])
        check(b"", True)
    except UnicodeDecodeError:
        return False
    return True


def _rebuilt(decoder: codecs.IncrementalDecoder, body: bytes) -> bytes:
    view, out = memoryview(body), bytearray()
    for start in range(0, len(view), _CHECKED_SLICE):
        out += decoder.decode(view[start:start + _CHECKED_SLICE]).encode("utf-8")
    out += decoder.decode(b"", True).encode("utf-8")
    return bytes(out)


def as_unicode(body: bytes) -> bytes:
    """`body` with invalid UTF-8 and lone surrogate escapes replaced by U+FFFD, or `body`
    itself when it has neither. Only run on an answer the decoder refused. Passes of C code
    over the body and one regex step per lone escape replaced: no Python step per escape,
    which made an answer full of escapes cost seconds."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
    repaired = text.encode("utf-8").replace(_ESCAPED_BACKSLASH, _BACKSLASH)
    repaired = _LONE_HIGH.sub(_REPLACEMENT_ESCAPE, repaired)
    repaired = _LONE_LOW.sub(_REPLACEMENT_ESCAPE, repaired)
    repaired = repaired.replace(_BACKSLASH, _ESCAPED_BACKSLASH)
    return body if repaired == body else repaired


def screened(items: Sequence[msgspec.Raw], cut: bool) -> Sequence[msgspec.Raw]:
    """The records of a list, each one that held a cut value replaced by an invalid one."""
    if not cut:
        return items
    return [_NOT_A_RECORD if _MARKER in bytes(item) else item for item in items]


def cut_deep_values(body: bytes, limit: int, marker: bytes,
                    max_runs: int = MAX_BRACKET_RUNS) -> bytes:
    """`body` with every array or object nested deeper than `limit` replaced by `marker`.

    Iterative, so depth costs nothing, and a run of brackets (`[[[[`, `[0,[0,[0,`) is one
    step. Malformed JSON stays malformed (the decoder then says why); it is never repaired.
    """
    pieces: list[bytes] = []
    depth = copied = 0
    for runs, match in enumerate(_NEXT_RUN.finditer(body)):
        run = match.group(1)
        if run in (b"", b'"'):  # the end, or a string that never ends
            break
        if runs >= max_runs:
            raise msgspec.DecodeError(f"JSON nested over a thousand levels deep, in an answer "
                                      f"of more than {max_runs} bracket runs: too large to cut")
        if run[0] in _OPENERS:
            deeper = depth + run.count(b"[") + run.count(b"{")
            if depth <= limit < deeper:
                at = _nth(run.translate(_AS_SQUARE), limit + 1 - depth)
                pieces += (body[copied:match.start(1) + at], marker)
        else:
            deeper = depth - run.count(b"]") - run.count(b"}")
            if deeper <= limit < depth:  # the closer back to `limit` ends the cut
                copied = match.start(1) + _after_last(run.translate(_AS_SQUARE), limit - deeper)
        depth = deeper
    if depth <= limit:
        pieces.append(body[copied:])
    return b"".join(pieces)


def _nth(openers: bytes, n: int) -> int:
    """Position of the `n`-th `[` in `openers` (n is at most the depth limit)."""
    position = -1
    for _ in range(n):
        position = openers.index(b"[", position + 1)
    return position


def _after_last(closers: bytes, n: int) -> int:
    """Position just after the `]` that has `n` more after it in `closers`."""
    position = len(closers)
    for _ in range(n + 1):
        position = closers.rindex(b"]", 0, position)
    return position + 1
