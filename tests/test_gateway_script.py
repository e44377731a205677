"""The gateway-side WebDev script, run for real in Jython 2.7 against a stand-in `system`
of Ignition 8.x and one of Ignition 7.9, and checked to be Jython 2.5 syntax (7.9's Jython).

Its JSON output is fed to the exporter's own WebDev decoder, so the two sides cannot drift
apart: what the script writes is exactly what the exporter reads.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from exporter.config import GatewayConfig
from exporter.digest.aggregate import aggregate
from exporter.sources.http import auth_headers
from exporter.sources.webdev import decode_webdev
from tests.conftest import require_tool
from tests.payloads import perspective, vision

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ignition" / "session_exporter.py"
HARNESS = Path(__file__).resolve().parent / "jython"

SESSIONS = [
    perspective("p1", "jsmith", "Line1", "browser", active_pages=2, total=5000),
    perspective("p2", "Unauthenticated", "Line1", "ios", last_comm=90_000, authorized=False),
    perspective("p3", "maría.lópez", "QA Lab", "designer", recent=0),
]
OLD_SESSIONS = [  # 8.0: no `authorized`, lower-case scopes; one object lacks pageIds
    {k: v for k, v in perspective("o1", "op", "Line1", "browser").items() if k != "authorized"},
    {k: v for k, v in perspective("o2", "op", "Line1", "ios").items()
     if k not in ("authorized", "pageIds")},
]
ROWS = [vision("operator1", "Line1"), vision("eng", "Line1", designer=True, client_id="AB12")]

SCENARIOS: dict[str, dict[str, Any]] = {
    "full": {"perspective": SESSIONS, "vision": ROWS, "systemName": "Ignition-plant-a"},
    "java_types": {"perspective": SESSIONS, "vision": ROWS, "systemName": "Ignition-plant-a",
                   "javaTypes": "narrow"},  # Integer and java.lang.String values too
    "ignition_79": {"ignition": "7.9", "vision": ROWS, "systemName": "Ignition-plant-79"},
    "ignition_79_vision_fails": {"ignition": "7.9", "vision": "java-error",
                                 "systemName": "java-error"},
    "ignition_79_token": {"ignition": "7.9", "vision": ROWS, "token": "s3cret-Token",
                          "headers": {"Authorization": "Bearer s3cret-Tokem"}},
    "old_version": {"perspective": OLD_SESSIONS, "vision": [], "version": "8.0.7"},
    "no_perspective": {"perspective": "missing", "vision": ROWS},
    "perspective_fails": {"perspective": "error", "vision": ROWS},
    "vision_fails": {"perspective": SESSIONS, "vision": "error"},
    "perspective_java_exception": {"perspective": "java-error", "vision": ROWS,
                                   "systemName": "java-error"},
    "vision_java_exception": {"perspective": SESSIONS, "vision": "java-error"},
    "token_ok": {"perspective": SESSIONS, "vision": ROWS, "token": "s3cret-Token",
                 "headers": {"Authorization": "Bearer s3cret-Token"}},
    "token_missing": {"perspective": SESSIONS, "vision": ROWS, "token": "s3cret-Token"},
    "token_wrong": {"perspective": SESSIONS, "vision": ROWS, "token": "s3cret-Token",
                    "headers": {"Authorization": "Bearer s3cret-Tokem"}},
    "token_prefix": {"perspective": SESSIONS, "vision": ROWS, "token": "s3cret-Token",
                     "headers": {"Authorization": "Bearer s3cret"}},
    # The right token in another header, as the exporter would send it with a token_header
    # (which the configuration therefore refuses on a WebDev gateway).
    "token_other_header": {"perspective": SESSIONS, "vision": ROWS, "token": "s3cret-Token",
                           "headers": auth_headers(GatewayConfig(
                               "a", "http://a", token="s3cret-Token",
                               token_header="X-Ignition-API-Token"))},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    jython = require_tool("jython")
    spec = tmp_path_factory.mktemp("jython") / "scenarios.json"
    spec.write_text(json.dumps(SCENARIOS))
    run = subprocess.run([jython, str(HARNESS / "run_scenarios.py"), str(SCRIPT), str(spec)],
                         capture_output=True, cwd=HARNESS, timeout=120)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return dict(json.loads(run.stdout))


def decoded(result: dict[str, Any]) -> Any:
    assert result["status"] == 200
    return decode_webdev(json.dumps(result["json"]).encode(), "plant-a")


def test_full_document_reads_back_exactly(results: dict[str, dict[str, Any]]) -> None:
    result = results["full"]
    assert result["keys"] == ["json"]
    doc = result["json"]
    assert doc["schema"] == 1
    assert doc["gateway"] == {"name": "Ignition-plant-a", "version": "8.1.33 (b2023091211)"}
    assert doc["perspective"] == SESSIONS
    assert doc["vision"] == ROWS
    assert isinstance(doc["collectedAt"], int) and doc["collectedAt"] > 1_700_000_000_000
    assert doc["warnings"] == ["TOKEN is empty in the session_exporter script: anyone who can "
                               "reach this URL can read usernames and client addresses"]


def test_exporter_metrics_from_script_output(results: dict[str, dict[str, Any]]) -> None:
    snapshot = decoded(results["full"])
    assert snapshot.invalid_sessions == 0
    numbers = aggregate(snapshot, idle_after_seconds=60)
    assert numbers.perspective_sessions == {
        ("Line1", "browser", "jsmith"): 1, ("Line1", "ios", "Unauthenticated"): 1,
        ("QA Lab", "designer", "maría.lópez"): 1}
    assert numbers.scopes[("Line1", "ios")].idle_sessions == 1
    assert numbers.scopes[("Line1", "browser")].active_pages == 2
    assert numbers.client_sessions == {("Line1", "operator1", "vision"): 1,
                                       ("Line1", "eng", "designer"): 1}
    assert snapshot.reported_name == "Ignition-plant-a"


def test_absent_keys_stay_absent(results: dict[str, dict[str, Any]]) -> None:
    doc = results["old_version"]["json"]
    assert doc["perspective"] == OLD_SESSIONS
    assert "pageIds" not in doc["perspective"][1]
    numbers = aggregate(decoded(results["old_version"]), 60)
    assert numbers.perspective_sessions == {("Line1", "browser", "op"): 1,
                                            ("Line1", "ios", "op"): 1}


@pytest.mark.parametrize(("scenario", "warning", "perspective_count", "vision_count"), [
    ("no_perspective", "Perspective module not installed: no Perspective sessions", 0, 2),
    ("perspective_fails", "Perspective sessions could not be read: Perspective module is "
                          "faulted", 0, 2),
    ("vision_fails", "Vision clients and Designers could not be read: Vision module is "
                     "faulted", 3, 0),
    ("perspective_java_exception", "Perspective sessions could not be read: "
     "java.lang.IllegalStateException: Perspective module is faulted", 0, 2),
    ("vision_java_exception", "Vision clients and Designers could not be read: "
     "java.lang.IllegalStateException: Vision module is faulted", 3, 0),
])
def test_one_module_failing_does_not_lose_the_other(
        results: dict[str, dict[str, Any]], scenario: str, warning: str,
        perspective_count: int, vision_count: int) -> None:
    doc = results[scenario]["json"]
    assert warning in doc["warnings"]
    snapshot = decoded(results[scenario])
    assert (len(snapshot.perspective), len(snapshot.clients)) == (perspective_count,
                                                                  vision_count)


def test_a_failing_tag_read_costs_only_the_name(results: dict[str, dict[str, Any]]) -> None:
    doc = results["perspective_java_exception"]["json"]
    assert doc["gateway"]["name"] is None and doc["gateway"]["version"]
    assert any(w.startswith("gateway name could not be read") for w in doc["warnings"])


def test_matching_token_serves_without_warning(results: dict[str, dict[str, Any]]) -> None:
    doc = results["token_ok"]["json"]
    assert len(doc["perspective"]) == 3
    assert doc["warnings"] == []


@pytest.mark.parametrize("scenario", ["token_missing", "token_wrong", "token_prefix",
                                      "token_other_header"])
def test_missing_or_wrong_token_is_401_without_data(results: dict[str, dict[str, Any]],
                                                    scenario: str) -> None:
    assert results[scenario]["status"] == 401
    assert results[scenario]["json"] == {
        "error": "unauthorized: send Authorization: Bearer <TOKEN>"}


def test_java_typed_values_come_out_as_plain_json(results: dict[str, dict[str, Any]]) -> None:
    """Integer, Long, Double, Boolean, java.lang.String and Date values: the same document as
    from Python values, numbers as numbers and text as text."""
    doc = results["java_types"]["json"]
    assert doc["perspective"] == SESSIONS
    assert doc["vision"] == ROWS
    first = doc["perspective"][0]
    assert type(first["activePages"]) is int and type(first["authorized"]) is bool
    assert type(first["username"]) is str and first["pageIds"] == ["/", "/"]
    assert doc["gateway"]["name"] == "Ignition-plant-a"


def test_ignition_79_serves_vision_and_warns_about_perspective(
        results: dict[str, dict[str, Any]]) -> None:
    doc = results["ignition_79"]["json"]
    assert doc["gateway"] == {"name": "Ignition-plant-79", "version": "7.9.21 (b2022092908)"}
    assert doc["perspective"] == []
    assert "Perspective module not installed: no Perspective sessions" in doc["warnings"]
    assert doc["vision"] == ROWS
    numbers = aggregate(decoded(results["ignition_79"]), 60)
    assert numbers.client_sessions == {("Line1", "operator1", "vision"): 1,
                                       ("Line1", "eng", "designer"): 1}


def test_ignition_79_failures_are_warnings(results: dict[str, dict[str, Any]]) -> None:
    doc = results["ignition_79_vision_fails"]["json"]
    assert results["ignition_79_vision_fails"]["status"] == 200
    assert "Vision clients and Designers could not be read: java.lang.IllegalStateException: "\
           "Vision module is faulted" in doc["warnings"]
    assert any(w.startswith("gateway name could not be read") for w in doc["warnings"])


def test_ignition_79_wrong_token_is_401(results: dict[str, dict[str, Any]]) -> None:
    assert results["ignition_79_token"]["status"] == 401


def vermin_says(path: Path) -> subprocess.CompletedProcess[str]:
    vermin = require_tool("vermin")
    return subprocess.run([vermin, "--target=2.5-", "--violations", "--no-tips",
                           "--no-parse-comments", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_script_is_jython_25_syntax_for_vermin() -> None:
    run = vermin_says(SCRIPT)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("construct", [
    "x = {1, 2}\n", "x = {k: 1 for k in 'ab'}\n", "x = '{}'.format(1)\n",
    "x = b'bytes'\n", "from collections import OrderedDict\n"])
def test_vermin_catches_26_constructs(tmp_path: Path, construct: str) -> None:
    """The check above can fail: each of these is a SyntaxError in Jython 2.5."""
    bad = tmp_path / "bad.py"
    bad.write_text(construct)
    assert vermin_says(bad).returncode != 0


def beyond_vermin(source: str) -> list[int]:
    """Lines Jython 2.5 rejects that vermin 1.9 accepts: `except X as e` (2.6+), and `with`
    (2.5 only after `from __future__ import with_statement`, which vermin assumes)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if (isinstance(node, ast.ExceptHandler) and node.name is not None)
            or isinstance(node, ast.With)]


def test_script_binds_no_exception_names_and_has_no_with() -> None:
    assert beyond_vermin(SCRIPT.read_text()) == []
    assert beyond_vermin("try:\n    pass\nexcept ValueError as e:\n    pass\n") == [3]
    assert beyond_vermin("x = 1\nwith open('f') as f:\n    pass\n") == [2]
