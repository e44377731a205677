"""The Ignition 8.3 REST API source: three paged lists and the gateway's own description.

What a real 8.3 gateway answers (Inductive Automation's route collection, and captures of a
live 8.3.6 gateway):
- every list is `{"items": [...], "metadata": {"total": N, ...}}`, paged with `limit` and
  `offset`; a bare JSON list is tolerated too;
- Perspective items are `getSessionInfo`-like (`username`, `sessionScope`, `lastComm` as epoch
  ms); Vision client and Designer items are not: `{id, user, address, project, uptime,
  lastcomm, timeout, memory, timezone}`, decoded through `RestClientItem`;
- a module that is not installed answers 404 on its routes;
- `GET /data/api/v1/gateway-info` gives `name`, `ignitionVersion` and `redundancyRole`.

The four requests run concurrently; the first failure cancels the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urljoin

import msgspec

from exporter.clock import Clock
from exporter.config import GatewayConfig
from exporter.model import ClientSession, Number, PerspectiveSession, RestClientItem, Snapshot
from exporter.sources import Offload
from exporter.sources.errors import Reason, SourceError
from exporter.sources.http import GatewayClient
from exporter.sources.records import (
    MAX_DEPTH,
    PERSPECTIVE_DECODER,
    REST_CLIENT_DECODER,
    Costly,
    decode_bounded,
    decode_quickly,
    decode_records,
    screened,
)

GATEWAY_INFO_PATH = "data/api/v1/gateway-info"
# A gateway that ignores `offset` would otherwise be paged forever (until the timeout).
MAX_PAGES = 1000
# `lastComm` above this is an epoch timestamp in ms (after 1973), not "ms since": a session
# silent for over three years does not exist.
EPOCH_MS_THRESHOLD = 100_000_000_000
# A client's `uptime` is a duration in ms in the captures; above this (2001 as epoch ms,
# 31 years as a duration) it can only be the time the client started.
UPTIME_EPOCH_THRESHOLD = 1_000_000_000_000
AUTH_HINT = ("the API key needs a security level with Gateway Read permission "
             "(and HTTPS, if the gateway requires secure connections)")
NOT_RECOGNISED = ("HTTP 401: the gateway does not recognise the API key; the value must be "
                  "the key's name, a colon and its secret (<name>:<secret>)")
FORBIDDEN = ("HTTP 403: the gateway knows the API key but refuses it: its security level "
             "lacks Gateway Read permission, or the gateway requires HTTPS (\"Require secure "
             "connections\", on by default): use the https:// URL")
NOT_A_GATEWAY_ROOT = "is `url` the root of an Ignition 8.3 gateway (https://host:8043)?"


@dataclass(frozen=True, slots=True)
class Route:
    """One list route; `module` names what a 404 on it means is missing (None: a platform
    route, always there on 8.3, so a 404 means the URL is wrong)."""

    path: str
    module: str | None
    what: str


PERSPECTIVE = Route("data/perspective/api/v1/sessions/", "Perspective",  # trailing / matters
                    "Perspective sessions")
VISION = Route("data/vision/api/v1/clients", "Vision", "Vision clients")
DESIGNERS = Route("data/api/v1/designers", None, "Designers")


class _Metadata(msgspec.Struct):
    total: int | None = None


class _Envelope(msgspec.Struct):
    items: list[msgspec.Raw]
    metadata: _Metadata | None = None


class _GatewayInfo(msgspec.Struct, rename="camel"):
    name: str | None = None
    ignition_version: str | None = None
    redundancy_role: str | None = None


_PAGE = msgspec.json.Decoder(list[msgspec.Raw] | _Envelope)
_INFO = msgspec.json.Decoder(_GatewayInfo)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[msgspec.Raw]
    total: int | None  # None: the gateway did not say (a bare list)


def read_page(body: bytes, gateway: str) -> Page:
    """One page's items and the list's total, or `SourceError` (decode/schema)."""
    with _page_errors(gateway):
        page, cut = decode_bounded(_PAGE, body)
    return _page(page, cut)


def split_page(body: bytes, gateway: str) -> Page | None:
    """`read_page` as far as C-speed work goes, for the event loop; None where it needs more
    (`RestSource._split`)."""
    with _page_errors(gateway):
        try:
            return _page(decode_quickly(_PAGE, body), False)
        except Costly:
            return None


@contextmanager
def _page_errors(gateway: str) -> Iterator[None]:
    """A page the decoder refuses, as the `SourceError` that says why."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise SourceError(gateway, Reason.SCHEMA, f"unexpected page shape: {exc} (expected "
                          '{"items": [...], "metadata": {"total": N}})') from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SourceError(gateway, Reason.DECODE, f"invalid JSON: {exc}") from None


