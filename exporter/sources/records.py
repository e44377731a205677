"""Decoding session lists one record at a time, so one odd session never costs a whole poll."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from exporter.model import ClientSession, PerspectiveSession

T = TypeVar("T", PerspectiveSession, ClientSession)

# Decoders are immutable and reusable; building one per call would cost more than decoding.
PERSPECTIVE_DECODER = msgspec.json.Decoder(PerspectiveSession)
CLIENT_DECODER = msgspec.json.Decoder(ClientSession)


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    records: tuple[T, ...]
    raw: tuple[msgspec.Raw | bytes, ...]
    invalid: int


def decode_records(items: Sequence[msgspec.Raw], decoder: msgspec.json.Decoder[T]) -> Decoded[T]:
    """Typed records plus the raw bytes they came from; malformed items are skipped and counted.

    Missing or null fields are fine (they default to None). A field of the wrong type, or an
    item that is not an object at all, makes that one item invalid. Invalid UTF-8 inside an
    item is replaced (U+FFFD) rather than rejected: a mangled username is still a session.
    """
    records: list[T] = []
    raw: list[msgspec.Raw | bytes] = []
    invalid = 0
    decode = decoder.decode
    for item in items:
        try:
            records.append(decode(item))
        except UnicodeDecodeError:
            repaired = bytes(item).decode("utf-8", "replace").encode("utf-8")
            try:
                records.append(decode(repaired))
            except (msgspec.ValidationError, msgspec.DecodeError):
                invalid += 1
                continue
            raw.append(repaired)
            continue
        except (msgspec.ValidationError, msgspec.DecodeError):
            invalid += 1
            continue
        raw.append(item)
    return Decoded(tuple(records), tuple(raw), invalid)
