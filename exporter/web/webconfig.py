"""`--web.config.file`: TLS, basic auth and response headers, in exporter-toolkit's format.

Every official Prometheus exporter reads this same YAML shape, so an operator can reuse the
file (and the knowledge) they already have. The core of the format is supported; the toolkit
keys that are not get a clear "not supported" error rather than being silently ignored.
"""

from __future__ import annotations

import re
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


# What a PEM file holds, by the labels of its blocks (RFC 7468), and how much of it is read
# for them: a certificate chain or a key is a few kB.
_PEM_LABEL = re.compile(r"^-----BEGIN ([A-Z0-9 ]+)-----", re.MULTILINE)
_MAX_PEM_BYTES = 2**20


def _holds(path: str) -> set[str]:
    """`certificate`, `private key` and `encrypted` for what the PEM file at `path` holds."""
    try:
        with open(path, "rb") as file:
            text = file.read(_MAX_PEM_BYTES).decode("ascii", errors="replace")
    except OSError:
        return set()
    labels = _PEM_LABEL.findall(text)
    held = {kind for kind in ("certificate", "private key")
            if any(label.endswith(kind.upper()) for label in labels)}
    if "ENCRYPTED PRIVATE KEY" in labels or "Proc-Type: 4,ENCRYPTED" in text:  # PKCS#8, legacy
        held.add("encrypted")
    return held


def _pair_problem(cert: str, key: str, exc: ssl.SSLError) -> tuple[str, str]:
    """The key at fault, and what is wrong, when OpenSSL refuses a certificate and key: its
    own words ("PEM lib", "KEY_VALUES_MISMATCH") name neither file nor the fix."""
    in_cert, in_key = _holds(cert), _holds(key)
    if "certificate" not in in_cert and "private key" in in_cert and "certificate" in in_key:
        return "cert_file", (f"{cert} holds a private key and {key} a certificate: cert_file "
                             "and key_file are swapped; exchange them")
    if "certificate" not in in_cert:
        return "cert_file", f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    if "encrypted" in in_key:
        return "key_file", (f"{key} holds an encrypted private key, and the exporter asks "
                            "for no password: decrypt it into another file (openssl pkey "
                            "-in KEY -out PLAIN-KEY) and name that")
    if "private key" not in in_key:
        return "key_file", (f"{key} holds no PEM private key (-----BEGIN PRIVATE KEY-----)" +
                            (", but a certificate" if "certificate" in in_key else ""))
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":  # None when raised by hand
        return "key_file", (f"the private key in {key} does not belong to the certificate in "
                            f"{cert} (its first, the server's own): give the key it was made "
                            "with, or that key's certificate")
    return "cert_file", _cannot_load(cert, key, exc)


def _unreadable(cert: str, key: str, exc: OSError) -> tuple[str, str]:
    """The key naming the file that cannot be read, and why: OpenSSL's error names neither
    (a key file readable by root alone, when the check runs as the service's user)."""
    for at, path in (("cert_file", cert), ("key_file", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            return at, f"cannot read {path}: {error.strerror or error}"
    return "cert_file", _cannot_load(cert, key, exc)


def _cannot_load(cert: str, key: str, exc: OSError) -> str:
    return f"cannot load certificate and key ({cert}, {key}): {exc}"


def _no_password() -> bytes:
    """The password of an encrypted key: none. Without this, OpenSSL would ask for it on
    the terminal, and a check or a reload would wait for it for ever."""
    raise ssl.SSLError("the private key is encrypted")


def _load_pair(context: ssl.SSLContext, tls: Mapping[str, Any],
               problems: list[Problem]) -> bool:
    """Whether the certificate and key load into `context`; if not, a problem at the key
    to fix."""
    cert, key = tls["cert_file"], tls["key_file"]
    try:
        context.load_cert_chain(cert, key, password=_no_password)
        return True
    except ssl.SSLError as exc:
        at, message = _pair_problem(cert, key, exc)
    except OSError as exc:  # a file missing or unreadable
        at, message = _unreadable(cert, key, exc)
    problems.append(Problem(f"tls_server_config.{at}", message))
    return False


def _ssl_context(tls: Mapping[str, Any], problems: list[Problem]) -> ssl.SSLContext | None:
    where = "tls_server_config"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[tls.get("min_version", "TLS12")]
    if "max_version" in tls:
        context.maximum_version = TLS_VERSIONS[tls["max_version"]]
    if not _load_pair(context, tls, problems):
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