def _page(page: list[msgspec.Raw] | _Envelope, cut: bool) -> Page:
    if isinstance(page, list):
        return Page(list(screened(page, cut)), None)
    return Page(list(screened(page.items, cut)), page.metadata.total if page.metadata else None)


def normalise_last_comm(session: PerspectiveSession, now_ms: float) -> PerspectiveSession:
    """Make `lastComm` mean "ms since last communication", as the scripting function says."""
    last = session.last_comm
    if last is None or last < EPOCH_MS_THRESHOLD:
        return session
    return msgspec.structs.replace(session, last_comm=max(0.0, now_ms - last))


def creation_time(uptime: Number | None, now_ms: float) -> Number | None:
    """Epoch ms a client started, from its `uptime`: a duration, unless it can only be a time."""
    if uptime is None or uptime < 0:
        return None
    if uptime > UPTIME_EPOCH_THRESHOLD:
        return uptime
    return now_ms - uptime


def client_session(item: RestClientItem, designer: bool, now_ms: float) -> ClientSession:
    """The REST item as the record `getSessionInfo` would have given; the route says the kind."""
    return ClientSession(username=item.user, project=item.project, address=item.address,
                         is_designer=designer, client_id=item.id,
                         creation_time=creation_time(item.uptime, now_ms))


@dataclass(frozen=True, slots=True)
class Listed:
    items: list[msgspec.Raw]
    warning: str | None = None


def on_route(path: str, exc: SourceError) -> SourceError:
    """`exc` saying which route's answer it is about."""
    return SourceError(exc.gateway, exc.reason, f"{path}: {exc.detail}", exc.status)


@dataclass(frozen=True, slots=True)
class RestAnswer:
    """What one poll fetched, before decoding."""

    info: bytes  # gateway-info's answer, decoded with the rest
    perspective: Listed
    vision: Listed
    designers: Listed
    fetched_at: float

    def warnings(self, info_warning: str | None) -> tuple[str, ...]:
        found = (info_warning, self.perspective.warning, self.vision.warning,
                 self.designers.warning)
        return tuple(w for w in found if w)


