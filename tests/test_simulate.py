"""`ignition-exporter simulate`: a standalone simulated gateway that the exporter, run as
its own process with the configuration the simulator prints, polls."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from exporter.cli import main, parse_arguments
from exporter.config import build_config
from exporter.standins import simulate
from exporter.standins.simulator import (
    PERSPECTIVE_DURATIONS,
    PLANT_USERS,
    REST_PATHS,
    USER_SESSIONS_ALERT_THRESHOLD,
    WEBDEV_PATH,
)
from exporter.web.server import running_site
from tests.conftest import FakeClock
from tests.metrics import total
from tests.processes import ExporterProcess

RULES = Path(__file__).resolve().parent.parent / "rules" / "ignition.rules.yml"


def printed_config(log: Path) -> dict[str, object]:
    text = log.read_text()
    start = text.index("# ignition-exporter configuration")
    lines = []
    for line in text[start:].splitlines():
        if line.startswith("ts="):
            break
        lines.append(line)
    return dict(yaml.safe_load("\n".join(lines)))


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "token", "path"), [
    ("webdev", "s3cret", WEBDEV_PATH),
    ("rest", "exporter:s3cret", REST_PATHS["perspective"]),  # an 8.3 key is NAME:SECRET
])
async def test_exporter_polls_the_standalone_simulator(tmp_path: Path, shape: str, token: str,
                                                       path: str) -> None:
    async with ExporterProcess(tmp_path, "simulate", "--shape", shape, "--token", token,
                               "--sessions", "12", "--clients", "3", name="simulator") as sim:
        status, _ = await sim.get(path)
        assert status == 401  # the token is required
        config = printed_config(sim.log)
        (gateway,) = config["gateways"]  # type: ignore[misc]
        assert gateway["token_env"] == "SIMULATOR_TOKEN"
        assert gateway.get("source", "webdev") == shape
        config_file = tmp_path / "config.yml"
        config_file.write_text(yaml.safe_dump({"poll_interval": "1s", **config}))
        async with ExporterProcess(tmp_path, "--config", str(config_file),
                                   env={"SIMULATOR_TOKEN": token}) as exporter:
            text = await exporter.wait_for_metric('ignition_up{gateway="simulated"} 1.0')
            assert 8 <= total(text, "ignition_perspective_sessions") <= 16
            assert total(text, "ignition_client_sessions") >= 1
            # the REST API is 8.3's: a simulated REST gateway must not report an older version
            assert ('version="8.3.' in text) == (shape == "rest")
            assert await exporter.stop() == 0
        assert await sim.stop() == 0
    assert re.search(r"msg=listening address=http://127\.0\.0\.1:\d+ simulated_gateway="
                     + shape, sim.log.read_text())


@pytest.mark.parametrize("argv", [["--shape", "rest"], ["--config", "c.yml", "--sessions", "5"],
                                  ["rules", "--token", "x"]])
def test_simulator_options_belong_to_simulate(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "is an option of the simulate command" in capsys.readouterr().err


def test_a_rest_token_must_be_an_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--shape", "rest", "--token", "s3cret"])
    assert exit_.value.code == 2
    assert "NAME:SECRET" in capsys.readouterr().err


def test_negative_sizes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--sessions", "-1"])
    assert "--sessions must not be negative" in capsys.readouterr().err


def held(argv: list[str], steps: int = 200) -> tuple[int, set[str], list[int]]:
    """`simulate`'s plant with these options, over `steps` of 5 s: the most Perspective
    sessions one user held, every username seen, and the sessions held at each step."""
    clock = FakeClock()
    simulator = simulate.simulator(parse_arguments(["simulate", *argv]), clock)
    most, names, sizes = 0, set(), []
    for _ in range(steps):
        counts = Counter(simulator.iter_usernames())
        most = max(most, *counts.values())
        names |= set(counts)
        sizes.append(sum(counts.values()))
        clock.advance(5.0)
        simulator.advance()
    return most, names, sizes


def test_the_threshold_kept_below_is_the_shipped_rules_one() -> None:
    thresholds = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
                  for rule in group["rules"] if rule.get("record") == "ignition:alert_threshold"
                  and rule["labels"]["alert"] == "IgnitionUserTooManySessions"]
    assert [rule["expr"] for rule in thresholds] == [f"vector({USER_SESSIONS_ALERT_THRESHOLD})"]


@pytest.mark.parametrize(("argv", "users"), [([], len(PLANT_USERS)), (["--sessions", "200"], 50)])
def test_without_users_nobody_holds_more_sessions_than_the_alert_allows(
        argv: list[str], users: int, caplog: pytest.LogCaptureFixture) -> None:
    """Its eight plant users used to hold five sessions each on average, some more, so the
    shipped rules raised IgnitionUserTooManySessions on a newcomer's first `simulate`. For
    more sessions than its 16 users hold at four each, it simulates more users (and says so)."""
    most, names, sizes = held(argv)
    sessions = int(argv[-1]) if argv else 40
    assert most == 4 < USER_SESSIONS_ALERT_THRESHOLD
    assert len(names) == users and set(PLANT_USERS) <= names
    assert max(sizes) == sessions and min(sizes) >= sessions * 0.9, "--sessions served"
    caplog.set_level(logging.INFO, logger="exporter.simulate")
    simulate.announce(parse_arguments(["simulate", *argv]))
    said = [(r.levelname, r.getMessage(), getattr(r, "users", None)) for r in caplog.records]
    assert said == ([] if users == len(PLANT_USERS) else [
        ("INFO", "the plant's users are too few for --sessions at 4 a user: more users "
                 "simulated", 50)])


@pytest.mark.parametrize(("argv", "most", "warned"), [
    (["--users", "50", "--sessions", "200"], 4, False),
    (["--users", "40", "--sessions", "200"], 5, False),   # five each: not more than five
    (["--users", "10", "--sessions", "200"], 20, True),
])
def test_users_given_share_the_sessions_and_a_warning_says_the_alert_will_fire(
        argv: list[str], most: int, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    """`--users` and `--sessions` are both served as asked: too few users for the sessions at
    four each share them evenly, and when that is more than the alert allows, the start says
    that the shipped rules will raise it."""
    held_most, _, sizes = held(argv)
    assert held_most == most and max(sizes) == 200
    simulate.announce(parse_arguments(["simulate", *argv]))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == (
        ["each user holds more sessions than IgnitionUserTooManySessions allows: the shipped "
         "rules will raise it"] if warned else [])
    if warned:
        fields = {key: getattr(warnings[0], key) for key in ("sessions_per_user",
                                                              "users_for_no_alert")}
        assert fields == {"sessions_per_user": 20, "users_for_no_alert": 50}


def test_users_given_are_every_username_served() -> None:
    """`--users 10 --sessions 200` showed 17 usernames, one holding 11 sessions: Designer-scope
    Perspective sessions (and Vision clients and Designers) went to the plant's own users.
    Every session now draws from the N users asked for, and each holds its even share."""
    clock = FakeClock()
    argv = ["simulate", "--users", "10", "--sessions", "200", "--clients", "12"]
    simulator = simulate.simulator(parse_arguments(argv), clock)
    asked = {f"user{i:06d}" for i in range(10)}
    perspective, clients, scopes = Counter(), set(), set()
    for _ in range(200):
        clock.advance(5.0)
        simulator.advance()
        perspective |= Counter(simulator.iter_usernames())  # the most each held at once
        clients |= {row["username"] for row in simulator.client_rows()}
        scopes |= {s["sessionScope"].lower() for s in simulator.perspective_objects()}
    assert "designer" in scopes and clients
    assert set(perspective) == asked and clients <= asked
    assert set(perspective.values()) == {20}


def test_simulate_help_lists_only_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --help` printed the whole exporter's help, --config and --check-config
    among it, although simulate has no use for them."""
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ignition-exporter simulate ")
    for option in ("--shape", "--token", "--sessions", "--clients", "--users",
                   "--web.listen-address", "--log.level", "--log.format"):
        assert option in out
    for option in ("--config", "--check-config", "--demo", "--web.config.file",
                   "--web.max-connections", "--web.enable-lifecycle"):
        assert option not in out


