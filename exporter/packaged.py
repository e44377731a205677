"""Files that ship inside the package so any install has them: the gateway-side WebDev script,
the Prometheus rules, the Grafana dashboard, the alerts' runbook and the example of a site's
thresholds (`ignition-exporter webdev-script`, `rules`, `dashboard`, `runbook`,
`site-thresholds` print them).

In a wheel they sit in the package (pyproject.toml maps `ignition/`, `rules/` and
`dashboards/` to `exporter/ignition/`, `exporter/rules/` and `exporter/dashboards/`); in a
source checkout they are in those folders beside the package.
"""

from __future__ import annotations

from pathlib import Path

import yaml

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`exporter/NAME/` when installed from a wheel, else the checkout's `NAME/`."""
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def rule_files() -> list[Path]:
    """The rule files Prometheus loads; their promtool unit tests (`*.test.yml`) are not."""
    return sorted(p for p in data_dir("rules").glob("*.yml") if not p.name.endswith(".test.yml"))


def dashboard_files() -> list[Path]:
    return sorted(data_dir("dashboards").glob("*.json"))


class _Literal(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as YAML block scalars, as people write them."""


_Literal.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def rules_text() -> str:
    """One rule file for Prometheus' `rule_files`: the file as shipped when there is one, or
    every file's groups in one document when there are several."""
    files = rule_files()
    if len(files) == 1:
        return files[0].read_text(encoding="utf-8")
    groups = [group for path in files
              for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})["groups"]]
    sources = ", ".join(path.name for path in files)
    return (f"# The Ignition exporter's Prometheus rules, merged from {sources}.\n"
            + yaml.dump({"groups": groups}, Dumper=_Literal, sort_keys=False, width=100,
                        allow_unicode=True))


def runbook_text() -> str:
    """The runbook every alert's `runbook_url` points into (`docs/runbook.md#<alert>`)."""
    return (data_dir("docs") / "runbook.md").read_text(encoding="utf-8")


def site_thresholds_text() -> str:
    """The example of a site's own thresholds, for a site to copy and edit."""
    return (data_dir("rules") / "examples" / "site-thresholds.yml").read_text(encoding="utf-8")


def dashboard_text() -> str:
    """The Grafana dashboard's JSON, ready for import or provisioning."""
    files = dashboard_files()
    if len(files) != 1:
        names = ", ".join(path.name for path in files) or "none"
        raise LookupError(f"expected one dashboard, found: {names}")
    return files[0].read_text(encoding="utf-8")
