"""Prometheus exporter for Inductive Automation Ignition gateway sessions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ignition-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
