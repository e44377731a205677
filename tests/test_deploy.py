"""What ships for running the exporter: Docker image, example stack, systemd unit, wheel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool
from tests.processes import ExporterProcess

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_json(instruction: str) -> list[str]:
    """The exec-form arguments of the last INSTRUCTION in the Dockerfile."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.startswith(instruction + " ")]
    return list(json.loads(lines[-1].split("CMD ", 1)[-1] if instruction == "HEALTHCHECK"
                           else lines[-1][len(instruction) + 1:]))


def test_hadolint_passes() -> None:
    result = subprocess.run([require_tool("hadolint"), str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_essentials() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", default.group(1))
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert bases and set(bases) == {"${BASE_IMAGE}"}
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 9871$", text, re.MULTILINE)
    assert "/healthz" in " ".join(dockerfile_json("HEALTHCHECK"))
    assert dockerfile_json("ENTRYPOINT")[0] == "ignition-exporter"
    assert dockerfile_json("CMD") == ["--config", "/etc/ignition-exporter/config.yml"]


async def test_container_command_line_runs_the_demo_and_passes_its_healthcheck(
        tmp_path: Path) -> None:
    """The image's ENTRYPOINT with `--demo` as the command, run without Docker."""
    entrypoint = dockerfile_json("ENTRYPOINT")
    async with ExporterProcess(tmp_path, *entrypoint[1:], "--demo") as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        port = exporter.url.rsplit(":", 1)[1]
        healthcheck = [a.replace("9871", port) for a in dockerfile_json("HEALTHCHECK")]
        assert healthcheck[0] == "python3"
        result = subprocess.run([sys.executable, *healthcheck[1:]], capture_output=True,
                                timeout=30)
        assert result.returncode == 0, result.stderr
        assert await exporter.stop() == 0


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def mounts(service: str) -> dict[str, str]:
    """Container path → host path (relative to deploy/) for a compose service."""
    out = {}
    for volume in compose()["services"][service].get("volumes", []):
        host, container = volume.split(":")[:2]
        out[container] = host
    return out


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """Checked in the layout the compose file gives it: rules mounted at rules/."""
    prometheus_mounts = mounts("prometheus")
    assert prometheus_mounts["/etc/prometheus/rules"] == "../rules"
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    result = subprocess.run([require_tool("promtool"), "check", "config",
                             str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_compose_pieces_fit_together() -> None:
    services = compose()["services"]
    assert set(services) == {"exporter", "prometheus", "grafana"}
    assert services["exporter"]["command"] == ["--demo"]
    assert "9871:9871" in services["exporter"]["ports"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["exporter:9871"]
    for image in (services["prometheus"]["image"], services["grafana"]["image"]):
        assert re.fullmatch(r"[\w/]+:v?\d+\.\d+\.\d+", image), f"{image} is not pinned"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    grafana_mounts = mounts("grafana")
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "ignition.yml").read_text())
    assert providers["apiVersion"] == 1
    path = providers["providers"][0]["options"]["path"]
    assert (DEPLOY / grafana_mounts[path] / "ignition-sessions.json").is_file()
    home = compose()["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/ignition-sessions.json"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze checks every directive; ExecStart gets this install's path."""
    analyze = require_tool("systemd-analyze")
    binary = require_tool("ignition-exporter")
    unit = (DEPLOY / "ignition-exporter.service").read_text()
    installed = "/opt/ignition-exporter/bin/ignition-exporter"
    assert f"ExecStart={installed} --config" in unit
    copy = tmp_path / "ignition-exporter.service"
    copy.write_text(unit.replace(installed, binary))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "ignition-exporter.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_virtualenv(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("ignition_exporter-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True,
                   timeout=600)
    exe = str(venv / "bin" / "ignition-exporter")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("ignition-exporter 0.")
    script = subprocess.run([exe, "webdev-script"], capture_output=True, text=True, timeout=60)
    assert (ROOT / "ignition" / "session_exporter.py").read_text() in script.stdout
    # The rules and the dashboard come with it, and nothing of their folders' scripts.
    rules = subprocess.run([exe, "rules"], capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0 and yaml.safe_load(rules.stdout)["groups"], rules.stderr
    dashboard = subprocess.run([exe, "dashboard"], capture_output=True, text=True, timeout=60)
    (shipped,) = (ROOT / "dashboards").glob("*.json")
    assert dashboard.returncode == 0 and dashboard.stdout == shipped.read_text()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.startswith(("exporter/rules/", "exporter/dashboards/"))
                and n.endswith(".py")], names
    # build_info's revision: the commit the wheel was built from, stamped at build time.
    git = shutil.which("git")
    head = subprocess.run([git, "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=30) if git else None
    revision = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "from exporter import buildinfo; print(buildinfo.revision())"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    expected = head.stdout.strip() if head and head.returncode == 0 else "unknown"
    assert revision.stdout.strip() == expected, revision.stderr
    config = tmp_path / "config.yml"
    config.write_text("gateways:\n  - {name: a, url: 'http://a'}\n")
    check = subprocess.run([exe, "--config", str(config), "--check-config"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def grafana_dashboard_folder() -> Path:
    """The host folder the compose stack mounts where Grafana's dashboard provider reads."""
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "ignition.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    return (DEPLOY / mounts("grafana")[path]).resolve()


def test_every_json_file_grafana_provisions_is_a_dashboard() -> None:
    """Grafana's file provider walks its folder, subfolders included, and loads every
    `.json` file as a dashboard; one without a title is logged as an error ("failed to load
    dashboard ... Dashboard title cannot be empty") at every scan. The stack mounts all of
    dashboards/, which holds the schema check's package.json, package-lock.json and
    tsconfig.json, and after `make test` its node_modules/ (some twenty JSON files more)."""
    folder = grafana_dashboard_folder()
    not_dashboards = []
    for path in sorted(folder.rglob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(document, dict) and document.get("title")):
            not_dashboards.append(str(path.relative_to(folder)))
    assert not_dashboards == [], "Grafana would try to load these as dashboards"


def test_the_stack_runs_the_grafana_the_readme_requires() -> None:
    """The README: "Import it in Grafana 11.6 or later" (the dashboard is schemaVersion 41,
    the SDK pinned to 11.6); the compose stack that provisions it must run such a Grafana."""
    readme = (ROOT / "README.md").read_text()
    required = re.search(r"Import it in Grafana (\d+)\.(\d+) or later", readme)
    assert required, "the README names the Grafana the dashboard needs"
    image = compose()["services"]["grafana"]["image"]
    running = re.fullmatch(r"grafana/grafana:v?(\d+)\.(\d+)\.\d+", image)
    assert running, image
    assert tuple(map(int, running.groups())) >= tuple(map(int, required.groups())), image
