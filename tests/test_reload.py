"""Configuration reload: the reloader itself, `POST /-/reload` in the app, and SIGHUP and the
lifecycle endpoint on the real process."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml

from exporter.config import Config, ConfigError, GatewayConfig, Problem, load_config
from exporter.reload import Reloader, ReloadStatus
from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from exporter.web.appkeys import FLEET, RELOADER
from exporter.web.http import create_app
from tests.certs import Pki, make_pki
from tests.conftest import ClientFactory, FakeClock, ServerFactory, eventually
from tests.metrics import values
from tests.processes import ExporterProcess, basic_auth, write_config

GOOD = Config(gateways=(GatewayConfig(name="a", url="http://a/sessions"),))
BAD = ConfigError([Problem("gateways[0].timeout", "invalid duration 'soon'")])


class Script:
    """A load that answers what the test sets, and an apply that records what it got."""

    def __init__(self) -> None:
        self.answer: Config | ConfigError = GOOD
        self.applied: list[Config] = []

    def load(self) -> Config:
        if isinstance(self.answer, ConfigError):
            raise self.answer
        return self.answer

    async def apply(self, config: Config) -> Mapping[str, object]:
        self.applied.append(config)
        return {"kept": 1}


async def test_a_refused_file_changes_nothing_but_the_status(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    script = Script()
    reloader = Reloader(script.load, script.apply, clock)
    assert reloader.status == ReloadStatus(True, clock.time())  # start-up counts as a load
    clock.advance(60)
    script.answer = BAD
    with pytest.raises(ConfigError), caplog.at_level(logging.INFO, "exporter.reload"):
        await reloader.reload()
    assert reloader.status == ReloadStatus(False, clock.time() - 60)
    assert script.applied == []
    (line,) = caplog.records
    assert line.levelname == "ERROR" and "refused" in line.getMessage()
    assert line.error == "gateways[0].timeout: invalid duration 'soon'"  # type: ignore[attr-defined]
    clock.advance(5)
    script.answer = GOOD
    await reloader.reload()
    assert reloader.status == ReloadStatus(True, clock.time())
    assert script.applied == [GOOD]


async def test_requests_from_a_signal_are_run_by_the_watcher(clock: FakeClock) -> None:
    script = Script()
    reloader = Reloader(script.load, script.apply, clock)
    watcher = asyncio.create_task(reloader.watch())
    try:
        reloader.request()
        reloader.request()  # two before the watcher ran: one reload reads the latest file
        await eventually(lambda: script.applied, what="the reload")
        script.answer = BAD
        reloader.request()
        await eventually(lambda: not reloader.status.successful, what="the refusal")
        assert not watcher.done()  # a refused file does not end the watcher
        assert len(script.applied) == 1
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


@pytest.fixture
async def gateway_url(aiohttp_server: ServerFactory) -> str:
    server = await aiohttp_server(simulator_app(GatewaySimulator(seed=2, clock=FakeClock())))
    return str(server.make_url(WEBDEV_PATH))


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_lifecycle_endpoint_answers_as_prometheus_does(
        aiohttp_client: ClientFactory, gateway_url: str, method: str) -> None:
    config = Config(gateways=(GatewayConfig(name="a", url=gateway_url),))
    disabled = await aiohttp_client(create_app(config))
    response = await disabled.request(method, "/-/reload")
    assert (response.status, await response.text()) == (403, "Lifecycle API is not enabled.")
    response = await disabled.get("/-/reload")
    assert (response.status, await response.text()) == (405,
                                                       "Only POST or PUT requests allowed")
    answers: list[Config | ConfigError] = [BAD, config]

    def load() -> Config:
        answer = answers.pop(0)
        if isinstance(answer, ConfigError):
            raise answer
        return answer

    enabled = await aiohttp_client(create_app(config, load=load, lifecycle=True))
    response = await enabled.request(method, "/-/reload")
    assert response.status == 500
    assert (await response.text()).startswith("failed to reload config: invalid configuration")
    assert not enabled.app[RELOADER].status.successful
    response = await enabled.request(method, "/-/reload")
    assert (response.status, await response.text()) == (200, "")
    assert enabled.app[RELOADER].status.successful


async def test_reload_applies_top_level_settings(aiohttp_client: ClientFactory,
                                                 gateway_url: str) -> None:
    gateways = (GatewayConfig(name="a", url=gateway_url, poll_interval=1, timeout=1),)
    configs = [Config(gateways=gateways, sessions_users={"auditor": b"$2b$04$" + b"x" * 53}),
               Config(gateways=gateways, sessions_endpoint=False)]  # popped from the end
    client = await aiohttp_client(create_app(Config(gateways=gateways), load=configs.pop,
                                             lifecycle=True))
    fleet = client.app[FLEET]
    await eventually(lambda: fleet.statuses()[0].up, what="first poll")
    assert (await client.get("/sessions")).status == 200
    poller = fleet.pollers[0]
    assert (await client.post("/-/reload")).status == 200
    assert fleet.pollers[0] is poller  # the gateway did not change
    assert (await client.get("/sessions")).status == 404
    assert (await client.post("/-/reload")).status == 200
    assert (await client.get("/sessions")).status == 401  # its own users now guard it
    assert (await client.get("/metrics")).status == 200  # and only it
    text = await (await client.get("/metrics")).text()
    assert values(text, "ignition_exporter_config_last_reload_successful") == {"": 1.0}


# What each configuration below adds to a running one of gateway `a` with a budget of 2.
REFUSED_RELOADS = {
    "budget": ("  - {name: b, url: URL}\n  - {name: c, url: URL}\n",
               "max_series_per_metric: 2 is fewer than the 3 gateways that share it"),
    "token_header": ("  - {name: b, url: URL, token_header: X-Token}\n",
                     "gateways[1].token_header: only a source: rest gateway sends the token "
                     "in another header"),
    "base 60": ("  - {name: b, url: URL, timeout: 1:00}\n",
                "config.yml:4:{column}: gateways[1].timeout: 1:00 is a base-60 number"),
    "not UTF-8": ("  - {name: Montr\xe9al, url: URL}\n",
                  "config.yml:4:17: not UTF-8: byte 0xE9 cannot be read; save the file as "
                  "UTF-8"),
}


@pytest.mark.parametrize("case", REFUSED_RELOADS)
async def test_a_reload_refuses_what_the_start_refuses(aiohttp_client: ClientFactory,
                                                      gateway_url: str, tmp_path: Path,
                                                      case: str) -> None:
    """The file is read and checked as at start: the running configuration stays, the
    reload answers why, and the next good file applies."""
    path = tmp_path / "config.yml"
    good = f"max_series_per_metric: 2\ngateways:\n  - {{name: a, url: '{gateway_url}'}}\n"
    path.write_text(good)
    running = load_config(path)
    client = await aiohttp_client(create_app(running, load=lambda: load_config(path),
                                             lifecycle=True))
    added, why = REFUSED_RELOADS[case]
    path.write_bytes((good + added.replace("URL", f"'{gateway_url}'")).encode("latin-1"))
    response = await client.post("/-/reload")
    assert response.status == 500
    column = len(f"  - {{name: b, url: '{gateway_url}', timeout: ") + 1
    assert why.format(column=column) in await response.text()
    assert client.app[FLEET].config is running
    assert not client.app[RELOADER].status.successful
    path.write_text(good.replace("2\n", "3\n"))
    assert (await client.post("/-/reload")).status == 200
    assert client.app[FLEET].config.max_series_per_metric == 3


# --- the real process ---------------------------------------------------------------------


def sighup_disposition(pid: int) -> str | None:
    """"SigIgn" or "SigCgt" once the process ignores or handles SIGHUP, else None (its
    default, which kills). Read from Linux' /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = dict(re.findall(r"^(SigIgn|SigCgt):\s*([0-9a-f]+)$", status, re.MULTILINE))
    bit = 1 << (signal.SIGHUP - 1)
    return next((name for name, mask in masks.items() if int(mask, 16) & bit), None)


