"""The Docker image, built from the Dockerfile and run, without Docker or a registry.

The base image is the Dockerfile's `BASE_IMAGE` build argument; no registry is reachable here,
so the test gives it a debootstrap'd Debian with python3 (tests/debian.py), the same family as
the default `python:*-slim-bookworm`. buildah builds in docker format (the OCI format has no
HEALTHCHECK and would drop it), podman runs with runc (crun cannot set rlimits in this
sandbox), publishing on loopback only.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.debian import HOST_CA_BUNDLE, base_image, require_root
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(*command: str, timeout: float = 120) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


def build(buildah: str, base: str, tag: str) -> None:
    """`buildah bud` in docker format; pip inside trusts the host's CAs (see tests/debian.py)."""
    run(buildah, "bud", "--format", "docker", "--isolation", "chroot", "--network", "host",
        "--layers=false", "--force-rm", "--build-arg", f"BASE_IMAGE={base}",
        "-v", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
        "-t", tag, str(ROOT), timeout=900)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    buildah, podman = require_tool("buildah"), require_tool("podman")
    require_tool("runc")
    require_root()
    base = base_image(podman)
    tag = f"localhost/ignition-exporter-test:{uuid.uuid4().hex[:12]}"
    build(buildah, base, tag)
    try:
        yield tag
    finally:
        subprocess.run([podman, "rmi", "--force", tag], capture_output=True, timeout=120)


@pytest.fixture
def container(image: str) -> Iterator[tuple[str, int]]:
    """The image run with `--demo`, its port 9871 published on 127.0.0.1 only."""
    podman = require_tool("podman")
    name, port = f"ignition-exporter-test-{uuid.uuid4().hex[:12]}", free_port()
    run(podman, "--runtime", "runc", "run", "--detach", "--name", name,
        "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
        "--publish", f"127.0.0.1:{port}:9871", image, "--demo")
    try:
        yield name, port
    finally:
        subprocess.run([podman, "--runtime", "runc", "rm", "--force", "--time", "0", name],
                       capture_output=True, timeout=120)


def fetch(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def wait_for_metric(port: int, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = fetch(port, "/metrics")[1]
        except OSError:
            text = ""
        if needle in text:
            return text
        time.sleep(0.25)
    pytest.fail(f"{needle!r} never appeared on /metrics; last answer:\n{text[-2000:]}")


def test_image_keeps_its_healthcheck(image: str) -> None:
    podman = require_tool("podman")
    healthcheck = run(podman, "image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                      image)
    assert "/healthz" in healthcheck


def test_image_serves_metrics_as_non_root_and_stops_cleanly_on_sigterm(
        container: tuple[str, int]) -> None:
    podman = require_tool("podman")
    name, port = container
    metrics = wait_for_metric(port, 'ignition_up{gateway="demo"} 1.0')
    assert "ignition_perspective_sessions{" in metrics
    assert fetch(port, "/healthz")[0] == 200
    run(podman, "--runtime", "runc", "healthcheck", "run", name)
    status = run(podman, "--runtime", "runc", "exec", name, "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4
    run(podman, "--runtime", "runc", "stop", "--time", "20", name, timeout=60)
    state = run(podman, "inspect", "--format", "{{.State.ExitCode}} {{.State.Status}}", name)
    assert state.split() == ["0", "exited"]
