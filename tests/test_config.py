from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import (
    ConfigError,
    build_config,
    load_config,
    parse_duration,
    parse_size,
)
from exporter.polling.workers import auto_processes, usable_cpus

GOOD = """
poll_interval: 15s
idle_after: 60s
stale_after: 60s
gateways:
  - name: plant-a
    url: https://gw-a:8043/system/webdev/monitoring/sessions
    source: webdev
    timeout: 5s
    token_env: PLANT_A_TOKEN
  - name: plant-b
    url: http://gw-b:8088
    source: rest
    poll_interval: 30
"""


def problems(document: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config(document, environ or {})
    return [str(p) for p in caught.value.problems]


def test_good_config_resolves_defaults_and_overrides() -> None:
    config = build_config(yaml.safe_load(GOOD), {"PLANT_A_TOKEN": " s3cret\n"})
    a, b = config.gateways
    assert (a.name, a.poll_interval, a.timeout, a.stale_after) == ("plant-a", 15, 5, 60)
    assert a.token == "s3cret"
    assert a.token_header == "Authorization"
    assert (b.poll_interval, b.timeout, b.stale_after) == (30, 10, 60)
    assert b.token_header == "X-Ignition-API-Token"
    assert config.idle_after == 60


def test_stale_after_defaults_to_four_poll_intervals() -> None:
    config = build_config({"poll_interval": "5s", "gateways": [{"name": "a", "url": "http://a"}]})
    assert config.gateways[0].stale_after == 20
    assert config.gateways[0].timeout == 5


def test_token_never_in_repr() -> None:
    config = build_config(yaml.safe_load(GOOD), {"PLANT_A_TOKEN": "s3cret"})
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("15s", 15), ("2m", 120), ("1m30s", 90), ("1h", 3600), (15, 15),
    ("15", 15), (0.25, 0.25), ("0.5", 0.5), ("1ms", 0.001), (" 15s ", 15),
    ("1y2w3d4h5m6s7ms", 365 * 86400 + 14 * 86400 + 3 * 86400 + 4 * 3600 + 5 * 60 + 6.007),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "15x", "s", "-5s", 0, True, "1.5.5s", [], "15s 2m", None,
    # Prometheus's grammar: units largest first, each at most once, whole numbers only.
    "1m1m", "30s1m", "1.5m", "1ms1s", "5ms5ms", "1h1d", "1M", "1e3", "0x10", "1_000s",
    "\u0661\u0665s", "\uff11\uff15", "1\u0665",  # digits, but not ASCII ones (nor Prometheus's)
])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("32MiB") == 32 * 2**20
    assert parse_size(1000) == 1000
    for bad in ("lots", "\u0663\u0662MiB"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize("value", [1, "1", "1KiB", 65535, "64KB"])
def test_a_max_response_size_too_small_to_be_useful_is_refused(value: object) -> None:
    """`1` passed, and no answer fitted: an empty one is a few hundred bytes."""
    found = problems({"gateways": [{"name": "a", "url": "http://a", "max_response_size": value}]})
    assert len(found) == 1 and found[0].startswith(
        f"gateways[0].max_response_size: expected at least 64KiB, got {value!r}: "), found


@pytest.mark.parametrize(("value", "size"), [("64KiB", 65536), (65536, 65536),
                                             ("1MB", 10**6), ("32MiB", 32 * 2**20)])
def test_a_max_response_size_from_64kib_is_taken(value: object, size: int) -> None:
    config = build_config({"gateways": [{"name": "a", "url": "http://a",
                                         "max_response_size": value}]}, {})
    assert config.gateways[0].max_response_bytes == size


def test_page_size_belongs_to_rest_gateways() -> None:
    """The WebDev resource answers in one document: a page_size there can never take effect,
    and most likely means `source: rest` was forgotten."""
    found = problems({"gateways": [
        {"name": "a", "url": "http://a", "page_size": 100},
        {"name": "b", "url": "http://b", "source": "webdev", "page_size": 100},
        {"name": "c", "url": "http://c", "source": "rest", "page_size": 100},
        {"name": "d", "url": "http://d", "source": "opc", "page_size": 100}]})
    assert found == [
        "gateways[3].source: expected one of webdev, rest, got 'opc'",
        "gateways[0].page_size: only a source: rest gateway reads pages (the WebDev resource "
        "answers in one document): remove it, or set source: rest",
        "gateways[1].page_size: only a source: rest gateway reads pages (the WebDev resource "
        "answers in one document): remove it, or set source: rest",
    ]


def test_token_header_belongs_to_rest_gateways() -> None:
    """The WebDev script checks `Authorization: Bearer <TOKEN>` alone: a token sent in
    another header failed every poll with 401, and the file said nothing."""
    found = problems({"gateways": [
        {"name": "plant-a", "url": "http://a", "token_header": "X-Token"},
        {"name": "plant-b", "url": "http://b", "source": "webdev",
         "token_header": "Authorization"},
        {"name": "plant-c", "url": "http://c", "source": "rest", "token_header": "X-Token"},
        {"url": "http://d", "token_header": "X-Token", "page_size": 10}]})
    why = ("only a source: rest gateway sends the token in another header (the WebDev script, "
           "session_exporter.py, reads only Authorization: Bearer, and would refuse every poll "
           "of {} with 401): remove it, or set source: rest")
    assert found == [
        "gateways[3].name: required key is missing",
        f"gateways[0].token_header: {why.format('plant-a')}",
        f"gateways[1].token_header: {why.format('plant-b')}",
        "gateways[3].page_size: only a source: rest gateway reads pages (the WebDev resource "
        "answers in one document): remove it, or set source: rest",
        f"gateways[3].token_header: {why.format('gateways[3]')}",
    ]


def test_every_problem_is_reported_with_its_location() -> None:
    found = problems({
        "poll_interval": "fast",
        "colour": "blue",
        "gateways": [
            {"name": "a", "url": "http://a", "timout": "5s"},
            {"url": "ftp://b", "source": "opc"},
        ],
    })
    assert "poll_interval: invalid duration 'fast': whole numbers with the units y, w, d, h, " \
        "m, s, ms, largest first and each at most once (500ms, 15s, 1m30s), or plain seconds" \
        in found
    assert any(p.startswith("colour: unknown key") for p in found)
    assert any(p.startswith("gateways[0].timout: unknown key") for p in found)
    assert "gateways[1].name: required key is missing" in found
    assert "gateways[1].source: expected one of webdev, rest, got 'opc'" in found


def test_cross_checks_name_the_key() -> None:
    found = problems({
        "poll_interval": "10s",
        "gateways": [
            {"name": "a", "url": "ftp://a", "timeout": "20s"},
            {"name": "a", "url": "http://b", "stale_after": "5s"},
            {"name": "c", "url": "http://c", "token_env": "MISSING_VAR"},
            {"name": "d", "url": "http://d", "token_file": "/nonexistent/token"},
            {"name": "e", "url": "http://e", "ca_file": "/nonexistent/ca.pem"},
        ],
    })
    assert "gateways[0].url: expected an http:// or https:// URL, got 'ftp://a'" in found
    assert any(p.startswith("gateways[0].timeout: 20s exceeds the poll interval") for p in found)
    assert any(p.startswith("gateways[1].stale_after: 5s is shorter") for p in found)
    assert "gateways[1].name: duplicate gateway name 'a' (also gateways[0])" in found
    assert any(p.startswith("gateways[2].token_env: the environment variable it names is not set")
               for p in found)
    assert any(p.startswith("gateways[3].token_file: cannot read the file") for p in found)
    assert "gateways[4].ca_file: no such file: /nonexistent/ca.pem" in found


@pytest.mark.parametrize(("document", "expected"), [
    (None, "(top level): the file is empty: it needs at least a `gateways:` list (see the "
           "README, Configuration)"),
    (["plant-a"], "(top level): expected a mapping, got list"),
    ({"gateways": []}, "gateways: expected a non-empty list of gateways"),
    ({"gateways": ["plant-a"]}, "gateways[0]: expected a mapping, got str"),
    ({"gateways": [{"name": "a", "url": "http://a", "tls_verify": "no"}]},
     "gateways[0].tls_verify: expected true or false, got str"),
    ({"gateways": [{"name": "a", "url": "http://a", "session_limit": -1}]},
     "gateways[0].session_limit: expected a positive whole number, got -1"),
    ({"gateways": [{"name": "a", "url": "http://a"}], "max_projects_per_gateway": 0},
     "max_projects_per_gateway: expected a whole number from 1 to 100000, got 0"),
])
def test_shape_errors(document: object, expected: str) -> None:
    assert expected in problems(document)


@pytest.mark.parametrize(("value", "written"), [(True, "true"), (None, "nothing"),
                                                 ("many", "'many'")])
def test_a_wrong_value_is_shown_as_the_yaml_that_gave_it(value: object, written: str) -> None:
    """An empty value and `true` read back as the user wrote them, not as Python's None and
    True."""
    assert f"max_projects_per_gateway: expected a whole number from 1 to 100000, got " \
           f"{written}" in \
        problems({"gateways": [{"name": "a", "url": "http://a"}],
                  "max_projects_per_gateway": value})


def test_max_projects_per_gateway_is_read_and_defaults_to_500() -> None:
    gateways = [{"name": "a", "url": "http://a"}]
    assert build_config({"gateways": gateways}).max_projects_per_gateway == 500
    assert build_config({"gateways": gateways, "max_projects_per_gateway": 7}
                        ).max_projects_per_gateway == 7
    assert build_config({"gateways": gateways, "max_projects_per_gateway": 100_000}
                        ).max_projects_per_gateway == 100_000


def test_numbers_past_their_bound_are_errors_at_their_key() -> None:
    """A typo of a few digits too many was taken at its word: 50,000,000 projects a gateway
    may show, 400 worker processes to start."""
    assert problems({"gateways": [{"name": "a", "url": "http://a"}],
                     "max_projects_per_gateway": 50_000_000, "digest_processes": 400}) == [
        "max_projects_per_gateway: expected a whole number from 1 to 100000, got 50000000",
        "digest_processes: expected auto or a whole number from 0 to 64, got 400"]
    assert problems({"gateways": [{"name": "a", "url": "http://a"}],
                     "max_projects_per_gateway": 100_001, "digest_processes": 65}) == [
        "max_projects_per_gateway: expected a whole number from 1 to 100000, got 100001",
        "digest_processes: expected auto or a whole number from 0 to 64, got 65"]


def test_token_file_is_read_and_tls_verify_false_warns(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    config = build_config({"gateways": [{"name": "a", "url": "https://a", "token_file":
                                         str(token), "tls_verify": False}]})
    assert config.gateways[0].token == "from-file"
    assert config.warnings == ("gateways[0].tls_verify is false: the gateway's certificate "
                               "is not checked",)


@pytest.mark.parametrize(("written", "keys"), [
    ({"tls_verify": True}, "tls_verify"), ({"tls_verify": False}, "tls_verify"),
    ({"ca_file": "CA"}, "ca_file"),
    ({"ca_file": "CA", "tls_verify": True}, "ca_file and tls_verify")])
def test_tls_settings_on_an_http_url_are_warned_about(tmp_path: Path, written: dict[str, Any],
                                                      keys: str) -> None:
    """They can never take effect there; the url most likely lacks its s."""
    (tmp_path / "ca.pem").write_text("")
    written = {k: str(tmp_path / "ca.pem") if v == "CA" else v for k, v in written.items()}
    config = build_config({"gateways": [{"name": "a", "url": "HTTP://a", **written}]})
    verb = "take" if " and " in keys else "takes"
    assert config.warnings[-1] == (f"gateways[0]: {keys} {verb} no effect on an http:// url, "
                                   "which uses no TLS; is the url meant to be https://?")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("gateways:\n  - name: a\n   url: x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value.problems[0]).startswith(f"{path}:3:")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config("/nonexistent/config.yml")


def test_privacy_settings(tmp_path: Path) -> None:
    key = tmp_path / "hash.key"
    key.write_text("k3y\n")
    config = build_config({"gateways": [{"name": "a", "url": "http://a"}],
                           "username_label": "hash", "username_hash_key_file": str(key),
                           "mask_addresses": True, "sessions_endpoint": False,
                           "sessions_basic_auth_users": {"auditor": "$2y$10$" + "a" * 53}})
    assert config.privacy.hash_key == b"k3y" and config.privacy.mask_addresses
    assert not config.sessions_endpoint
    assert config.sessions_users == {"auditor": ("$2y$10$" + "a" * 53).encode()}
    assert "k3y" not in repr(config)


def test_privacy_mistakes() -> None:
    found = problems({"gateways": [{"name": "a", "url": "http://a"}],
                      "username_label": "hash", "sessions_basic_auth_users": {"x": "secret"}})
    assert any(p.startswith("sessions_basic_auth_users.x: expected a bcrypt hash")
               for p in found)
    found = problems({"gateways": [{"name": "a", "url": "http://a"}], "username_label": "hash"})
    assert found == ["username_hash_key_file: username_label: hash needs a key "
                     "(username_hash_key_file or username_hash_key_env)"]
    assert "username_label: expected one of keep, hash, drop, got 'anonymise'" in problems(
        {"gateways": [{"name": "a", "url": "http://a"}], "username_label": "anonymise"})


@pytest.mark.parametrize("value", ["-5s", "-5", -5, 0, "0", "0s", "0ms", -0.5, ".inf"])
def test_every_non_positive_duration_gets_the_same_message(value: object) -> None:
    document = yaml.safe_load(f"gateways: [{{name: a, url: 'http://a', poll_interval: {value}}}]")
    found = problems(document)
    assert len(found) == 1 and found[0].startswith(
        "gateways[0].poll_interval: duration must be positive, got"), found


def test_stale_after_is_reported_where_it_was_written() -> None:
    found = problems({"poll_interval": "60s", "stale_after": "30s", "timeout": "20s",
                      "gateways": [{"name": "a", "url": "http://a"},
                                   {"name": "b", "url": "http://b", "poll_interval": "10s",
                                    "stale_after": "5s", "timeout": "5s"}]})
    assert found == [
        "stale_after: 30s is shorter than poll_interval + timeout of gateways[0] 'a' (60s + 20s): "
        "its data would go stale between two polls; use 80s or more",
        "gateways[1].stale_after: 5s is shorter than poll_interval + timeout (10s + 5s): data "
        "would go stale between two polls; use 15s or more",
    ]


@pytest.mark.parametrize(("timing", "shortest"), [
    ({"poll_interval": "2s"}, 4),                                   # timeout: the interval
    ({"poll_interval": "15s"}, 25),                                 # timeout: 10s
    ({"poll_interval": "15s", "timeout": "2s"}, 17),
    ({"poll_interval": "500ms", "timeout": "0.25"}, 0.75),
    ({"poll_interval": "0.2", "timeout": "0.1"}, 0.3),              # 0.1 + 0.2 > 0.3 in floats
])
def test_stale_after_covers_a_poll_interval_and_a_timeout(timing: dict[str, str],
                                                          shortest: float) -> None:
    """The data's age counts from when a poll finished, and the next one, started on
    schedule, may finish up to poll_interval + timeout after that: a `stale_after` equal to
    the poll interval passed, and a healthy gateway's series vanished from 2 scrapes in 300."""
    def gateway(stale_after: float) -> dict[str, object]:
        return {"gateways": [{"name": "a", "url": "http://a", **timing,
                              "stale_after": stale_after}]}

    assert build_config(gateway(shortest), {}).gateways[0].stale_after == shortest
    (found,) = problems(gateway(shortest * 0.9))
    assert found.startswith("gateways[0].stale_after: ") and found.endswith(
        f"data would go stale between two polls; use {shortest:g}s or more"), found


@pytest.mark.parametrize("interval", ["100ms", "1s", "2s", "15s", "30s", "1m", "1h"])
def test_the_default_stale_after_always_passes(interval: str) -> None:
    """Four poll intervals, and the timeout is at most one."""
    for timeout in ({}, {"timeout": interval}):
        config = build_config({"poll_interval": interval, "gateways": [
            {"name": "a", "url": "http://a", **timeout}]}, {})
        gateway = config.gateways[0]
        assert gateway.stale_after >= gateway.poll_interval + gateway.timeout


def test_a_top_level_value_names_every_gateway_it_fails_for() -> None:
    """Each gateway a top-level `timeout` or `stale_after` does not fit is named, one problem
    each at the key where the value was written, not only the first of them."""
    found = problems({"poll_interval": "60s", "timeout": "40s", "stale_after": "70s",
                      "gateways": [{"name": "a", "url": "http://a"},
                                   {"name": "b", "url": "http://b", "poll_interval": "30s"},
                                   {"name": "c", "url": "http://c"},
                                   {"name": "d", "url": "http://d", "poll_interval": "20s",
                                    "timeout": "5s"},
                                   {"name": "e", "url": "http://e", "poll_interval": "20s"}]})
    assert found == [
        "stale_after: 70s is shorter than poll_interval + timeout of gateways[0] 'a' (60s + 40s): "
        "its data would go stale between two polls; use 100s or more",
        "timeout: 40s exceeds the poll interval of gateways[1] 'b' (30s): polls would overlap",
        "stale_after: 70s is shorter than poll_interval + timeout of gateways[2] 'c' (60s + 40s): "
        "its data would go stale between two polls; use 100s or more",
        "timeout: 40s exceeds the poll interval of gateways[4] 'e' (20s): polls would overlap",
    ]


def test_a_wrong_source_hides_no_other_problem_of_its_gateway() -> None:
    found = problems({"gateways": [{"name": "a", "url": "ftp://a", "source": "opc",
                                    "token_env": "UNSET_VARIABLE", "timeout": "20s"}]})
    assert found == [
        "gateways[0].source: expected one of webdev, rest, got 'opc'",
        "gateways[0].url: expected an http:// or https:// URL, got 'ftp://a'",
        "gateways[0].timeout: 20s exceeds the poll interval 15s: polls would overlap",
        "gateways[0].token_env: the environment variable it names is not set, or empty, in "
        "the exporter's environment (under systemd: Environment= or EnvironmentFile=; in a "
        "container: -e)",
    ]


def test_a_rejected_value_is_not_cross_checked_again() -> None:
    """An invalid poll_interval must not also produce "timeout exceeds the default 15s"."""
    found = problems({"gateways": [{"name": "a", "url": "http://a", "poll_interval": "1m1m",
                                    "timeout": "20s"}, {"url": "http://b"}, {"url": "http://c"}]})
    assert [p.split(":")[0] for p in found] == [
        "gateways[0].poll_interval", "gateways[1].name", "gateways[2].name"]


@pytest.mark.parametrize(("url", "why"), [
    ("http://[::1/metrics", "Invalid IPv6 URL"),
    ("http://gw:99999/x", "Port out of range"),
    ("http://gw:port/x", "could not be cast to integer"),
    ("http://gw..plant/x", "label empty or too long"),
    ("http://" + "a" * 64 + "/x", "label too long"),
])
def test_a_url_that_cannot_be_requested_is_a_config_error(url: str, why: str) -> None:
    """Not a traceback from --check-config, and not a failure at the first poll."""
    found = problems({"gateways": [{"name": "a", "url": url}]})
    assert any(p.startswith("gateways[0].url: ") and why in p for p in found), found


def test_a_connect_timeout_beyond_the_timeout_is_reported_and_the_default_fits() -> None:
    found = problems({"gateways": [
        {"name": "a", "url": "http://a", "timeout": "2s", "connect_timeout": "3s"},
        {"name": "b", "url": "http://b", "timeout": "2s", "connect_timeout": "1s"}]})
    assert found == ["gateways[0].connect_timeout: 3s exceeds the timeout 2s, which bounds "
                     "the whole poll"]
    config = build_config({"gateways": [{"name": "c", "url": "http://c", "timeout": "2s"}]}, {})
    assert config.gateways[0].connect_timeout == 2


ONE_GATEWAY = {"gateways": [{"name": "a", "url": "http://a"}]}


def test_digest_processes_default_to_auto_and_take_a_number() -> None:
    assert build_config(ONE_GATEWAY).digest_processes == auto_processes(usable_cpus())
    assert build_config({**ONE_GATEWAY, "digest_processes": "auto"}).digest_processes \
        == auto_processes(usable_cpus())
    assert build_config({**ONE_GATEWAY, "digest_processes": 0}).digest_processes == 0
    one = build_config({**ONE_GATEWAY, "digest_processes": 1})
    assert (one.digest_processes, one.warnings) == (1, ())


@pytest.mark.parametrize(("value", "written"), [
    (-1, "-1"), ("2", "'2'"), ("all", "'all'"), (True, "true"), (1.5, "1.5"),
    (None, "nothing"), ([1], "[1]")])
def test_digest_processes_mistakes(value: object, written: str) -> None:
    assert problems({**ONE_GATEWAY, "digest_processes": value}) == [
        f"digest_processes: expected auto or a whole number from 0 to 64, got {written}"]


def test_more_digest_processes_than_cores_are_warned_about() -> None:
    cores = usable_cpus()
    config = build_config({**ONE_GATEWAY, "digest_processes": cores + 1})
    assert config.digest_processes == cores + 1
    assert config.warnings == (f"digest_processes is {cores + 1}, but this process may use "
                               f"{cores} core(s): the worker processes will share them",)
    # Up to the bound, more than the cores is a warning, not an error.
    if cores < 64:
        assert build_config({**ONE_GATEWAY, "digest_processes": 64}).warnings == (
            f"digest_processes is 64, but this process may use {cores} core(s): the worker "
            "processes will share them",)


def test_a_series_budget_below_the_number_of_gateways_is_an_error() -> None:
    """The budget is shared, a share is whole series, and a gateway not polled yet gets an
    equal one: with fewer series than gateways that is none. Each share used to be floored at
    one series, so the limits summed above the budget."""
    gateways = [{"name": f"g{i}", "url": f"http://g{i}"} for i in range(5)]
    assert problems({"gateways": gateways, "max_series_per_metric": 3}) == [
        "max_series_per_metric: 3 is fewer than the 5 gateways that share it: each needs at "
        "least one series of each capped metric, and an equal share (each gateway's until its "
        "first poll) would be none; set max_series_per_metric to 5 or more"]
    assert build_config({"gateways": gateways, "max_series_per_metric": 5}
                        ).max_series_per_metric == 5


def test_more_gateways_than_the_default_series_budget_say_where_to_raise_it() -> None:
    """A default is never a problem's location: the problem is the gateways' number."""
    gateways = [{"name": f"g{i}", "url": f"http://g{i}"} for i in range(10_001)]
    [found] = problems({"gateways": gateways})
    assert found.startswith("gateways: 10001 gateways are more than the default "
                            "max_series_per_metric (10000) can be shared among: ")
    assert found.endswith("set max_series_per_metric to 10001 or more")


def test_a_rejected_series_budget_is_not_compared_with_the_gateways() -> None:
    assert problems({"gateways": [{"name": "a", "url": "http://a"}],
                     "max_series_per_metric": 0}) == [
        "max_series_per_metric: expected a positive whole number, got 0"]


def test_a_gateways_key_at_the_top_level_says_where_it_belongs() -> None:
    """`token_file:` (or `url:`, `source:`) written above `gateways:` is a key of each
    gateway; the message only said `unknown key` and listed the top-level keys, none of
    which is it, without saying it goes under the gateway."""
    found = problems({"token_file": "/etc/ignition-exporter/plant-a.token",
                      "gateways": [{"name": "a", "url": "http://a"}]})
    assert len(found) == 1 and found[0].startswith("token_file: "), found
    assert "gateways[" in found[0] or "each gateway" in found[0], found


def test_a_token_key_names_the_two_ways_to_give_a_token() -> None:
    """`token: s3cret` is the most natural guess at how to give a gateway its token; it got
    `unknown key` with no suggestion, where `token_file` and `token_env` are meant."""
    [found] = problems({"gateways": [{"name": "a", "url": "http://a", "token": "s3cret"}]})
    assert "token_file" in found.split("(allowed:")[0], found
    assert "token_env" in found.split("(allowed:")[0], found


@pytest.mark.parametrize("pasted", ["Kx9_pQ-2vLm8sT4wYz", "plant-b:3f9a1c7e5d2b"])
def test_a_secret_pasted_as_token_env_is_not_repeated(pasted: str) -> None:
    """`token_env: <the key itself>` is a usual first mistake (token_env names a variable).
    The message repeated the value, `environment variable plant-b:3f9a… is not set or
    empty`, so the secret reached stderr and, through the unit's ExecStartPre check, the
    journal; tokens never appear in error messages. A value that cannot be a variable's name
    is neither shown nor looked up, and the message says what token_env takes."""
    found = problems({"gateways": [{"name": "a", "url": "http://a", "token_env": pasted}]})
    assert len(found) == 1 and found[0].startswith("gateways[0].token_env: "), found
    assert pasted not in found[0], found
    assert "token_file" in found[0], found


def test_many_gateways_with_problems_are_checked_without_hanging() -> None:
    """Each cross-check asked whether its value had a problem already by a pass over every
    problem found: 5,000 gateways each lacking a url took 40 s, 20,000 would take ten
    minutes, holding a start, `--check-config` or a reload's thread. They take under a
    second; the bound here only tells a hang from that."""
    program = ("from exporter.config import build_config, ConfigError\n"
               "try: build_config({'gateways': [{'name': f'g{i}'} for i in range(20_000)]}, {})\n"
               "except ConfigError as e: print(len(e.problems))\n")
    try:
        done = subprocess.run([sys.executable, "-c", program], timeout=60, capture_output=True,
                              text=True, cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired:
        pytest.fail("checking 20,000 gateways that lack a url hangs")
    assert done.stdout == "20001\n", done.stderr[-2000:]

def test_a_name_yaml_reads_as_a_boolean_is_told_to_be_quoted(tmp_path: Path) -> None:
    """`name: on` (or `no`, `off`, `yes`: the words YAML 1.1 reads as booleans and YAML 1.2
    as text) was refused with "expected a string, got bool", which shows neither what was
    written nor what to do, where the README's rule for such values is a message that says
    to quote it, as the one for `name: 10:30` does."""
    path = tmp_path / "config.yml"
    path.write_text("gateways:\n  - name: on\n    url: https://gw-a:8043\n    source: rest\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.endswith("gateways[0].name: expected a string, got bool (YAML reads yes, on "
                            "and true unquoted as true): quote it, as in 'on'"), problem


def test_a_relative_token_file_is_read_beside_the_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README puts token files "next to the config"; written as `token_file:
    plant-a.token`, the file was looked for in the directory the exporter started in, so the
    check passed in a shell in /etc/ignition-exporter and the service (started in `/`) failed
    with "cannot read the file". Prometheus reads its configuration's relative paths from the
    file's folder."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "plant-a.token").write_text("s3cret\n")
    path = folder / "config.yml"
    path.write_text("gateways:\n  - name: plant-a\n    url: https://gw-a:8043/system/webdev/"
                    "monitoring/sessions\n    token_file: plant-a.token\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(path).gateways[0].token == "s3cret"


def test_every_relative_file_path_is_read_beside_the_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ca_file` and `username_hash_key_file` too: the gateway's client is given the path
    read beside the file, not one it would look for later from wherever it runs."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "plant-ca.pem").write_text("a CA\n")
    (folder / "username.key").write_text("k3y\n")
    path = folder / "config.yml"
    path.write_text("username_label: hash\nusername_hash_key_file: username.key\n"
                    "gateways:\n  - {name: a, url: 'https://a', ca_file: plant-ca.pem}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/config.yml")  # named relative to where the exporter started
    assert config.gateways[0].ca_file == str(folder / "plant-ca.pem")  # absolute: the same
    assert config.privacy.hash_key == b"k3y"                          # file from anywhere


def test_a_secrets_file_not_found_names_the_folder_it_was_looked_for_in(
        tmp_path: Path) -> None:
    """The folder is named, the value is not: written under `token_file` may be the token
    itself (`token:` gets "did you mean token_file or token_env?"), and the error reaches
    the journal through the unit's check. The line and column say what is written."""
    path = tmp_path / "config.yml"
    path.write_text("gateways:\n  - name: a\n    url: https://a\n"
                    "    token_file: wdv-TOKEN-4f1c2a9e77\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (found,) = map(str, caught.value.problems)
    assert found == (f"{path}:4:5: gateways[0].token_file: cannot read the file: No such file "
                     f"or directory (a relative path is read from the configuration's folder, "
                     f"{tmp_path})"), found


def test_one_tls_setting_on_an_http_url_is_warned_about_in_the_singular(
        tmp_path: Path) -> None:
    """`ca_file` alone on an `http://` url logged "gateways[0]: ca_file take no effect on an
    http:// url": one key takes no effect, two take none."""
    (tmp_path / "ca.pem").write_text("")
    config = build_config({"gateways": [{"name": "a", "url": "http://a",
                                         "ca_file": str(tmp_path / "ca.pem")}]})
    assert config.warnings[-1].startswith("gateways[0]: ca_file takes no effect on an http:// "
                                          "url"), config.warnings
