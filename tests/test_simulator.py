"""The simulated gateway answers as real gateways do, held against the documented spellings and
the captured 8.3 shapes in tests/payloads.py, over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from exporter.standins.simulator import (
    GATEWAY_INFO_PATH,
    REST_PATHS,
    WEBDEV_PATH,
    GatewaySimulator,
    simulator_app,
)
from tests.conftest import FakeClock, ServerFactory
from tests.payloads import (
    REST_DESIGNER_KEYS,
    REST_PERSPECTIVE_KEYS,
    REST_VISION_KEYS,
    SCOPE_SPELLINGS,
    UNAUTHENTICATED,
)

KEY = "exporter:Zq3v9XbT0kP2wL7m"


def busy(version: str, **options: Any) -> GatewaySimulator:
    """Enough sessions that every scope and user shows up."""
    return GatewaySimulator(seed=4, clock=FakeClock(), version=version, target_sessions=200,
                            target_clients=30, **options)


@pytest.mark.parametrize("version", sorted(SCOPE_SPELLINGS))
def test_scopes_are_spelled_as_each_version_documents(version: str) -> None:
    scopes = {s["sessionScope"] for s in busy(version).document()["perspective"]}
    assert scopes == SCOPE_SPELLINGS[version]


def test_authorized_arrives_in_81() -> None:
    assert all("authorized" not in s for s in busy("8.0.7").document()["perspective"])
    assert all("authorized" in s for s in busy("8.1.33").document()["perspective"])


def test_public_sessions_are_named_as_each_interface_names_them() -> None:
    sim = busy("8.3.6 (b2026042713)")
    assert UNAUTHENTICATED["webdev"] in {s["username"] for s in sim.perspective_objects()}
    names = {s["username"] for s in sim.rest_perspective_items()}
    assert UNAUTHENTICATED["rest"] in names and UNAUTHENTICATED["webdev"] not in names


async def get(http: aiohttp.ClientSession, url: str, **headers: str) -> aiohttp.ClientResponse:
    async with http.get(url, headers=headers, allow_redirects=False) as response:
        await response.read()
        return response


async def test_rest_items_have_exactly_the_captured_keys(aiohttp_server: ServerFactory) -> None:
    server = await aiohttp_server(simulator_app(busy("8.3.6 (b2026042713)"), shape="rest"))
    async with aiohttp.ClientSession() as http:
        pages = {}
        for kind, path in REST_PATHS.items():
            async with http.get(server.make_url(path), params={"limit": 5, "offset": 0}) as r:
                pages[kind] = await r.json()
    for kind, keys in (("perspective", REST_PERSPECTIVE_KEYS), ("vision", REST_VISION_KEYS),
                       ("designer", REST_DESIGNER_KEYS)):
        page = pages[kind]
        assert set(page) == {"items", "metadata"}
        assert len(page["items"]) == 5 and page["metadata"]["total"] > 5
        assert all(set(item) == keys for item in page["items"]), kind


async def test_the_whole_list_when_limit_is_absent(aiohttp_server: ServerFactory) -> None:
    sim = busy("8.3.6 (b2026042713)")
    server = await aiohttp_server(simulator_app(sim, shape="rest"))
    async with aiohttp.ClientSession() as http, \
            http.get(server.make_url(REST_PATHS["perspective"])) as response:
        page = await response.json()
    assert len(page["items"]) == page["metadata"]["total"] == 200


async def test_a_missing_module_is_a_json_404(aiohttp_server: ServerFactory) -> None:
    sim = busy("8.3.6 (b2026042713)", vision_module=False)
    server = await aiohttp_server(simulator_app(sim, shape="rest"))
    async with aiohttp.ClientSession() as http, \
            http.get(server.make_url(REST_PATHS["vision"])) as response:
        assert response.status == 404
        assert "No route match for path" in (await response.json())["message"]


async def test_api_keys_in_either_header(aiohttp_server: ServerFactory) -> None:
    server = await aiohttp_server(simulator_app(busy("8.3.6 (b2026042713)"), shape="rest",
                                                token=KEY))
    url = str(server.make_url(GATEWAY_INFO_PATH))
    secret = KEY.split(":", 1)[1]
    async with aiohttp.ClientSession() as http:
        legacy = await get(http, url, **{"X-Ignition-API-Token": KEY})
        bearer = await get(http, url, Authorization=f"Bearer {KEY}")
        alone = await get(http, url, **{"X-Ignition-API-Token": secret})
        nothing = await get(http, url)
    assert (legacy.status, bearer.status, alone.status, nothing.status) == (200, 200, 401, 401)
    assert alone.content_type == "text/html"  # Jetty's page, not JSON


async def test_an_uncommissioned_gateway_redirects_everything(
        aiohttp_server: ServerFactory) -> None:
    server = await aiohttp_server(simulator_app(busy("8.3.6 (b2026042713)",
                                                     commissioned=False)))
    async with aiohttp.ClientSession() as http:
        for path in (*REST_PATHS.values(), WEBDEV_PATH, GATEWAY_INFO_PATH):
            response = await get(http, str(server.make_url(path)))
            assert (response.status, response.headers["Location"]) == (302, "/welcome")
        assert (await get(http, str(server.make_url("/welcome")))).status == 200


@pytest.mark.parametrize(("shape", "served", "absent"), [
    ("rest", GATEWAY_INFO_PATH, WEBDEV_PATH), ("webdev", WEBDEV_PATH, GATEWAY_INFO_PATH)])
async def test_one_shape_alone(aiohttp_server: ServerFactory, shape: str, served: str,
                               absent: str) -> None:
    server = await aiohttp_server(simulator_app(busy("8.3.6 (b2026042713)"), shape=shape))
    async with aiohttp.ClientSession() as http:
        assert (await get(http, str(server.make_url(served)))).status == 200
        assert (await get(http, str(server.make_url(absent)))).status == 404


def test_an_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        simulator_app(busy("8.3.6 (b2026042713)"), shape="soap")


def test_a_rest_stand_in_refuses_a_key_without_its_name() -> None:
    """Served alone, the REST shape says so at once rather than answer every request 401."""
    with pytest.raises(ValueError, match="<name>:<secret>"):
        simulator_app(busy("8.3.6 (b2026042713)"), shape="rest", token="s3cret")


async def test_a_malformed_page_request_is_a_400_page(aiohttp_server: ServerFactory) -> None:
    server = await aiohttp_server(simulator_app(busy("8.3.6 (b2026042713)"), shape="rest"))
    async with aiohttp.ClientSession() as http:
        response = await get(http, str(server.make_url(REST_PATHS["vision"])) + "?limit=ten")
    assert (response.status, response.content_type) == (400, "text/html")
