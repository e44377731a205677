"""Personal data: usernames in labels, addresses in /sessions, who may read /sessions."""

from __future__ import annotations

import re
from dataclasses import replace

import bcrypt
import pytest
from aiohttp.test_utils import TestClient

from exporter.config import Config, GatewayConfig
from exporter.digest.privacy import Privacy, mask_address
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.web.appkeys import FLEET
from exporter.web.http import create_app
from exporter.web.webconfig import WebConfig
from tests.conftest import ClientFactory, FakeClock, ServerFactory, eventually
from tests.metrics import samples, total
from tests.processes import basic_auth


@pytest.mark.parametrize(("address", "masked"), [
    ("10.20.3.41", "10.20.x.x"), ("2001:db8:1:2::5", "2001:db8:1::x"), ("::1", "::x"),
    ("kiosk-7.plant.local", "x"), ("", ""), (None, None),
])
def test_mask_address(address: object, masked: object) -> None:
    assert mask_address(address) == masked


def test_username_hash_is_stable_keyed_and_opaque() -> None:
    a = Privacy(username_label="hash", hash_key=b"key-one")
    b = Privacy(username_label="hash", hash_key=b"key-two")
    assert a.username("jsmith") == a.username("jsmith")
    assert a.username("jsmith") != b.username("jsmith")
    assert re.fullmatch(r"u_[0-9a-f]{16}", a.username("jsmith"))
    assert Privacy(username_label="drop").username("jsmith") == ""


@pytest.mark.parametrize("placeholder", ["Unauthenticated", "anonymous", "__other__", ""])
def test_placeholders_are_never_hashed(placeholder: str) -> None:
    """They name nobody, and the per-user alerts exclude them by these exact values."""
    assert Privacy(username_label="hash", hash_key=b"k").username(placeholder) == placeholder
    assert Privacy(username_label="drop").username(placeholder) == ""


async def start(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory,
                web_config: WebConfig | None = None, **options: object) -> TestClient:
    simulator = GatewaySimulator(seed=4, clock=FakeClock())
    gateway = await aiohttp_server(simulator_app(simulator))
    config = replace(Config(gateways=(GatewayConfig(
        name="plant-a", url=str(gateway.make_url(WEBDEV_PATH)), poll_interval=1, timeout=1),)),
        **options)
    client = await aiohttp_client(create_app(config, web_config=web_config))
    fleet = client.app[FLEET]
    await eventually(lambda: fleet.statuses()[0].up, what="first poll")
    return client


def usernames(text: str, metric: str) -> set[str | None]:
    return {dict(labels).get("username") for labels in samples(text, metric)}


async def test_hashed_usernames(aiohttp_server: ServerFactory,
                                aiohttp_client: ClientFactory) -> None:
    privacy = Privacy(username_label="hash", hash_key=b"site-key")
    client = await start(aiohttp_server, aiohttp_client, privacy=privacy)
    text = await (await client.get("/metrics")).text()
    names = usernames(text, "ignition_perspective_sessions")
    assert "Unauthenticated" in names  # a placeholder, never hashed
    names -= {"Unauthenticated"}
    assert names and all(re.fullmatch(r"u_[0-9a-f]{16}", str(n)) for n in names)
    assert privacy.username("jsmith") in names | usernames(text, "ignition_client_sessions")
    assert "jsmith" not in text and "operator1" not in text


async def test_hashed_usernames_keep_placeholders(aiohttp_server: ServerFactory,
                                                  aiohttp_client: ClientFactory) -> None:
    """Under hash, the series cap's fold keeps its placeholder name in /metrics, next to
    hashed real users."""
    privacy = Privacy(username_label="hash", hash_key=b"site-key")
    client = await start(aiohttp_server, aiohttp_client, privacy=privacy,
                         max_series_per_metric=5)
    text = await (await client.get("/metrics")).text()
    names = usernames(text, "ignition_perspective_sessions")
    assert "__other__" in names
    hashed = names - {"Unauthenticated", "__other__"}
    assert hashed and all(re.fullmatch(r"u_[0-9a-f]{16}", str(n)) for n in hashed)
    assert "__other__" in usernames(text, "ignition_client_sessions")


async def test_dropped_usernames(aiohttp_server: ServerFactory,
                                 aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_server, aiohttp_client,
                         privacy=Privacy(username_label="drop"))
    text = await (await client.get("/metrics")).text()
    assert usernames(text, "ignition_perspective_sessions") == {None}
    assert usernames(text, "ignition_client_sessions") == {None}
    assert total(text, "ignition_perspective_sessions") == 40


async def test_masked_addresses(aiohttp_server: ServerFactory,
                                aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_server, aiohttp_client,
                         privacy=Privacy(mask_addresses=True))
    body = await (await client.get("/sessions")).json()
    addresses = {s["clientAddress"] for s in body["perspective"]} | {
        s["address"] for s in body["vision"]}
    assert addresses and all(a is None or re.fullmatch(r"10\.\d+\.x\.x", a) for a in addresses)
    assert all(s["gateway"] == "plant-a" for s in body["perspective"])


async def test_sessions_endpoint_off(aiohttp_server: ServerFactory,
                                     aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_server, aiohttp_client, sessions_endpoint=False)
    assert (await client.get("/sessions")).status == 404
    assert "/sessions" not in await (await client.get("/")).text()
    assert (await client.get("/metrics")).status == 200


async def test_sessions_users_are_separate_from_metrics_users(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    web = WebConfig(basic_auth_users={"prom": bcrypt.hashpw(b"p1", bcrypt.gensalt(4))})
    client = await start(aiohttp_server, aiohttp_client, web_config=web,
                         sessions_users={"auditor": bcrypt.hashpw(b"a1", bcrypt.gensalt(4))})
    prom, auditor = basic_auth("prom", "p1"), basic_auth("auditor", "a1")
    assert (await client.get("/metrics", headers=prom)).status == 200
    assert (await client.get("/metrics", headers=auditor)).status == 401
    assert (await client.get("/sessions", headers=auditor)).status == 200
    assert (await client.get("/sessions", headers=prom)).status == 401
    assert (await client.get("/sessions")).status == 401
    assert (await client.get("/healthz")).status == 200


async def test_sessions_users_alone_protect_only_sessions(
        aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_server, aiohttp_client,
                         sessions_users={"auditor": bcrypt.hashpw(b"a1", bcrypt.gensalt(4))})
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/sessions")).status == 401
    assert (await client.get("/sessions", headers=basic_auth("auditor", "a1"))).status == 200
