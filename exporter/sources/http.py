"""The one way the exporter talks HTTP to a gateway: timeouts, TLS, token, size cap, and the
mapping of every failure onto a `Reason`.

Redirects are never followed. The endpoints the exporter reads never need one, and following
one would send the token (aiohttp strips only `Authorization` when the origin changes, not
an API-key header) and accept another host's answer as the gateway's. A 3xx is a failed poll
whose detail says where it pointed and what that usually means.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

import aiohttp

from exporter.config import WEBDEV_TOKEN_HEADER, GatewayConfig
from exporter.sources.errors import Reason, SourceError

# Cookies kept per gateway, in number and in bytes: a gateway sets one or two (a session id),
# and what is sent back must stay well within the request headers a gateway takes (Jetty's
# default is 8 KiB in all).
MAX_COOKIES = 20
MAX_COOKIE_BYTES = 4096
# A `Location` longer than this is cut in the detail: it is the gateway's text, not ours.
_LOCATION_MAX_CHARS = 200


def ssl_context_for(gateway: GatewayConfig) -> ssl.SSLContext | bool:
    """`False` turns verification off, `True` means aiohttp's default (system CAs)."""
    if not gateway.tls_verify:
        return False
    if gateway.ca_file:
        return ssl.create_default_context(cafile=gateway.ca_file)
    return True


def auth_headers(gateway: GatewayConfig) -> dict[str, str]:
    if not gateway.token:
        return {}
    if gateway.token_header.lower() == WEBDEV_TOKEN_HEADER.lower():
        return {gateway.token_header: f"Bearer {gateway.token}"}
    return {gateway.token_header: gateway.token}


