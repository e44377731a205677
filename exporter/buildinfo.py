"""What this build is, for `ignition_exporter_build_info`: version, commit, Python version.

A wheel carries the commit it was built from in `exporter/REVISION` (written by setup.py at
build time). A source checkout run in place has no stamp, so git is asked once; anything
else (no git, not a checkout) is "unknown", as Prometheus' own builds say.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

from exporter import __version__

UNKNOWN = "unknown"
_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def revision() -> str:
    stamp = _PACKAGE / "REVISION"
    if stamp.is_file():
        return stamp.read_text(encoding="utf-8").strip() or UNKNOWN
    checkout = _PACKAGE.parent
    if not (checkout / ".git").exists():
        return UNKNOWN
    try:
        result = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return result.stdout.strip() or UNKNOWN


def labels() -> dict[str, str]:
    """The build_info labels. `pythonversion` follows Go exporters' `goversion`."""
    return {"version": __version__, "revision": revision(),
            "pythonversion": platform.python_version()}
