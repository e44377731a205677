"""Tokens, passwords and keys never show up in logs, error messages, `/` or `/sessions`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
import yaml

from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app
from tests.conftest import FakeClock, ServerFactory
from tests.processes import ExporterProcess, basic_auth

SECRETS = {
    "webdev_token": "wdv-TOKEN-4f1c2a9e77",
    "rest_key": "exporter:rest-KEY-8b3d0c6f12",
    "wrong_token": "wrong-TOKEN-1a2b3c4d5e",
    "metrics_password": "metrics-PASS-a8e1f0",
    "wrong_password": "wrong-PASS-77c2e9",
    "sessions_password": "sessions-PASS-5d4c3b",
    "hash_key": "hash-KEY-0f9e8d7c6b",
}


async def test_no_secret_leaks_anywhere(tmp_path: Path, aiohttp_server: ServerFactory) -> None:
    s = SECRETS
    good = await aiohttp_server(simulator_app(GatewaySimulator(clock=FakeClock()),
                                              token=s["webdev_token"]))
    rest = await aiohttp_server(simulator_app(GatewaySimulator(clock=FakeClock()),
                                              token=s["rest_key"]))
    (tmp_path / "token").write_text(s["webdev_token"])
    (tmp_path / "key").write_text(s["hash_key"])
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "poll_interval": "1s",
        "username_label": "hash", "username_hash_key_file": str(tmp_path / "key"),
        "sessions_basic_auth_users": {"auditor": bcrypt.hashpw(
            s["sessions_password"].encode(), bcrypt.gensalt(4)).decode()},
        "gateways": [
            {"name": "webdev", "url": str(good.make_url(WEBDEV_PATH)),
             "token_file": str(tmp_path / "token")},
            {"name": "rest", "url": str(rest.make_url("/")), "source": "rest",
             "token_env": "REST_KEY"},
            {"name": "refused", "url": str(good.make_url(WEBDEV_PATH)),
             "token_env": "WRONG_TOKEN"},
        ]}))
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": bcrypt.hashpw(
        s["metrics_password"].encode(), bcrypt.gensalt(4)).decode()}}))
    env = {"REST_KEY": s["rest_key"], "WRONG_TOKEN": s["wrong_token"]}
    process = ExporterProcess(tmp_path, "--config", str(config), "--web.config.file", str(web),
                              "--log-level", "debug", env=env,
                              headers=basic_auth("prometheus", s["metrics_password"]))
    async with process as exporter:
        text = await exporter.wait_for_metric('ignition_up{gateway="rest"} 1.0')
        await exporter.wait_for_count("ignition_exporter_poll_errors_total", "refused:auth", 1)
        seen = [text]
        for path, headers in [
                ("/", None), ("/metrics", basic_auth("prometheus", s["wrong_password"])),
                ("/sessions", basic_auth("auditor", s["sessions_password"])),
                ("/sessions", basic_auth("auditor", s["wrong_password"])),
                ("/sessions?username=(", basic_auth("auditor", s["sessions_password"]))]:
            _, body = await exporter.get(path, **({"headers": headers} if headers else {}))
            seen.append(body.decode(errors="replace"))
        assert '"perspective"' in seen[3]
        assert await exporter.stop() == 0
    check = subprocess.run([sys.executable, "-m", "exporter", "--config", str(config),
                            "--web.config.file", str(web), "--check-config"],
                           capture_output=True, text=True, timeout=60, env=process.env)
    seen += [exporter.log.read_text(), check.stdout, check.stderr]
    everything = "\n".join(seen)
    assert 'reason=auth' in everything  # the failures were logged ...
    for name, secret in SECRETS.items():
        assert secret not in everything, f"{name} leaked"  # ... without their secrets
