from __future__ import annotations

import pytest

from exporter.web.peers import peer_of


@pytest.mark.parametrize(("address", "client"), [
    ("192.0.2.7", "192.0.2.7"),
    ("127.0.0.2", "127.0.0.2"),
    # One host holds a /64 and picks addresses in it at will: one client.
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::1", "::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 through a dual-stack socket
    ("/run/exporter.sock", "/run/exporter.sock"),
    ("", ""),
    (None, None),
])
def test_a_client_is_an_ipv4_address_or_an_ipv6_slash_64(address: str | None,
                                                          client: str | None) -> None:
    assert peer_of(address) == client
