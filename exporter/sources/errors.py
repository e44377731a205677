"""Why a poll failed, as data: the reason is a metric label, the detail a log field."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    TIMEOUT = "timeout"
    CONNECT = "connect"
    HTTP = "http"
    AUTH = "auth"
    DECODE = "decode"
    SCHEMA = "schema"
    TOO_LARGE = "too_large"


class SourceError(Exception):
    """A failed poll: which gateway, which `Reason`, and a human-readable detail.

    The detail never contains a token: it is built from status codes, exception types and
    the gateway's own error text, never from request headers.
    """

    def __init__(self, gateway: str, reason: Reason, detail: str,
                 status: int | None = None) -> None:
        super().__init__(gateway, reason, detail)
        self.gateway = gateway
        self.reason = reason
        self.detail = detail
        # The HTTP status when the gateway answered with one: a source may know what it means
        # on its own routes (a 404 on a module's route is a module that is not installed).
        self.status = status

    def __str__(self) -> str:
        return f"{self.gateway}: {self.reason}: {self.detail}"