@pytest.mark.parametrize("argv", [
    ["simulate", "--config", "c.yml"], ["simulate", "--check-config"], ["--demo", "simulate"],
    ["simulate", "--sessions", "5", "--web.config.file", "web.yml"],
    ["simulate", "--web.enable-lifecycle"], ["simulate", "--web.max-connections", "100"],
    ["simulate", "--web.max-connections-per-address", "100"]])
def test_exporter_options_are_refused_by_simulate(argv: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """They used to be ignored without a word: `simulate --config c.yml --check-config` served
    a simulated gateway instead of checking c.yml."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    given = next(arg for arg in argv if arg.startswith("--") and arg not in ("--sessions",))
    assert (f"ignition-exporter simulate: error: {given} is an option of the exporter, not of "
            "simulate") in capsys.readouterr().err


def test_simulate_takes_its_options_and_the_shared_ones_anywhere() -> None:
    args = parse_arguments(["--log.level", "debug", "simulate", "--shape", "rest",
                            "--listen", "127.0.0.1:9000", "--sessions", "7"])
    assert (args.command, args.log_level, args.shape, args.listen, args.sessions) == (
        "simulate", "debug", "rest", ("127.0.0.1", 9000), 7)
    assert parse_arguments(["--config", "c.yml", "--check-config"]).config == "c.yml"


def default_threshold(alert: str) -> float:
    """The shipped rules' default threshold of `alert` (its `ignition:alert_threshold`)."""
    (rule,) = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
               for rule in group["rules"] if rule.get("record") == "ignition:alert_threshold"
               and rule["labels"] == {"alert": alert, "default": "true"}]
    return float(re.fullmatch(r"vector\((\d+)\)", rule["expr"]).group(1))