def hangup(exporter: ExporterProcess) -> None:
    assert exporter.process is not None
    exporter.process.send_signal(signal.SIGHUP)


async def metric_values(exporter: ExporterProcess, name: str) -> dict[tuple[str, ...], float]:
    return values(await exporter.metrics_text(), name)


@pytest.mark.slow
async def test_sighup_reloads_a_good_file_and_refuses_a_bad_one(
        tmp_path: Path, gateway_url: str) -> None:
    dead = "http://127.0.0.1:1/sessions"
    config = write_config(tmp_path, [{"name": "kept", "url": dead},
                                     {"name": "removed", "url": gateway_url}])
    async with ExporterProcess(tmp_path, "--config", config) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="removed"} 1.0')
        await exporter.wait_for_count("ignition_exporter_poll_errors_total", "kept:connect", 2)
        write_config(tmp_path, [{"name": "kept", "url": dead},
                                {"name": "added", "url": gateway_url}])
        hangup(exporter)
        text = await exporter.wait_for_metric('ignition_up{gateway="added"} 1.0')
        assert 'gateway="removed"' not in text
        errors = values(text, "ignition_exporter_poll_errors_total")
        assert errors["kept:connect"] >= 2  # the kept gateway's counter carried on
        assert values(text, "ignition_exporter_config_last_reload_successful") == {"": 1.0}
        good_at = values(text, "ignition_exporter_config_last_reload_success_timestamp_seconds")

        (tmp_path / "config.yml").write_text("gateways: [{name: x, url: 'http://x', "
                                             "timeout: soon}]\n")
        hangup(exporter)
        text = await exporter.wait_for_metric(
            "ignition_exporter_config_last_reload_successful 0.0")
        assert values(text, "ignition_exporter_config_last_reload_success_timestamp_seconds") \
            == good_at
        assert 'ignition_up{gateway="added"} 1.0' in text  # the running config stays
        assert exporter.process is not None and exporter.process.poll() is None
        assert await exporter.stop() == 0
    log = exporter.log.read_text()
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "gateways[0].timeout: invalid duration" in refused[0]
    assert "msg=\"configuration reloaded\" kept=1 added=1 changed=0 removed=1" in log


