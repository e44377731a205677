"""The WebDev source: one GET returning the schema-1 document built by
`ignition/session_exporter.py` inside the gateway."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import msgspec

from exporter.config import GatewayConfig
from exporter.model import ClientSession, Number, PerspectiveSession, Snapshot
from exporter.sources.errors import Reason, SourceError
from exporter.sources.http import GatewayClient
from exporter.sources.records import (
    CLIENT_DECODER,
    PERSPECTIVE_DECODER,
    decode_bounded,
    decode_list,
    screened,
    typed_or_none,
)

SCHEMA_VERSION = 1
# What a 404 most likely means: a URL that is not the resource (project or resource named
# otherwise, Ignition 7.9's URL without /main), or an 8.3 gateway's root without source: rest.
NOT_A_RESOURCE = ("is `url` the WebDev resource, http://host:8088/system/webdev/<project>/"
                  "<resource path> (saved in the project)? For an Ignition 8.3 gateway's root "
                  "URL, set source: rest")


class _GatewayInfo(msgspec.Struct):
    name: str | None = None
    version: str | None = None


class _Document(msgspec.Struct, rename="camel"):
    schema: int
    gateway: _GatewayInfo | None = None
    collected_at: Number | None = None
    perspective: list[msgspec.Raw] | None = None
    vision: list[msgspec.Raw] | None = None
    warnings: list[str] | None = None


class _TypedDocument(msgspec.Struct):
    """The two session lists decoded straight into records, in one call: the fast path."""

    perspective: list[PerspectiveSession] | None = None
    vision: list[ClientSession] | None = None


_DOCUMENT_DECODER = msgspec.json.Decoder(_Document)
# Numeric strings accepted as the record decoders accept them (records.py).
_TYPED_DECODER = msgspec.json.Decoder(_TypedDocument, strict=False)
_NOT_TYPED = _TypedDocument()


def decode_webdev(body: bytes, gateway: str) -> Snapshot:
    """Bytes of a schema-1 document to a `Snapshot`; `SourceError` (decode/schema) otherwise.

    Decoded twice, both in one call each: into records (None if any session is off: then
    each list is decoded record by record) and into one raw view per session."""
    typed = typed_or_none(_TYPED_DECODER, body) or _NOT_TYPED
    try:
        document, cut = decode_bounded(_DOCUMENT_DECODER, body)
    except msgspec.ValidationError as exc:
        raise SourceError(gateway, Reason.SCHEMA, f"unexpected document shape: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SourceError(gateway, Reason.DECODE, f"invalid JSON: {exc}") from None
    if document.schema != SCHEMA_VERSION:
        raise SourceError(gateway, Reason.SCHEMA, f"unsupported schema {document.schema} "
                          f"(this exporter reads schema {SCHEMA_VERSION})")
    if cut:
        typed = _NOT_TYPED
    perspective = decode_list(screened(document.perspective or (), cut), typed.perspective,
                              PERSPECTIVE_DECODER)
    clients = decode_list(screened(document.vision or (), cut), typed.vision, CLIENT_DECODER)
    info = document.gateway or _GatewayInfo()
    return Snapshot(
        perspective=perspective.records,
        perspective_json=perspective.raw,
        clients=clients.records,
        clients_json=clients.raw,
        reported_name=info.name,
        version=info.version,
        collected_at=document.collected_at / 1000 if document.collected_at else None,
        warnings=tuple(document.warnings or ()),
        invalid_sessions=perspective.invalid + clients.invalid,
    )


class WebDevSource:
    def __init__(self, gateway: GatewayConfig, client: GatewayClient) -> None:
        self.gateway = gateway
        self._client = client

    async def fetch(self) -> Callable[[], Snapshot]:
        try:
            body = await self._client.get(self.gateway.url)
        except SourceError as exc:
            if exc.status != 404:
                raise
            raise SourceError(exc.gateway, exc.reason, f"{exc.detail}; {NOT_A_RESOURCE}",
                              exc.status) from None
        return partial(decode_webdev, body, self.gateway.name)
