"""A minimal Debian root file system for the tests that install or containerise the exporter.

No container registry is reachable where the tests run, so the container base image and the
throwaway "fresh server" of the install test are both made with debootstrap from the Debian
mirror. That takes about a minute, so the result is kept in /var/tmp, keyed by a hash of the
recipe: a second run on the same machine reuses it, and changing the recipe makes a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
RECIPE = ("--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE)
CACHE = Path("/var/tmp/ignition-exporter-tests")
# The host's CA bundle: where PyPI is reached through a TLS-inspecting proxy, the fresh
# Debian's own bundle does not trust it. Copied in (or mounted) so pip works inside.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def require_root() -> None:
    """debootstrap, chroot and mounts need root: skip on a laptop, fail in CI."""
    if os.geteuid() == 0:
        return
    message = "needs root (debootstrap, chroot, mount namespaces)"
    if IN_CI:
        pytest.fail(f"{message}; CI runs as root")
    pytest.skip(message)


def recipe_key() -> str:
    """Short hash of everything that decides the root file system's content."""
    recipe = json.dumps([MIRROR, *RECIPE]).encode()
    return hashlib.sha256(recipe).hexdigest()[:12]


@contextmanager
def cache_lock() -> Iterator[None]:
    """One builder at a time: two test runs must not debootstrap into the same place."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debootstrap(target: Path) -> None:
    require_root()
    command = [require_tool("debootstrap"), *RECIPE, str(target), MIRROR]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def rootfs_tarball() -> Path:
    """The cached tarball of the Debian root file system, made first if missing."""
    tarball = CACHE / f"debian-{SUITE}-{recipe_key()}.tar"
    with cache_lock():
        if not tarball.exists():
            with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
                root = Path(scratch) / "root"
                debootstrap(root)
                partial = Path(scratch) / "rootfs.tar"
                subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial),
                                "."], check=True, timeout=600)
                shutil.move(partial, tarball)
    return tarball


def unpack_rootfs(target: Path) -> Path:
    """A private copy of the Debian root file system at TARGET, trusting the host's CAs."""
    target.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-xf", str(rootfs_tarball())],
                   check=True, timeout=600)
    shutil.copyfile(HOST_CA_BUNDLE, target / "etc/ssl/certs/ca-certificates.crt")
    return target


def base_image(podman: str) -> str:
    """A podman image of the Debian root file system, imported once per recipe."""
    name = f"localhost/ignition-exporter-test-base:{recipe_key()}"
    tarball = rootfs_tarball()
    with cache_lock():
        exists = subprocess.run([podman, "image", "exists", name], timeout=60)
        if exists.returncode != 0:
            result = subprocess.run([podman, "import", str(tarball), name],
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr
    return name