class GatewayClient:
    """GETs a gateway URL and returns the body, or raises `SourceError` naming the reason."""

    def __init__(self, gateway: GatewayConfig, session: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self._session = session
        self._ssl = ssl_context_for(gateway)
        self._headers = {"Accept": "application/json", **auth_headers(gateway)}
        self._timeout = aiohttp.ClientTimeout(
            total=gateway.timeout, connect=gateway.connect_timeout
        )
        self._cookies: aiohttp.CookieJar | None = None  # made on the event loop, at first use

    def _fail(self, reason: Reason, detail: str, status: int | None = None) -> SourceError:
        return SourceError(self.gateway.name, reason, detail, status)

    async def get(self, url: str, params: Mapping[str, str | int] | None = None,
                  limit: int | None = None) -> bytes:
        """The body, at most `limit` bytes (default `max_response_size`): a source reading
        several answers in one poll passes what is left of the poll's allowance."""
        limit = self.gateway.max_response_bytes if limit is None else limit
        try:
            async with self._session.get(
                url, params=params, headers=self._with_cookies(), ssl=self._ssl,
                timeout=self._timeout, allow_redirects=False,
            ) as response:
                self._keep_cookies(response)
                self._check_status(response, limit)
                return await self._read_capped(response, limit)
        except SourceError:
            raise
        except TimeoutError:
            raise self._fail(Reason.TIMEOUT, f"no complete answer within "
                             f"{self.gateway.timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._fail(Reason.CONNECT, f"TLS certificate rejected: "
                             f"{exc.certificate_error}") from None
        except aiohttp.ClientConnectorError as exc:
            raise self._fail(Reason.CONNECT, f"cannot connect to {exc.host}:{exc.port}: "
                             f"{connect_detail(exc.os_error)}") from None
        except aiohttp.ClientPayloadError as exc:
            raise self._fail(Reason.CONNECT, f"response body cut short: {exc}") from None
        except aiohttp.ClientResponseError as exc:
            raise self._fail(Reason.HTTP, f"malformed HTTP response: {exc.message}") from None
        except aiohttp.InvalidURL:  # its text is the URL, with any password in it
            raise self._fail(Reason.CONNECT, "the configured url cannot be requested "
                             "(check its host and port)") from None
        except aiohttp.ClientError as exc:
            raise self._fail(Reason.CONNECT, f"{type(exc).__name__}: {exc}") from None

    def _jar(self) -> aiohttp.CookieJar:
        """This gateway's own cookies. The HTTP client every gateway shares keeps none: a
        cookie ignores ports, and may name a parent domain, so one jar for all sent what one
        gateway set with every request to the others on its host or in its domain. Kept per
        gateway rather than dropped, so a gateway that ties requests to an HTTP session of
        its own sees one, not a new one per poll (`unsafe`: for a gateway named by its IP
        address too). All of them go with every request: they all came from this gateway,
        and iterating the jar leaves out the expired ones."""
        if self._cookies is None:
            self._cookies = aiohttp.CookieJar(unsafe=True)
        return self._cookies

    def _with_cookies(self) -> Mapping[str, str]:
        """The request's headers, with this gateway's cookies as it sent them. Written out
        here rather than given to aiohttp as names and values, which it checks again: a
        cookie named like an attribute (`path`), which a gateway may well set, raised there
        at every later poll, and the gateway stayed down for as long as the cookie lived."""
        cookies = "; ".join(f"{morsel.key}={morsel.coded_value}" for morsel in self._jar())
        return {**self._headers, "Cookie": cookies} if cookies else self._headers

    def _keep_cookies(self, response: aiohttp.ClientResponse) -> None:
        """Keep what the gateway set, within `MAX_COOKIES` and `MAX_COOKIE_BYTES`: past
        them, a gateway setting new ones at every answer starts again from none, rather than
        growing the jar for ever and its own requests' headers past what it accepts."""
        jar = self._jar()
        jar.update_cookies(response.cookies, response.url)
        held = sum(len(morsel.key) + len(morsel.coded_value) for morsel in jar)
        if len(jar) > MAX_COOKIES or held > MAX_COOKIE_BYTES:
            jar.clear()

    def _check_status(self, response: aiohttp.ClientResponse, limit: int) -> None:
        if 300 <= response.status < 400:
            raise self._fail(Reason.HTTP, redirect_detail(
                response.status, str(response.url), response.headers.get("Location")))
        if response.status in (401, 403):
            refused = ("the gateway refused the credentials" if self.gateway.token else
                       "the gateway wants credentials, and none are configured for it "
                       "(token_file or token_env)")
            raise self._fail(Reason.AUTH, f"HTTP {response.status} {response.reason or ''}"
                             .strip() + f": {refused}", response.status)
        if not 200 <= response.status < 300:
            raise self._fail(Reason.HTTP, f"HTTP {response.status} {response.reason or ''}"
                             .strip(), response.status)
        if response.content_type == "text/html":
            raise self._fail(Reason.HTTP, "expected JSON, got an HTML page (a proxy or "
                             "login page?)")
        length = response.content_length
        if length is not None and length > limit:
            raise self._too_large()

    async def _read_capped(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        """The chunks are kept as received and joined once: the event loop reads a round of
        big answers at once, and each copy of their bytes there delays scrapes."""
        chunks: list[bytes] = []
        size = 0
        async for chunk, _ in response.content.iter_chunks():
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> SourceError:
        return self._fail(Reason.TOO_LARGE, f"answer larger than "
                          f"{self.gateway.max_response_bytes} bytes (max_response_size, "
                          f"which bounds all the pages of one poll together)")


def connect_detail(error: OSError) -> str:
    """Why a connection failed, with what it most likely means where that is known."""
    if isinstance(error, ssl.SSLError) and error.reason == "WRONG_VERSION_NUMBER":
        return ("the port answered without TLS: use http:// for it, or the gateway's HTTPS "
                "port (8088 is Ignition's HTTP port by default, 8043 its HTTPS one)")
    return str(error.strerror or error)


def redirect_detail(status: int, requested: str, location: str | None) -> str:
    """What a redirect the exporter did not follow most likely means, for the log line."""
    if not location:
        return f"HTTP {status} without a Location; redirects are not followed"
    shown = location if len(location) <= _LOCATION_MAX_CHARS else \
        location[:_LOCATION_MAX_CHARS] + "…"
    head = f"HTTP {status} redirect to {shown!r}, not followed: "
    try:
        source, target = urlsplit(requested), urlsplit(urljoin(requested, location))
        same_host = source.hostname == target.hostname
        same_port = source.port == target.port
    except ValueError:
        return head + "the Location is not a valid URL"
    if target.path.rstrip("/").endswith("/welcome"):
        return head + ("the gateway is not commissioned yet (Ignition 8.3 sends every "
                       "request to /welcome until its first-time setup is finished)")
    if (source.scheme, target.scheme) == ("http", "https") and same_host:
        return head + "the gateway wants HTTPS: configure the url as https://"
    if not (same_host and same_port):
        return head + ("it points to another host, which would receive the token; "
                       "configure the gateway's own address")
    return head + "check the configured url (a moved resource, a login page?)"