@pytest.mark.slow
async def test_post_reload_only_with_the_lifecycle_flag(tmp_path: Path,
                                                        gateway_url: str) -> None:
    config = write_config(tmp_path, [{"name": "a", "url": gateway_url}])
    async with ExporterProcess(tmp_path, "--config", config, name="plain") as exporter, \
            aiohttp.ClientSession() as http:
        async with http.post(exporter.url + "/-/reload") as response:
            assert response.status == 403
            assert await response.text() == "Lifecycle API is not enabled."
        assert await exporter.stop() == 0
    async with ExporterProcess(tmp_path, "--config", config, "--web.enable-lifecycle",
                               name="lifecycle") as exporter, aiohttp.ClientSession() as http:
        write_config(tmp_path, [{"name": "a", "url": gateway_url},
                                {"name": "b", "url": gateway_url}])
        async with http.post(exporter.url + "/-/reload") as response:
            assert response.status == 200
        await exporter.wait_for_metric('ignition_up{gateway="b"} 1.0')
        (tmp_path / "config.yml").write_text("gateways: []\n")
        async with http.post(exporter.url + "/-/reload") as response:
            assert response.status == 500
            assert "gateways: expected a non-empty list" in await response.text()
        await exporter.wait_for_metric("ignition_exporter_config_last_reload_successful 0.0")
        assert await exporter.stop() == 0


@pytest.mark.slow
async def test_sighup_never_kills_the_process(tmp_path: Path, gateway_url: str) -> None:
    """From the moment the process ignores SIGHUP (the entry point's first lines), through
    start-up and while running, a storm of SIGHUPs costs nothing; during shutdown neither."""
    config = write_config(tmp_path, [{"name": "a", "url": gateway_url}])
    exporter = ExporterProcess(tmp_path, "--config", config)
    storm_sent = 0
    first_seen: list[str] = []

    async def storm() -> None:
        nonlocal storm_sent
        for _ in range(10_000):  # at most about 10 s
            process = exporter.process
            disposition = sighup_disposition(process.pid) if process else None
            if disposition:
                break
            await asyncio.sleep(0.001)
        else:
            pytest.fail("the process never ignored or handled SIGHUP")
        first_seen.append(disposition)
        assert process is not None
        while process.poll() is None and storm_sent < 400:
            process.send_signal(signal.SIGHUP)
            storm_sent += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(storm())
    async with exporter:
        await exporter.wait_for_metric('ignition_up{gateway="a"} 1.0')
        await task
        assert storm_sent == 400
        # Ignored first (the entry point's first lines), handled later (the reload handler):
        # no moment of start-up where the default action could kill it.
        assert first_seen == ["SigIgn"]
        assert exporter.process is not None
        exporter.process.send_signal(signal.SIGTERM)
        exporter.process.send_signal(signal.SIGHUP)  # during shutdown
        exporter.signalled = True
        assert await exporter.stop() == 0


