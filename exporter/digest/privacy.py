"""Personal data: usernames in metric labels, client addresses in `/sessions`.

Usernames and client IP addresses are personal data. A site can keep them, replace usernames
in labels with a stable keyed hash (a user stays one series, and whoever holds the key can
check a name against it), or drop the label; and mask addresses in `/sessions`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field

from exporter.digest.aggregate import OTHER

USERNAME_LABEL_MODES = ("keep", "hash", "drop")
# Username values that name nobody: Ignition's and the 8.3 REST API's "no one logged in", the
# series cap's fold (aggregate.OTHER), and a username the gateway left out. They are never
# hashed, so alerts that exclude them keep matching whatever username_label is.
PLACEHOLDER_USERNAMES = frozenset({"Unauthenticated", "anonymous", OTHER, ""})


@dataclass(frozen=True, slots=True)
class Privacy:
    username_label: str = "keep"
    hash_key: bytes | None = field(default=None, repr=False)
    mask_addresses: bool = False

    @property
    def has_username_label(self) -> bool:
        return self.username_label != "drop"

    def username(self, value: str) -> str:
        """The label value for a username under this policy."""
        if self.username_label == "drop":
            return ""
        if self.username_label == "keep" or value in PLACEHOLDER_USERNAMES:
            return value
        assert self.hash_key is not None
        return "u_" + hmac.new(self.hash_key, value.encode(), hashlib.sha256).hexdigest()[:16]


def mask_address(value: object) -> object:
    """Keep the network, hide the host: 10.20.3.41 → 10.20.x.x, 2001:db8:1:2::5 → 2001:db8:1::x."""
    if not isinstance(value, str):
        return value
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return "x" if value else value
    if address.version == 4:
        return ".".join(str(address).split(".")[:2]) + ".x.x"
    network = ipaddress.ip_network(f"{address}/48", strict=False).network_address
    return f"{str(network).rstrip(':')}::x"
