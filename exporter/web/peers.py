"""Which client a connection comes from, for the limits that share places among clients.

A client is one IPv4 address, or one IPv6 /64: a host is commonly given a whole /64 and picks
addresses from it at will (privacy addresses, RFC 8981), so counting IPv6 addresses one by one
would let a single host take as many shares as it likes. An IPv4 address written as IPv6
(`::ffff:192.0.2.7`, from a dual-stack socket) is that IPv4 address.

Only the connection's own peer address counts, never `X-Forwarded-For` or `Forwarded`:
anyone can write those. Behind a reverse proxy every client is the proxy (see the README).
"""

from __future__ import annotations

import ipaddress

IPV6_CLIENT_PREFIX = 64


def peer_of(address: str | None) -> str | None:
    """The client `address` belongs to; anything that is not an IP address (None, a Unix
    socket's path) is its own client."""
    if not address:
        return address
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)