@pytest.mark.slow
async def test_sighup_reloads_the_web_configuration(tmp_path: Path, gateway_url: str) -> None:
    """New certificate and users for new connections; a file that turns TLS off is refused."""
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")

    def write_web(pki: Pki, user: str, password: str, **more: object) -> None:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        (tmp_path / "web.yml").write_text(yaml.safe_dump({
            "tls_server_config": {"cert_file": str(pki.server_cert),
                                  "key_file": str(pki.server_key)},
            "basic_auth_users": {user: hashed}, **more}))

    def trusting(pki: Pki) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(pki.ca))

    write_web(old, "prometheus", "first")
    config = write_config(tmp_path, [{"name": "a", "url": gateway_url}])
    async with ExporterProcess(tmp_path, "--config", config, "--web.config.file",
                               str(tmp_path / "web.yml"), client_ssl=trusting(old),
                               headers=basic_auth("prometheus", "first")) as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="a"} 1.0')
        write_web(new, "scraper", "second",
                  http_server_config={"headers": {"X-Frame-Options": "DENY"}})
        hangup(exporter)
        exporter.client_ssl, exporter.headers = trusting(new), basic_auth("scraper", "second")
        for _ in range(200):  # until the reload has landed: at most about 10 s
            try:
                await exporter.get("/healthz")
                break
            except aiohttp.ClientConnectorCertificateError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the new certificate was never served")
        await exporter.wait_for_metric("ignition_exporter_config_last_reload_successful 1.0")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await exporter.get("/healthz", ssl=trusting(old))  # the old certificate is gone
        status, _ = await exporter.get("/metrics", headers=basic_auth("prometheus", "first"))
        assert status == 401
        async with aiohttp.ClientSession() as http, http.get(
                exporter.url + "/metrics", ssl=trusting(new), headers=exporter.headers) as r:
            assert r.status == 200 and r.headers["X-Frame-Options"] == "DENY"

        (tmp_path / "web.yml").write_text("basic_auth_users: {}\n")  # TLS off: refused
        hangup(exporter)
        text = await exporter.wait_for_metric(
            "ignition_exporter_config_last_reload_successful 0.0")
        assert 'ignition_up{gateway="a"} 1.0' in text  # still served, over TLS, as before
        assert await exporter.stop() == 0
    assert "TLS cannot be turned off by a reload" in exporter.log.read_text()


async def test_a_reload_reads_a_changed_token_file(aiohttp_client: ClientFactory,
                                                   aiohttp_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    """The runbook's fix for a poll failing `auth` after the gateway's token changed: write
    the new one into the token file and reload, no restart."""
    server = await aiohttp_server(simulator_app(GatewaySimulator(seed=2, clock=FakeClock()),
                                                token="s3cret-new"))
    token = tmp_path / "plant-a.token"
    token.write_text("s3cret-old\n")
    path = tmp_path / "config.yml"
    path.write_text(f"gateways:\n  - name: plant-a\n    url: {server.make_url(WEBDEV_PATH)}\n"
                    f"    token_file: {token}\n    poll_interval: 1s\n    timeout: 1s\n")
    client = await aiohttp_client(create_app(load_config(path), load=lambda: load_config(path),
                                             lifecycle=True))
    fleet = client.app[FLEET]
    await eventually(lambda: fleet.statuses()[0].error is not None, what="a failed poll")
    assert fleet.statuses()[0].error.reason.value == "auth"  # type: ignore[union-attr]
    token.write_text("s3cret-new\n")
    assert (await client.post("/-/reload")).status == 200
    await eventually(lambda: fleet.statuses()[0].up, what="a poll with the new token")