def read_info(body: bytes) -> tuple[_GatewayInfo, str | None]:
    """Name, version and redundancy role, and a warning when the answer could not be read
    whole: a body it cannot read costs only these, never the poll."""
    try:
        info, cut = decode_bounded(_INFO, body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        return _GatewayInfo(), f"gateway-info could not be read: {exc}"
    if cut:
        return info, (f"gateway-info could not be read whole: a value nested more than "
                      f"{MAX_DEPTH} levels deep was left out")
    return info, None


def decode_rest(answer: RestAnswer) -> Snapshot:
    now_ms = answer.fetched_at * 1000
    info, info_warning = read_info(answer.info)
    perspective = decode_records(answer.perspective.items, PERSPECTIVE_DECODER)
    vision = decode_records(answer.vision.items, REST_CLIENT_DECODER)
    designers = decode_records(answer.designers.items, REST_CLIENT_DECODER)
    return Snapshot(
        perspective=tuple(normalise_last_comm(s, now_ms) for s in perspective.records),
        perspective_json=perspective.raw,
        clients=tuple(client_session(c, False, now_ms) for c in vision.records)
        + tuple(client_session(c, True, now_ms) for c in designers.records),
        clients_json=vision.raw + designers.raw,  # as the gateway sent them
        reported_name=info.name,
        version=info.ignition_version,
        redundancy_role=info.redundancy_role,
        collected_at=answer.fetched_at,
        warnings=answer.warnings(info_warning),
        invalid_sessions=perspective.invalid + vision.invalid + designers.invalid,
    )


async def first_failure_cancels(*calls: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run `calls` concurrently; if one fails, cancel the rest and raise its error: a
    `SourceError` first, else the first other one, as itself (a worker lost while splitting
    a page, `WorkerLost`, is for the poller to name; in a group it read as unexpected)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        errors = [e for e in failed.exceptions if isinstance(e, SourceError)]
        raise (errors or failed.exceptions)[0] from None
    return [task.result() for task in tasks]


@dataclass(slots=True)
class Allowance:
    """What the answers of one poll may still add up to. The items are views into every page
    until the poll is digested, so `max_response_size` bounds all the pages of a poll
    together, not each. The four routes are read at once: each request may read what was
    left when it started, and the poll fails as soon as the sum passes the limit."""

    gateway: GatewayConfig
    left: int = 0

    def __post_init__(self) -> None:
        self.left = self.gateway.max_response_bytes

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise SourceError(self.gateway.name, Reason.TOO_LARGE, "the poll's answers add up "
                              f"to more than {self.gateway.max_response_bytes} bytes "
                              "(max_response_size)")


class RestSource:
    def __init__(self, gateway: GatewayConfig, client: GatewayClient, clock: Clock,
                 offload: Offload | None = None) -> None:
        self.gateway = gateway
        self._client = client
        self._clock = clock
        self._offload = offload
        base = gateway.url if gateway.url.endswith("/") else gateway.url + "/"
        self._url: Callable[[str], str] = lambda path: urljoin(base, path)

    async def fetch(self) -> Callable[[], Snapshot]:
        allowance = Allowance(self.gateway)
        try:
            info, perspective, vision, designers = await first_failure_cancels(
                self._get(GATEWAY_INFO_PATH, allowance), self._list(PERSPECTIVE, allowance),
                self._list(VISION, allowance), self._list(DESIGNERS, allowance))
        except SourceError as exc:
            raise self._explained(exc) from None
        answer = RestAnswer(info, perspective, vision, designers,
                            self._clock.time())
        return partial(decode_rest, answer)

    def _explained(self, exc: SourceError) -> SourceError:
        """The failure with what it means on this API, so the log line says what to fix."""
        detail = exc.detail
        if exc.status in (401, 403) and not self.gateway.token:
            pass  # no key configured: the client's detail says so
        elif exc.status == 401:
            detail = NOT_RECOGNISED
            if self.gateway.token and ":" not in self.gateway.token:
                detail += "; the configured key has no colon"
        elif exc.status == 403:
            detail = FORBIDDEN
        elif exc.reason is Reason.AUTH:
            detail = f"{detail}; {AUTH_HINT}"
        elif exc.status == 404:
            detail = f"{detail}; {NOT_A_GATEWAY_ROOT}"
        return SourceError(exc.gateway, exc.reason, detail, exc.status)

    async def _list(self, route: Route, allowance: Allowance) -> Listed:
        try:
            return Listed(await self._fetch_all(route.path, allowance))
        except SourceError as exc:
            if exc.status != 404 or route.module is None:
                raise on_route(route.path, exc) from None
            return Listed([], f"{route.module} module not installed ({route.path} "
                                          f"answered 404): no {route.what}")

    async def _get(self, path: str, allowance: Allowance,
                   params: dict[str, int] | None = None) -> bytes:
        """One answer, counted against what the poll's answers may still add up to."""
        body = await self._client.get(self._url(path), params=params, limit=allowance.left)
        allowance.spend(len(body))
        return body

    async def _fetch_all(self, path: str, allowance: Allowance) -> list[msgspec.Raw]:
        """Every item of one route, page by page, until `metadata.total` items (or, where the
        gateway gives no total, a short page); each page is only split into items here, so
        the next offset is the items actually read."""
        items: list[msgspec.Raw] = []
        limit = self.gateway.page_size
        previous: bytes | None = None
        for _ in range(MAX_PAGES):
            body = await self._get(path, allowance, {"limit": limit, "offset": len(items)})
            page = await self._split(body)
            first = bytes(page.items[0]) if page.items else None
            if first is not None and first == previous:
                raise SourceError(self.gateway.name, Reason.SCHEMA,
                                  f"{path} ignores offset: the same page came back twice")
            previous = first
            items.extend(page.items)
            if _last_page(len(page.items), len(items), page.total, limit):
                return items
        raise SourceError(self.gateway.name, Reason.SCHEMA,
                          f"{path} still had data after {MAX_PAGES} pages")

    async def _split(self, body: bytes) -> Page:
        """A page's items. Where splitting takes work in proportion to the page (a value
        nested too deep to cut out, many escapes to repair), it is offloaded to the workers
        and awaited: paging goes on from the items the page really held, which no guess can
        know, and the event loop's process does none of it. (A thread of that process would
        not do: each of the repair's passes of C code keeps the interpreter from the loop
        until it ends.)"""
        page = split_page(body, self.gateway.name)
        if page is not None:
            return page
        if self._offload is None:
            return read_page(body, self.gateway.name)
        page = await self._offload(read_page, body, self.gateway.name)
        assert isinstance(page, Page)
        return page


def _last_page(count: int, held: int, total: int | None, limit: int) -> bool:
    if not count:
        return True
    if total is not None:
        return held >= total
    return count != limit  # a short page, or a gateway that ignores `limit`
