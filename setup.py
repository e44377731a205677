"""Stamps the git commit a wheel is built from into the package (`exporter/REVISION`), so
`ignition_exporter_build_info{revision}` names it wherever the wheel is installed, and keeps
the rules' and dashboards' folders data only. Everything else is in pyproject.toml.

The commit is `$IGNITION_EXPORTER_REVISION` when set (an image built from a context without
`.git`), else `git rev-parse HEAD` of the source tree, else "unknown". A source tree that is
run in place (an editable install) asks git at run time instead (`exporter/buildinfo.py`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
STAMP = Path("exporter") / "REVISION"


def source_revision() -> str:
    given = os.environ.get("IGNITION_EXPORTER_REVISION", "").strip()
    if given:
        return given
    stamped = HERE / STAMP  # building a wheel from an sdist that carries the stamp
    if stamped.is_file():
        return stamped.read_text().strip() or "unknown"
    try:
        result = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


# Folders shipped for their data only (rules, dashboards, the runbook), not their scripts.
DATA_ONLY = {"exporter.rules", "exporter.dashboards", "exporter.docs"}


class BuildPyWithRevision(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        if package in DATA_ONLY:
            return []
        return list(super().find_package_modules(package, package_dir))

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / STAMP
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source_revision() + "\n")


class SdistWithRevision(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        (Path(base_dir) / STAMP).write_text(source_revision() + "\n")


setup(cmdclass={"build_py": BuildPyWithRevision, "sdist": SdistWithRevision})
