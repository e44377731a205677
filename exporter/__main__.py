"""`python -m exporter` and the `ignition-exporter` command.

SIGHUP is the reload signal, but its default action kills: it is ignored here, before the
slower imports, so one that arrives while the exporter starts cannot end it.
"""

import signal
import sys


def run() -> int:
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from exporter.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
