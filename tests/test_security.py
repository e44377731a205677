"""TLS, basic auth and client certificates, end to end: the real exporter process and a real
Prometheus scraping it with the matching scrape_config."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml

from tests.certs import Pki, make_pki
from tests.processes import ExporterProcess, PrometheusServer, basic_auth

PASSWORD = "Scrape-Pa55word!"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def client_context(pki: Pki, with_cert: bool = False, ca: Path | None = None
                   ) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or pki.ca))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def web_config(tmp_path: Path, name: str, document: dict[str, object]) -> str:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


async def test_prometheus_scrapes_over_tls_with_basic_auth_and_client_certs(
        tmp_path: Path, pki: Pki) -> None:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    basic_config = web_config(tmp_path, "basic", {
        "tls_server_config": tls, "basic_auth_users": {"prometheus": HASH},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}}})
    mtls_config = web_config(tmp_path, "mtls", {"tls_server_config": {
        **tls, "client_ca_file": str(pki.ca), "client_auth_type": "RequireAndVerifyClientCert"}})
    basic_exporter = ExporterProcess(tmp_path, "--demo", "--web.config.file", basic_config,
                                     name="basic", client_ssl=client_context(pki),
                                     headers=basic_auth("prometheus", PASSWORD))
    mtls_exporter = ExporterProcess(tmp_path, "--demo", "--web.config.file", mtls_config,
                                    name="mtls", client_ssl=client_context(pki, True))
    async with basic_exporter, mtls_exporter:
        for exporter in (basic_exporter, mtls_exporter):
            assert exporter.url.startswith("https://127.0.0.1:")
            await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        jobs = [
            {"job_name": "basic", "scheme": "https",
             "basic_auth": {"username": "prometheus", "password": PASSWORD},
             "tls_config": {"ca_file": str(pki.ca)},
             "static_configs": [{"targets": [basic_exporter.url[8:]]}]},
            {"job_name": "mtls", "scheme": "https",
             "tls_config": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                            "key_file": str(pki.client_key)},
             "static_configs": [{"targets": [mtls_exporter.url[8:]]}]},
        ]
        async with PrometheusServer(tmp_path, jobs) as prometheus:
            for job in ("basic", "mtls"):
                result = await prometheus.wait_for_query(
                    f'ignition_up{{job="{job}", gateway="demo"}}')
                assert float(result[0]["value"][1]) == 1
            up = {r["metric"]["job"]: float(r["value"][1])
                  for r in await prometheus.query("up")}
            assert up == {"basic": 1, "mtls": 1}


async def test_what_is_refused(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, "web", {
        "tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                              "client_ca_file": str(pki.ca),
                              "client_auth_type": "VerifyClientCertIfGiven"},
        "basic_auth_users": {"prometheus": HASH},
        "http_server_config": {"headers": {"Strict-Transport-Security": "max-age=31536000"}}})
    trusted = client_context(pki)
    async with ExporterProcess(tmp_path, "--demo", "--web.config.file", config,
                               client_ssl=trusted) as exporter:
        async with aiohttp.ClientSession() as http:
            async with http.get(exporter.url + "/metrics", ssl=trusted) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Basic realm="ignition-exporter"'
                assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
            wrong = basic_auth("prometheus", "not-it")
            async with http.get(exporter.url + "/sessions", ssl=trusted, headers=wrong) as r:
                assert r.status == 401
            async with http.get(exporter.url + "/healthz", ssl=trusted) as response:
                assert response.status == 200  # probes cannot log in, and it reveals nothing
            right = basic_auth("prometheus", PASSWORD)
            async with http.get(exporter.url + "/metrics", ssl=trusted, headers=right) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(exporter.url + "/healthz",
                               ssl=client_context(pki, ca=pki.other_ca))
            with pytest.raises(aiohttp.ClientError):
                await http.get(exporter.url.replace("https://", "http://") + "/healthz")
        assert await exporter.stop() == 0


async def test_client_certificate_required(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, "web", {"tls_server_config": {
        "cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca), "client_auth_type": "RequireAndVerifyClientCert"}})
    async with ExporterProcess(tmp_path, "--demo", "--web.config.file", config,
                               client_ssl=client_context(pki, with_cert=True)) as exporter:
        status, _ = await exporter.get("/healthz")
        assert status == 200
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.get(exporter.url + "/healthz",
                                    ssl=client_context(pki)) as response:
                    await response.read()
