"""The Ignition 8.3 REST API source: three paged lists, no WebDev module needed.

The response envelope is not documented, so both a bare JSON list and an object holding the
list under `items`, `data` or `results` are accepted. Pages are requested with `limit` and
`offset` until a short page comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from urllib.parse import urljoin

import msgspec

from exporter.clock import Clock
from exporter.config import GatewayConfig
from exporter.model import ClientSession, PerspectiveSession, Snapshot
from exporter.sources.errors import Reason, SourceError
from exporter.sources.http import GatewayClient
from exporter.sources.records import (
    CLIENT_DECODER,
    PERSPECTIVE_DECODER,
    decode_bounded,
    decode_records,
    screened,
)

PERSPECTIVE_PATH = "data/perspective/api/v1/sessions/"  # the trailing slash matters
VISION_PATH = "data/vision/api/v1/clients"
DESIGNER_PATH = "data/api/v1/designers"
ENVELOPE_KEYS = ("items", "data", "results")
# A gateway that ignores `offset` would otherwise be paged forever (until the timeout).
MAX_PAGES = 1000
# `lastComm` above this is an epoch timestamp in ms (after 1973), not "ms since": a session
# silent for over three years does not exist.
EPOCH_MS_THRESHOLD = 100_000_000_000
AUTH_HINT = ("the API key needs a security level with gateway read permission "
             "(and HTTPS, if the key is restricted to it)")

_ENVELOPE = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])
_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def page_items(body: bytes, gateway: str) -> list[msgspec.Raw]:
    """The list inside one page, whichever envelope the gateway used."""
    try:
        envelope, cut = decode_bounded(_ENVELOPE, body)
        if isinstance(envelope, list):
            return list(screened(envelope, cut))
        for key in ENVELOPE_KEYS:
            if key in envelope:
                return list(screened(_LIST.decode(envelope[key]), cut))
    except msgspec.ValidationError as exc:
        raise SourceError(gateway, Reason.SCHEMA, f"unexpected page shape: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SourceError(gateway, Reason.DECODE, f"invalid JSON: {exc}") from None
    raise SourceError(gateway, Reason.SCHEMA, "page is an object without "
                      f"{', '.join(ENVELOPE_KEYS)}: cannot find the list")


def normalise_last_comm(session: PerspectiveSession, now_ms: float) -> PerspectiveSession:
    """Make `lastComm` mean "ms since last communication", as the scripting function says."""
    last = session.last_comm
    if last is None or last < EPOCH_MS_THRESHOLD:
        return session
    return msgspec.structs.replace(session, last_comm=max(0.0, now_ms - last))


class RestSource:
    def __init__(self, gateway: GatewayConfig, client: GatewayClient, clock: Clock) -> None:
        self.gateway = gateway
        self._client = client
        self._clock = clock
        base = gateway.url if gateway.url.endswith("/") else gateway.url + "/"
        self._url = lambda path: urljoin(base, path)

    async def fetch(self) -> Callable[[], Snapshot]:
        lists: list[list[msgspec.Raw]] = []
        left = self.gateway.max_response_bytes  # what the poll's pages may still add up to
        try:
            for path in (PERSPECTIVE_PATH, VISION_PATH, DESIGNER_PATH):
                items, left = await self._fetch_all(path, left)
                lists.append(items)
        except SourceError as exc:
            if exc.reason is Reason.AUTH:
                raise SourceError(exc.gateway, exc.reason, f"{exc.detail}; {AUTH_HINT}") from None
            raise
        return partial(self._decode, *lists, self._clock.time())

    @staticmethod
    def _decode(perspective_items: list[msgspec.Raw], vision_items: list[msgspec.Raw],
                designer_items: list[msgspec.Raw], fetched_at: float) -> Snapshot:
        perspective = decode_records(perspective_items, PERSPECTIVE_DECODER)
        vision = decode_records(vision_items, CLIENT_DECODER)
        designers = decode_records(designer_items, CLIENT_DECODER)
        return Snapshot(
            perspective=tuple(normalise_last_comm(s, fetched_at * 1000)
                              for s in perspective.records),
            perspective_json=perspective.raw,
            clients=_with_kind(vision.records, False) + _with_kind(designers.records, True),
            clients_json=vision.raw + designers.raw,
            collected_at=fetched_at,
            invalid_sessions=perspective.invalid + vision.invalid + designers.invalid,
        )

    async def _fetch_all(self, path: str, left: int) -> tuple[list[msgspec.Raw], int]:
        """Every item of one route, page by page (each page is only split into items here),
        and how many of the `left` bytes the pages did not use.

        The items are views into the pages, so every page is held until the poll is
        digested: `max_response_size` bounds all the pages of a poll together, not each."""
        items: list[msgspec.Raw] = []
        limit = self.gateway.page_size
        previous: list[bytes] | None = None
        for page in range(MAX_PAGES):
            body = await self._client.get(self._url(path), limit=left,
                                          params={"limit": limit, "offset": page * limit})
            left -= len(body)
            batch = page_items(body, self.gateway.name)
            signature = [bytes(item) for item in batch[:1]]
            if batch and signature == previous:
                raise SourceError(self.gateway.name, Reason.SCHEMA,
                                  f"{path} ignores offset: the same page came back twice")
            previous = signature
            items.extend(batch)
            if len(batch) != limit:  # a short page, or a gateway that ignores `limit`
                return items, left
        raise SourceError(self.gateway.name, Reason.SCHEMA,
                          f"{path} still had data after {MAX_PAGES} pages")


def _with_kind(records: tuple[ClientSession, ...], designer: bool) -> tuple[ClientSession, ...]:
    """The endpoint, not the record, says whether a client is a Designer."""
    return tuple(msgspec.structs.replace(r, is_designer=designer) for r in records)