def test_the_readme_example_opens_no_session_older_than_the_age_alert_allows() -> None:
    """The README's example, `simulate --shape webdev --token s3cret --sessions 200`, is
    followed by "the shipped rules raise no alert on it: a first look must not page anyone
    about sample data". Run against it, a real Prometheus with the shipped rules had
    IgnitionSessionsOpenTooLong pending at the first evaluation (a session of about 8 days,
    open when the simulator started), which fires after its `for: 1h`. Over that first hour
    no Perspective session may be older than the alert's default age threshold."""
    limit_ms = 1000 * default_threshold("IgnitionSessionsOpenTooLong")
    clock = FakeClock()
    argv = ["simulate", "--shape", "webdev", "--token", "s3cret", "--sessions", "200"]
    simulator = simulate.simulator(parse_arguments(argv), clock)
    oldest = 0
    for _ in range(61):  # the first hour, a poll a minute
        oldest = max(oldest, *(s["uptime"] for s in simulator.perspective_objects()))
        clock.advance(60.0)
        simulator.advance()
    assert oldest <= limit_ms, f"a session {oldest / 86_400_000:.1f} days old"
    # And later: a session's age never exceeds its length, and none lasts that long.
    assert max(longest for _, _, longest in PERSPECTIVE_DURATIONS) * 1000 < limit_ms


async def test_the_configuration_printed_for_an_ipv6_address_is_one_the_exporter_takes() -> None:
    """`simulate --web.listen-address [::1]:8088` printed `url: http://::1:8088/system/...`
    (and logged `address=http://::1:8088`): a URL without the brackets IPv6 needs, which the
    exporter then refused ("Port could not be cast to integer value as ':1:8088'")."""
    args = parse_arguments(["simulate", "--web.listen-address", "[::1]:0"])
    async with running_site(simulate.build(args), "::1", 0) as address:
        printed = simulate.exporter_config(address, args)
    config = build_config(yaml.safe_load(printed), {})
    assert config.gateways[0].url.startswith("http://[::1]:"), printed
