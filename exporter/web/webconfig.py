"""`--web.config.file`: TLS, basic auth and response headers, in exporter-toolkit's format.

Every official Prometheus exporter reads this same YAML shape, so an operator can reuse the
file (and the knowledge) they already have. The core of the format is supported; the toolkit
keys that are not get a clear "not supported" error rather than being silently ignored.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exporter.schema import (
    INVALID,
    ConfigError,
    Parser,
    Problem,
    Reader,
    bcrypt_hash_field,
    file_field,
    folder_of,
    load_checked,
    mapping_of,
    one_of,
)

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# exporter-toolkit allows these response headers and no others.
ALLOWED_HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
                   "X-XSS-Protection", "Content-Security-Policy")


def _unsupported(why: str) -> Parser:
    def parse(reader: Reader, value: object, location: str) -> Any:
        reader.fail(location, f"not supported by this exporter: {why}")
        return INVALID

    return parse


def _header(reader: Reader, value: object, location: str) -> Any:
    name = location.rsplit(".", 1)[-1]
    if name not in ALLOWED_HEADERS:
        reader.fail(location, f"header not allowed (allowed: {', '.join(ALLOWED_HEADERS)})")
        return INVALID
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        reader.fail(location, "expected a single-line string")
        return INVALID
    return value


_TLS_FIELDS: dict[str, Parser] = {
    "cert_file": file_field,
    "key_file": file_field,
    "client_ca_file": file_field,
    "client_auth_type": one_of(tuple(CLIENT_AUTH)),
    "min_version": one_of(tuple(TLS_VERSIONS)),
    "max_version": one_of(tuple(TLS_VERSIONS)),
    "cipher_suites": _unsupported("Python's ssl module chooses TLS 1.2 ciphers by OpenSSL "
                                  "string, not by Go cipher suite names"),
    "curve_preferences": _unsupported("curves are OpenSSL's defaults"),
    "prefer_server_cipher_suites": _unsupported("OpenSSL's default order is used"),
    "client_allowed_sans": _unsupported("use client_ca_file to decide who may connect"),
}


def _tls_block(reader: Reader, value: object, location: str) -> Any:
    return reader.mapping(value, location, _TLS_FIELDS, required=("cert_file", "key_file"))


def _http_block(reader: Reader, value: object, location: str) -> Any:
    return reader.mapping(value, location, {
        "headers": mapping_of(_header),
        "http2": _unsupported("aiohttp serves HTTP/1.1"),
    })


_TOP_FIELDS: dict[str, Parser] = {
    "tls_server_config": _tls_block,
    "basic_auth_users": mapping_of(bcrypt_hash_field),
    "http_server_config": _http_block,
}


@dataclass(frozen=True, slots=True)
class WebConfig:
    """How the exporter's own HTTP server is reached: TLS, users, extra headers."""

    ssl_context: ssl.SSLContext | None = None
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"


def _ssl_context(tls: Mapping[str, Any], problems: list[Problem]) -> ssl.SSLContext | None:
    where = "tls_server_config"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[tls.get("min_version", "TLS12")]
    if "max_version" in tls:
        context.maximum_version = TLS_VERSIONS[tls["max_version"]]
    try:
        context.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as exc:
        problems.append(Problem(f"{where}.cert_file", f"cannot load certificate and key "
                                f"({tls['cert_file']}, {tls['key_file']}): {exc}"))
        return None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth != "NoClientCert" and "client_ca_file" not in tls:
        problems.append(Problem(f"{where}.client_ca_file",
                                f"required when client_auth_type is {auth}"))
        return None
    if "client_ca_file" in tls:
        try:
            context.load_verify_locations(cafile=tls["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            problems.append(Problem(f"{where}.client_ca_file", f"cannot load: {exc}"))
            return None
    context.verify_mode = CLIENT_AUTH[auth]
    return context


def build_web_config(document: object, folder: Path | None = None) -> WebConfig:
    """The web configuration of a parsed document; its relative file paths are read from
    `folder` (the file's own, as exporter-toolkit reads them), or the current one."""
    if document is None:
        return WebConfig()  # an empty file: plain HTTP, no users
    reader = Reader(folder)
    raw = reader.mapping(document, "", _TOP_FIELDS)
    problems = list(reader.problems)
    # The certificate is loaded whatever else is wrong, so that a bad hash hides no missing
    # file; not from TLS settings with a problem of their own, which are told already.
    context = _ssl_context(raw["tls_server_config"], problems) \
        if "tls_server_config" in raw and not reader.failed("tls_server_config") else None
    if problems:
        raise ConfigError(problems)
    return WebConfig(
        ssl_context=context,
        basic_auth_users=MappingProxyType(raw.get("basic_auth_users", {})),
        headers=MappingProxyType(raw.get("http_server_config", {}).get("headers", {})),
    )


def load_web_config(path: str | Path) -> WebConfig:
    return load_checked(path, lambda document: build_web_config(document, folder_of(path)))


class LiveWebConfig:
    """The web configuration in force, which a reload may replace.

    The server keeps the TLS context it started listening with; its SNI callback, which
    OpenSSL calls for every handshake whether or not the client sent a name, hands each new
    connection the current configuration's context (certificate, key, client CAs). The
    client-certificate mode and the TLS versions are read from the listening context itself,
    so a reload copies them onto it. Connections already open keep what they negotiated.
    """

    def __init__(self, initial: WebConfig) -> None:
        self.current = initial
        self._listening = initial.ssl_context
        if self._listening is not None:
            self._listening.sni_callback = self._use_current

    def _use_current(self, ssl_object: ssl.SSLObject, _name: str | None,
                     _context: ssl.SSLContext) -> None:
        ssl_object.context = self.current.ssl_context  # type: ignore[assignment]

    def check(self, new: WebConfig) -> WebConfig:
        """`new`, if a reload can apply it; TLS cannot be turned on or off while listening."""
        if (new.ssl_context is None) != (self._listening is None):
            state = "on" if new.ssl_context else "off"
            raise ConfigError([Problem("tls_server_config", f"TLS cannot be turned {state} by "
                                       "a reload; restart the exporter")])
        return new

    def replace(self, new: WebConfig) -> None:
        new = self.check(new)
        if self._listening is not None and new.ssl_context is not None:
            self._listening.verify_mode = new.ssl_context.verify_mode
            self._listening.minimum_version = new.ssl_context.minimum_version
            self._listening.maximum_version = new.ssl_context.maximum_version
        self.current = new
