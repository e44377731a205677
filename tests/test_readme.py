"""The README is the user's manual: what it tells a plant must match what the product does."""

from __future__ import annotations

from pathlib import Path

from tests.payloads import REST_PERSPECTIVE_KEYS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = README.index(f"\n{heading}\n")
    ends = [README.find(f"\n{'#' * depth} ", start + 1) for depth in range(1, len(level) + 1)]
    return README[start:min([end for end in ends if end != -1] or [len(README)])]


def test_the_rest_section_says_perspective_sessions_have_no_age_there() -> None:
    """The 8.3 REST API's Perspective items carry no `uptime` (reference captures; the
    simulator's REST shape neither), so from a `source: rest` gateway no Perspective session
    has an age or a duration: its age and duration histograms stay empty, the dashboard's
    "Oldest session age bucket" shows NaN for it and IgnitionSessionsOpenTooLong can never
    fire there. A site choosing between WebDev and REST must read that in the REST section,
    whose "What the exporter smooths over" lists the other differences."""
    assert "uptime" not in REST_PERSPECTIVE_KEYS  # the captured shape this rests on
    rest = section("### Ignition 8.3: the REST API (`source: rest`)")
    named = ("ignition_perspective_session_age_seconds",
             "ignition_perspective_session_duration_seconds", "IgnitionSessionsOpenTooLong")
    assert any(name in rest for name in named), (
        "the REST section does not say that Perspective session ages and durations are "
        "unavailable from the 8.3 API")


def test_the_service_section_says_how_the_unit_takes_a_web_configuration() -> None:
    """Security tells a plant to run `ignition-exporter --config config.yml
    --web.config.file web.yml` for TLS and basic auth, but the shipped unit's ExecStart and
    ExecStartPre name no web configuration and neither the unit nor the service section says
    how to add one: overriding ExecStart (which `systemctl edit` must first clear), doing the
    same for the ExecStartPre check, and making the key readable by the service's group."""
    service = section("### Debian and Ubuntu: a service")
    unit = (ROOT / "deploy" / "ignition-exporter.service").read_text(encoding="utf-8")
    assert "--web.config.file" in service or "--web.config.file" in unit, (
        "nothing says how the service is given --web.config.file")


def test_the_install_block_checks_the_configuration_as_the_service_will_read_it() -> None:
    """The install block ends with `sudo ignition-exporter ... --check-config`: run as root,
    which reads any file, it passes for a token file, hash key or certificate that only root
    may read, and the service (`User=ignition-exporter`) then fails its own
    `ExecStartPre` check at start with "cannot read the file: Permission denied"."""
    block = README.split("<!-- install: debian -->", 1)[1].split("```", 2)[1]
    (check,) = [line for line in block.splitlines() if "--check-config" in line]
    assert "-u ignition-exporter" in check or "runuser" in check or "setpriv" in check, check


def test_the_rest_section_says_the_age_histograms_are_there_at_zero() -> None:
    """The REST section says a `source: rest` gateway's age and duration histograms "stay
    empty" and the oldest-session panel "shows no value". Polled from `simulate --shape
    rest` (40 sessions open), the exporter exports them for every project and scope the
    gateway holds, every bucket and `_gcount` at 0, and Prometheus answers
    `sum by (gateway) (ignition_perspective_session_age_seconds_gcount)` with 0 for it and
    the panel's `histogram_quantile(1, …)` with NaN. A 0 that means "unknown" beside a
    WebDev gateway's 50 reads as "no session open"; the paragraph must say which it is."""
    rest = section("### Ignition 8.3: the REST API (`source: rest`)")
    paragraph = rest[rest.index("What it cannot smooth over"):]
    assert "stay empty" not in paragraph and "no value" not in paragraph, (
        "the REST section calls the age and duration histograms empty, where they are "
        "exported at 0 (and the oldest-session panel shows NaN)")


def test_the_install_check_says_what_it_does_with_a_token_env() -> None:
    """The install block ends with `--check-config` run as the service's user in the
    installer's shell. With a `token_env` gateway (the REST section's own example) that line
    exits 2: "the environment variable it names is not set, or empty, in the exporter's
    environment (under systemd: Environment= or EnvironmentFile=…)", and the tokens file it
    points to is only set up further down. The paragraph after the block says only that the
    variable "is not in this shell": not that the check fails there, nor how to run it with
    the file."""
    service = section("### Debian and Ubuntu: a service")
    after = service.split("<!-- install: debian -->", 1)[1].split("```", 2)[2]
    after = after[:after.index("Then start it")]
    (sentence,) = [s for s in after.split(". ") if "token_env" in s]
    assert any(word in sentence for word in ("fail", "exit", "tokens.env")), sentence
