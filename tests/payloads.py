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


# sessionScope as each version's documentation spells it: 8.0 lists designer, browser, ios,
# android; 8.1 pages show iOS, Android and Designer; 8.3 is lower case.
SCOPE_SPELLINGS = {
    "8.0.7": {"designer", "browser", "ios", "android"},
    "8.1.33": {"Designer", "browser", "iOS", "Android"},
    "8.3.6 (b2026042713)": {"designer", "browser", "ios", "android"},
}
# The user of a public session: "Unauthenticated" in the scripting docs, "anonymous" in a
# capture of the 8.3 REST API.
UNAUTHENTICATED = {"webdev": "Unauthenticated", "rest": "anonymous"}

# Ignition 8.3 REST API items, keys as captured from a live 8.3.6 gateway.
REST_PERSPECTIVE_KEYS = {"id", "username", "authorized", "project", "clientAddress", "lastComm",
                         "sessionScope", "activePages", "pageIds", "recentBytesSent",
                         "totalBytesSent", "userAgent"}
REST_DESIGNER_KEYS = {"id", "user", "address", "project", "uptime", "lastcomm", "timeout",
                      "memory", "timezone"}
REST_VISION_KEYS = REST_DESIGNER_KEYS | {"tagCount"}


def rest_designer(id: str = "d-1", user: str = "admin", **extra: Any) -> dict[str, Any]:
    """A `GET /data/api/v1/designers` item with the values of the 8.3.6 capture."""
    item: dict[str, Any] = {
        "id": id, "user": user, "uptime": 600_000, "lastcomm": 1_787_346_747_022,
        "timeout": 3_600_000, "memory": {"used": 268_435_456, "max": 1_073_741_824},
        "project": "MyProject", "address": "192.168.1.50:52526", "timezone": "America/New_York"}
    item.update(extra)
    return item


def rest_vision(id: str = "v-1", user: str = "operator", **extra: Any) -> dict[str, Any]:
    """A `GET /data/vision/api/v1/clients` item: a Designer's keys plus `tagCount`."""
    return rest_designer(id, user, project="PlantFloor", address="10.0.0.9:443",
                         uptime=120_000, timezone="UTC", tagCount=1523, **extra)


def rest_page(items: list[Any], total: int | None = None) -> dict[str, Any]:
    """The 8.3 list envelope."""
    count = len(items) if total is None else total
    return {"items": items, "metadata": {"total": count, "matching": count, "limit": -1,
                                         "offset": 0}}
