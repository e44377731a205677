"""The one way the exporter talks HTTP to a gateway: timeouts, TLS, token, size cap, and the
mapping of every failure onto a `Reason`."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import aiohttp

from exporter.config import WEBDEV_TOKEN_HEADER, GatewayConfig
from exporter.sources.errors import Reason, SourceError

_CHUNK = 256 * 1024


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

    def _fail(self, reason: Reason, detail: str) -> SourceError:
        return SourceError(self.gateway.name, reason, detail)

    async def get(self, url: str, params: Mapping[str, str | int] | None = None) -> bytes:
        try:
            async with self._session.get(
                url, params=params, headers=self._headers, ssl=self._ssl, timeout=self._timeout
            ) as response:
                self._check_status(response)
                return await self._read_capped(response)
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
                             f"{exc.os_error.strerror or exc.os_error}") from None
        except aiohttp.ClientPayloadError as exc:
            raise self._fail(Reason.CONNECT, f"response body cut short: {exc}") from None
        except aiohttp.ClientResponseError as exc:
            raise self._fail(Reason.HTTP, f"malformed HTTP response: {exc.message}") from None
        except aiohttp.ClientError as exc:
            raise self._fail(Reason.CONNECT, f"{type(exc).__name__}: {exc}") from None

    def _check_status(self, response: aiohttp.ClientResponse) -> None:
        if response.status in (401, 403):
            raise self._fail(Reason.AUTH, f"HTTP {response.status} {response.reason or ''}"
                             .strip() + ": the gateway refused the credentials")
        if not 200 <= response.status < 300:
            raise self._fail(Reason.HTTP, f"HTTP {response.status} {response.reason or ''}"
                             .strip())
        if response.content_type == "text/html":
            raise self._fail(Reason.HTTP, "expected JSON, got an HTML page (a proxy or "
                             "login page?)")
        length = response.content_length
        if length is not None and length > self.gateway.max_response_bytes:
            raise self._too_large()

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.gateway.max_response_bytes
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise self._too_large()
        return bytes(body)

    def _too_large(self) -> SourceError:
        return self._fail(Reason.TOO_LARGE, f"response larger than "
                          f"{self.gateway.max_response_bytes} bytes (max_response_size)")

