"""`GET /sessions`: the raw session lists from the last good polls, filtered.

The response is assembled from the bytes each gateway sent (`GatewayStatus.perspective` and
`.clients`, each a `SessionIndex`): a returned session costs one splice (its closing brace
replaced by the added `"gateway"` key); the filter tests each distinct (username, project)
pair once and never touches the sessions it rejects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import msgspec
from aiohttp import hdrs, web

from exporter.digest.privacy import mask_address
from exporter.model import SessionIndex
from exporter.polling.poller import GatewayStatus
from exporter.web.appkeys import CLOCK, FLEET, SESSIONS_IN_FLIGHT
from exporter.web.filters import BadQuery, SessionQuery, parse_query
from exporter.web.in_flight import Busy
from exporter.web.negotiation import accepts_gzip
from exporter.web.peers import peer_of

_WHITESPACE_OR_OPEN = frozenset(b"{ \t\r\n")
Session = memoryview | bytes  # one session's JSON, as the gateway sent it


def append_with_gateway(out: list[bytes | memoryview], raw: Session,
                        suffix: bytes) -> None:
    """Append the gateway's object to a JSON array being built, with `"gateway": name` added.

    The key goes last, so it wins over any key of that name the gateway sent. The object's
    bytes are not copied here: the final join copies them once.
    """
    if out:
        out.append(b",")
    view = memoryview(raw)
    if len(view) >= 2 and view[-2] not in _WHITESPACE_OR_OPEN:
        out += (view[:-1], suffix)
        return
    # `{}` or odd whitespace before the closing brace: rare enough for the exact, slow path.
    body = bytes(view).rstrip()[:-1].rstrip()
    out.append(body + (suffix[1:] if body == b"{" else suffix))  # no comma in an empty object


def gateway_entry(status: GatewayStatus, now: float) -> dict[str, object]:
    error = status.error
    return {
        "name": status.gateway.name,
        "up": status.up,
        "stale": not status.is_fresh(now),
        "lastSuccess": status.last_success,
        "error": f"{error.reason}: {error.detail}" if error else None,
    }


Rewrite = Callable[[Session], Session]


def _unchanged(raw: Session) -> Session:
    return raw


# A session's fields with their values as sent: masking reads the address alone, so a value
# the exporter never reads (`1e400`, beyond a double) cannot fail it.
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def masking(key: str) -> Rewrite:
    """Re-encode a returned session with its address masked (only returned ones pay this)."""

    def rewrite(raw: Session) -> Session:
        # As text, where bytes that are no UTF-8 (which JSON must be) are shown replaced: a
        # session that fails to decode would be served unmasked.
        text = bytes(raw).decode("utf-8", "replace")
        try:
            item = _FIELDS.decode(text)
        except msgspec.DecodeError:  # not an object: it holds no address
            return raw
        if key in item:
            item[key] = msgspec.Raw(msgspec.json.encode(_masked(item[key])))
        return msgspec.json.encode(item)

    return rewrite


def _masked(value: msgspec.Raw) -> object:
    try:
        return mask_address(msgspec.json.decode(value))
    except msgspec.DecodeError:  # a number beyond a double: not an address, and shown as "x"
        return "x"


def _select(index: SessionIndex, query: SessionQuery, suffix: bytes, rewrite: Rewrite,
            out: list[bytes | memoryview]) -> None:
    filtered = query.username is not None or query.project is not None
    for raw in index.select(query.wants if filtered else None):
        append_with_gateway(out, rewrite(raw), suffix)


def render_sessions(statuses: Sequence[GatewayStatus], query: SessionQuery, now: float,
                    mask_addresses: bool = False) -> bytes:
    perspective_rewrite = masking("clientAddress") if mask_addresses else _unchanged
    vision_rewrite = masking("address") if mask_addresses else _unchanged
    chosen = [s for s in statuses if query.wants_gateway(s.gateway.name)]
    lists: dict[str, list[bytes | memoryview]] = {kind: [] for kind in query.kinds}
    for status in chosen:
        if not status.is_fresh(now):
            continue  # stale data is not served; the gateways entry says why
        suffix = b',"gateway":' + json.dumps(status.gateway.name).encode() + b"}"
        if "perspective" in lists:
            _select(status.perspective, query, suffix, perspective_rewrite, lists["perspective"])
        if "vision" in lists:
            _select(status.clients, query, suffix, vision_rewrite, lists["vision"])
    parts: list[bytes | memoryview] = [b"{"]
    for kind, items in lists.items():
        parts += [b'"', kind.encode(), b'":[', *items, b"],"]
    parts += [b'"gateways":', json.dumps([gateway_entry(s, now) for s in chosen]).encode(), b"}"]
    return b"".join(parts)


async def sessions_handler(request: web.Request) -> web.StreamResponse:
    fleet = request.app[FLEET]
    if not fleet.config.sessions_endpoint:  # switched off, perhaps by a reload
        raise web.HTTPNotFound()
    statuses = fleet.statuses()
    params = {key: request.query.getall(key) for key in set(request.query.keys())}
    try:
        query = parse_query(params, {s.gateway.name for s in statuses})
    except BadQuery as exc:
        return web.json_response({"error": str(exc)}, status=400)
    in_flight = request.app[SESSIONS_IN_FLIGHT]
    async with in_flight.rendering:  # in a thread: an unfiltered answer is CPU-seconds
        if _gone(request):  # it left while waiting its turn: nothing to render it for
            return web.Response(status=499)
        body = await asyncio.to_thread(render_sessions, statuses, query,
                                       request.app[CLOCK].time(),
                                       fleet.config.privacy.mask_addresses)
    try:
        with in_flight.slot(peer_of(request.remote), len(body)):
            return await _send(request, body)
    except Busy as exc:
        return web.json_response({"error": str(exc)}, status=429,
                                 headers={hdrs.RETRY_AFTER: "1"})


# What one write hands the transport. Over TLS, a write encrypts all it is given and passes
# it down at once, never waiting for the client: in slices, each write waits for the one
# before to be taken, so the answer's room in the budget is held while the client reads.
_SLICE = 256 << 10


async def _write(response: web.StreamResponse, body: bytes) -> None:
    view = memoryview(body)
    for start in range(0, len(view), _SLICE):
        await response.write(view[start:start + _SLICE])


def _gone(request: web.Request) -> bool:
    """Whether the client has closed its connection. The server does not cancel a handler
    when its client goes, so a client asking and leaving at once queued renders at will."""
    return request.transport is None or request.transport.is_closing()


async def _send(request: web.Request, body: bytes) -> web.StreamResponse:
    """Write `body` out before returning, so the answer's slot is held until the transport
    has taken it (a `Response` returned would be written after the slot was given back)."""
    response = web.StreamResponse(headers={hdrs.VARY: hdrs.ACCEPT_ENCODING})
    response.content_type = "application/json"
    head = request.method == hdrs.METH_HEAD  # the headers a GET would have, alone
    if not accepts_gzip(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, []))):
        response.content_length = len(body)
    elif head:  # said, not done: a compressor would write its empty stream's bytes
        response.headers[hdrs.CONTENT_ENCODING] = web.ContentCoding.gzip.value
    else:
        response.enable_compression(web.ContentCoding.gzip)
    try:
        await response.prepare(request)
        if not head:
            await _write(response, body)
        await response.write_eof()
    except ConnectionError:  # the client left mid-answer: nothing to tell it, or to log
        pass
    return response
