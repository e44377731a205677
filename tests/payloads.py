"""Builders for realistic gateway payloads, shaped like Ignition's own answers."""

from __future__ import annotations

import json
from typing import Any

from exporter.model import Snapshot
from exporter.sources.webdev import decode_webdev

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0"


def perspective(id: str = "a1b2c3d4", username: str = "jsmith", project: str = "Line1",
                scope: str = "browser", *, last_comm: int | None = 450,
                active_pages: int | None = 1, recent: int | None = 1200,
                total: int | None = 50_000, **extra: Any) -> dict[str, Any]:
    """One `system.perspective.getSessionInfo()` entry with every documented key."""
    item: dict[str, Any] = {
        "userAgent": AGENT, "id": id, "username": username, "project": project,
        "uptime": 3_600_000, "clientAddress": "10.1.2.3", "lastComm": last_comm,
        "sessionScope": scope, "activePages": active_pages, "recentBytesSent": recent,
        "totalBytesSent": total, "pageIds": ["/"] * (active_pages or 0), "authorized": True,
    }
    item.update(extra)
    return item


def vision(username: str = "operator1", project: str = "Line1", *, designer: bool = False,
           client_id: str = "3F2A1C", address: str = "10.1.9.9") -> dict[str, Any]:
    """One row of `system.util.getSessionInfo()` as the WebDev script encodes it."""
    return {"username": username, "project": project, "address": address,
            "isDesigner": designer, "clientId": client_id, "creationTime": 1_795_000_000_000}


def document(perspective_items: list[Any] | None = None, vision_items: list[Any] | None = None,
             *, warnings: list[str] | None = None, version: str = "8.1.33") -> dict[str, Any]:
    return {"schema": 1, "gateway": {"name": "Ignition-plant-a", "version": version},
            "collectedAt": 1_795_000_000_000, "perspective": perspective_items or [],
            "vision": vision_items or [], "warnings": warnings or []}


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def snapshot_of(doc: dict[str, Any], gateway: str = "plant-a") -> Snapshot:
    return decode_webdev(encode(doc), gateway)
