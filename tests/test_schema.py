"""The strict YAML reader both configuration files use: repeated keys, empty files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import load_config, parse_duration
from exporter.schema import (
    MAX_CONFIG_BYTES,
    MAX_PROBLEMS,
    MAX_UNDECODABLE_BYTES,
    ConfigError,
    Reader,
    file_field,
    folder_of,
    load_yaml,
)
from exporter.web.webconfig import load_web_config


def problems_in(path: Path, text: str, load: object = load_yaml) -> list[str]:
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)  # type: ignore[operator]
    return [str(p) for p in caught.value.problems]


def test_a_key_repeated_in_a_gateway_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - name: plant-a
    url: http://a
    name: plant-b
""", load_config)
    assert found == [f"{path}:4:5: gateways[0].name: key written twice, on lines 2 and 4: "
                     "keep one"]


@pytest.mark.parametrize(("first", "second"), [
    ("null", "~"), ("yes", "on"), ("true", "1"), ("no", "0"), ("1", "0x1"), ("1", "1.0")])
def test_keys_written_apart_that_build_one_key_are_written_twice(
        tmp_path: Path, first: str, second: str) -> None:
    """The mapping built keeps only the second: `null:` and `~:` are both None, and a dict
    takes True and 1 for one key."""
    path = tmp_path / "c.yml"
    found = problems_in(path, f"{first}: 1\n{second}: 2\n")
    assert found == [f"{path}:2:1: {second}: key written twice, on lines 1 and 2: keep one"]


@pytest.mark.parametrize(("first", "second"), [("'null'", "null"), ("'1'", "1"), ("1", "2")])
def test_keys_that_build_different_keys_are_not_written_twice(
        tmp_path: Path, first: str, second: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(f"{first}: 1\n{second}: 2\n")
    assert len(load_yaml(path)) == 2  # type: ignore[arg-type]


def test_repeated_keys_at_every_depth_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
poll_interval: 15s
sessions_basic_auth_users:
  auditor: $2y$10$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  auditor: $2y$10$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
gateways:
  - name: a
    url: http://a
  - {name: b, url: http://b, url: http://c}
poll_interval: 30s
""")
    assert found == [
        f"{path}:4:3: sessions_basic_auth_users.auditor: key written twice, on lines 3 and 4: "
        "keep one",
        f"{path}:8:30: gateways[1].url: key written twice, on line 8: keep one",
        f"{path}:9:1: poll_interval: key written twice, on lines 1 and 9: keep one",
    ]


def test_the_web_configuration_is_read_as_strictly(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    found = problems_in(path, """\
basic_auth_users:
  prometheus: $2y$10$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Frame-Options: sameorigin
""", load_web_config)
    assert found == [f"{path}:6:5: http_server_config.headers.X-Frame-Options: key written "
                     "twice, on lines 5 and 6: keep one"]


def test_a_repeated_key_hides_no_other_problem(tmp_path: Path) -> None:
    """Keys written twice are reported with every other problem of the file, not alone: the
    others used to appear only once the repeat was fixed."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
poll_interval: 15s
gateways:
  - name: plant-a
    url: ftp://a
    name: plant-b
    colour: red
poll_interval: 1m1m
""", load_config)
    assert [p.removeprefix(f"{path}:").split(": ")[0] for p in found] == [
        "4:5", "5:5", "6:5", "7:1", "7:1"], found
    assert found[1] == f"{path}:5:5: gateways[0].name: key written twice, on lines 3 and 5: " \
                       "keep one"
    assert found[3] == f"{path}:7:1: poll_interval: key written twice, on lines 1 and 7: keep one"
    # placed at the value kept, the last
    assert found[4].startswith(f"{path}:7:1: poll_interval: invalid duration '1m1m'")


def test_a_repeated_key_in_a_web_configuration_hides_no_other_problem(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    found = problems_in(path, """\
basic_auth_users:
  prometheus: secret
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Frame-Options: sameorigin
""", load_web_config)
    assert [p.removeprefix(f"{path}:").split(": ")[1] for p in found] == [
        "basic_auth_users.prometheus", "http_server_config.headers.X-Frame-Options"], found


def test_a_configuration_with_a_repeated_key_alone_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - {name: a, url: http://a}
gateways:
  - {name: b, url: http://b}
""", load_config)
    assert found == [f"{path}:3:1: gateways: key written twice, on lines 1 and 3: keep one"]


def test_anchors_aliases_and_merge_keys_are_not_repeats(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("""\
defaults: &defaults {timeout: 2s, poll_interval: 5s}
gateways:
  - <<: *defaults
    name: a
    url: http://a
    timeout: 3s
  - <<: *defaults
    name: b
    url: http://b
""")
    document = load_yaml(path)
    assert isinstance(document, dict)
    assert [g["timeout"] for g in document["gateways"]] == ["3s", "2s"]


def test_same_text_of_different_types_is_two_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("a: {1: x, '1': y}\n")
    assert load_yaml(path) == {"a": {1: "x", "1": "y"}}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_configuration_says_so(tmp_path: Path, text: str) -> None:
    assert problems_in(tmp_path / "c.yml", text, load_config) == [
        "(top level): the file is empty: it needs at least a `gateways:` list (see the README, "
        "Configuration)"]


def test_an_empty_web_configuration_means_plain_http(tmp_path: Path) -> None:
    """As exporter-toolkit reads it: no TLS, no users."""
    path = tmp_path / "web.yml"
    path.write_text("")
    assert load_web_config(path).ssl_context is None


@pytest.mark.parametrize(("value", "expected"), [
    ("9" * 5000, "cannot read '" + "9" * 40 + "…' as int"),  # past Python's 4,300 digits
    ("0x_", "cannot read '0x_' as int"),  # YAML 1.1's pattern for an int, with no digit
    ("2020-13-45", "cannot read '2020-13-45' as timestamp: month must be in 1..12"),
    ("!!int abc", "cannot read 'abc' as int"),
    ("!!float abc", "cannot read 'abc' as float"),
])
def test_a_value_yaml_cannot_build_is_an_error_at_its_place(tmp_path: Path, value: str,
                                                            expected: str) -> None:
    """PyYAML raises these as bare ValueErrors: a traceback at start, and at a reload a
    log line without the problem or its place."""
    path = tmp_path / "config.yml"
    [problem] = problems_in(path, f"gateways: []\nmax_projects_per_gateway: {value}\n")
    assert problem.startswith(f"{path}:2:27: invalid YAML: {expected}")


def test_collections_nested_too_deeply_are_an_error_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    [problem] = problems_in(path, "gateways: " + "[" * 3000 + "]" * 3000 + "\n")
    assert problem.startswith(f"{path}:1:")
    assert problem.endswith("invalid YAML: nested too deeply")


@pytest.mark.parametrize("value", [
    "!!bool maybe",  # KeyError in PyYAML's bool constructor
    "!!bool ''",
    "!!timestamp foo",  # AttributeError: no match to take the fields from
    "!!int ''",  # IndexError: the first character of nothing
    "!!int '-'",
    "!!float ''",
])
def test_every_value_yaml_cannot_build_is_an_error_at_its_place(tmp_path: Path,
                                                                value: str) -> None:
    """Not only ValueErrors: PyYAML's constructors fail on these with KeyError,
    AttributeError and IndexError, a traceback at start (exit 1, not 2) and at a reload an
    HTTP 500 'Server got itself in trouble'."""
    path = tmp_path / "config.yml"
    [problem] = problems_in(path, f"gateways: []\nmax_projects_per_gateway: {value}\n")
    assert problem.startswith(f"{path}:2:27: invalid YAML: ")


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b", "\x7f"])
def test_a_character_yaml_does_not_allow_is_an_error_at_its_place(tmp_path: Path,
                                                                   character: str) -> None:
    """A stray control character (a NUL, a terminal's escape pasted in): PyYAML's reader
    refuses it as soon as the loader is made, before the loader's errors are caught."""
    path = tmp_path / "config.yml"
    [problem] = problems_in(path, f"gateways: []\nmax_projects_per_gateway: 1{character}\n")
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_a_file_far_larger_than_any_configuration_is_refused_at_once(tmp_path: Path) -> None:
    """A careless --config (a log file, a dump): one of 200,000 repeated keys took 17 s and
    365 MB, and its error was 200,002 lines (11 MB, one log line at a reload). A file far
    past any real configuration is refused before it is parsed, and an error names a
    bounded number of problems."""
    path = tmp_path / "config.yml"
    path.write_text("gateways: []\n" + "k: 1\n" * 20_000)
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert len(caught.value.shown) == MAX_PROBLEMS + 1
    assert caught.value.shown[-1] == f"and {19_999 - MAX_PROBLEMS} more problems"
    big = tmp_path / "big.yml"
    assert problems_in(big, "# a log\n" * (MAX_CONFIG_BYTES // 8 + 1)) == [
        f"{big}: larger than 4 MiB: not a configuration file?"]


def test_the_count_of_problems_left_out_is_right(tmp_path: Path) -> None:
    """300 gateways each with an unknown key and no url: 600 problems."""
    path = tmp_path / "many.yml"
    path.write_text("gateways:\n" + "".join(f"  - name: g{i}\n    bogus: 1\n"
                                            for i in range(300)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).splitlines()[-1].endswith("and 500 more problems"), \
        str(caught.value).splitlines()[-1]


def test_a_lone_cr_line_end_is_a_line(tmp_path: Path) -> None:
    """YAML (and PyYAML's own marks) take a lone CR for a line break."""
    path = tmp_path / "cr.yml"
    path.write_bytes(b"gateways:\r  - name: a\r  url: b\x00\r")
    with pytest.raises(ConfigError, match=r"cr.yml:3:"):
        load_config(path)


def loaded_apart(path: Path, report: str, timeout: float, hangs: str) -> str:
    """What `load_config(path)`, in a process of its own, prints of its ConfigError `e`
    (`report`, an expression); the test fails saying `hangs` once `timeout` has passed."""
    program = ("import sys; from exporter.config import load_config, ConfigError\n"
               "try: load_config(sys.argv[1])\n"
               f"except ConfigError as e: print({report})\n")
    try:
        done = subprocess.run([sys.executable, "-c", program, str(path)], timeout=timeout,
                              capture_output=True, text=True,
                              cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(hangs)
    return done.stdout or done.stderr[-2000:]


def test_a_fifo_as_configuration_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "fifo" in loaded_apart(fifo, "e", 10, "reading a FIFO as the configuration hangs")


@pytest.mark.parametrize(("value", "reads", "instead"), [
    ("1:30", "90", "90s or 1m30s"),
    ("1:00", "60", "60s or 1m"),
    ("1:00:00", "3600", "3600s or 1h"),
    ("+1_0:30", "630", "630s or 10m30s"),
    ("1:30.5", "90.5", "90.5 or 1m30s500ms"),
    ("0:00.25", "0.25", "0.25 or 250ms"),
    ("1:00:00:00:00", "12960000", "12960000s or 21w3d"),
])
def test_a_base_60_number_is_an_error_that_says_what_to_write(
        tmp_path: Path, value: str, reads: str, instead: str) -> None:
    """YAML 1.1 reads `1:30` as 90 (base 60): PyYAML took `poll_interval: 1:30` for 90
    seconds without a word, where YAML 1.2 and most readers see text."""
    path = tmp_path / "c.yml"
    assert problems_in(path, f"gateways:\n  - name: a\n    url: http://a\n"
                             f"    poll_interval: {value}\n", load_config) == [
        f"{path}:4:20: gateways[0].poll_interval: {value} is a base-60 number in YAML 1.1 "
        f"({reads}) and text in YAML 1.2: for a duration write {instead}; for text, quote it "
        f"('{value}')"]
    # What it says to write means what YAML 1.1 read.
    forms = instead.split(" or ")
    assert [parse_duration(form) for form in forms] == \
        [pytest.approx(yaml.safe_load(value))] * len(forms)


def test_a_negative_base_60_number_is_refused_without_a_duration_to_write(
        tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    assert problems_in(path, "gateways: []\ntimeout: -1:30\n") == [
        f"{path}:2:10: timeout: -1:30 is a base-60 number in YAML 1.1 (-90) and text in YAML "
        "1.2: for a duration write it with its units (1m30s); for text, quote it ('-1:30')"]


def test_an_octal_number_is_an_error_where_the_readings_differ(tmp_path: Path) -> None:
    """YAML 1.1 reads `010` as 8, YAML 1.2 as 10; `07` is 7 in both."""
    path = tmp_path / "c.yml"
    assert problems_in(path, "a: 010\nb: 07\nc: -0_17\n") == [
        f"{path}:1:4: a: 010 is octal in YAML 1.1 (8) and decimal in YAML 1.2 (10): write the "
        "number meant without the leading zero; for text, quote it ('010')",
        f"{path}:3:4: c: -0_17 is octal in YAML 1.1 (-15) and decimal in YAML 1.2 (-17): write "
        "the number meant without the leading zero; for text, quote it ('-0_17')"]


def test_forms_every_reader_reads_alike_stay(tmp_path: Path) -> None:
    """Digit groups (`1_000`) are a number in YAML 1.1 and text in YAML 1.2, never another
    number: they stay, as do a single octal digit, a quoted time and an explicit tag."""
    path = tmp_path / "c.yml"
    path.write_text("a: 1_000\nb: 07\nc: '1:30'\nd: !!int 1:30\ne: 0\nf: 0.5\ng: 12:30pm\n")
    assert load_yaml(path) == {"a": 1000, "b": 7, "c": "1:30", "d": 90, "e": 0, "f": 0.5,
                               "g": "12:30pm"}


def test_a_misread_number_hides_no_other_problem_and_is_not_repeated(tmp_path: Path) -> None:
    """The schema sees the text (as YAML 1.2 reads it), whose own problem at the same place
    would only repeat the loader's; nothing is cross-checked against a value refused."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
stale_after: 30s
gateways:
  - name: a
    url: http://a
    poll_interval: 1:00
    timout: 5s
  - name: 10:30
    url: http://b
    timeout: 010
""", load_config)
    assert [problem.split(": ")[0] for problem in found] == [
        f"{path}:5:20", f"{path}:6:5", f"{path}:7:11", f"{path}:9:14"], found
    assert found[1].startswith(f"{path}:6:5: gateways[0].timout: unknown key")
    assert found[2].startswith(f"{path}:7:11: gateways[1].name: 10:30 is a base-60 number")


def test_keys_merged_mappings_and_the_web_configuration_are_read_alike(tmp_path: Path) -> None:
    found = problems_in(tmp_path / "c.yml", """\
base: &base {timeout: 1:30}
gateways:
  - <<: [*base, {connect_timeout: 2:30}]
    1:30: x
""")
    assert [problem.split(": ")[1] for problem in found] == [
        "base.timeout", "gateways[0].connect_timeout", "gateways[0].1:30"], found
    web = problems_in(tmp_path / "web.yml", "http_server_config:\n  headers:\n    X-Count: 010\n",
                      load_web_config)
    # The number, and what else is wrong there: a header this server does not set (placed
    # at its key, before the number's value on the same line).
    assert [problem.split(": ")[1] for problem in web] == [
        "http_server_config.headers.X-Count", "http_server_config.headers.X-Count"], web
    assert web[0].split(": ")[2].startswith("header not allowed (allowed"), web
    assert " is octal in YAML 1.1 " in web[1], web


def test_bytes_that_are_not_utf8_are_an_error_at_their_line_and_column(tmp_path: Path) -> None:
    """A file saved as Windows-1252 or Latin-1: the error gave a byte offset (`position 21`),
    which no editor shows. Now the line and column of the first such byte, how many others
    there are, and the file's other problems, read with each such byte as U+FFFD."""
    path = tmp_path / "c.yml"
    path.write_bytes("gateways:\r\n  - name: Usine-Montréal\r\n    url: http://a\r"
                     "    colour: röt\n".encode("cp1252"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = [str(problem) for problem in caught.value.problems]
    assert found[0] == (f"{path}:2:22: not UTF-8: byte 0xE9 cannot be read (nor can 1 more "
                        "after it); save the file as UTF-8")
    assert [problem.split(": ")[0] for problem in found[1:]] == [f"{path}:4:5"]
    assert found[1].startswith(f"{path}:4:5: gateways[0].colour: unknown key")


def test_a_file_of_another_encoding_is_not_utf8_with_its_yaml_problems(tmp_path: Path) -> None:
    """UTF-16, as some Windows editors save: its first byte, then the NULs YAML refuses."""
    path = tmp_path / "c.yml"
    path.write_bytes("gateways: []\n".encode("utf-16"))
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:1:1: not UTF-8: byte 0xFF cannot be read (nor can 1 more after it); save "
        "the file as UTF-8",
        f"{path}:1:4: invalid YAML: character U+0000 is not allowed"]


def test_one_byte_that_is_not_utf8_alone(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:1:6: not UTF-8: byte 0xE9 cannot be read; save the file as UTF-8"]


@pytest.mark.parametrize(("text", "hidden"), [
    # A key's place is also its value's: a wrong value there is not a repeat of the key's
    # problem.
    ("gateways:\n  - name: a\n    url: http://a\nsessions_basic_auth_users:\n"
     "  010: not-a-hash\n", "sessions_basic_auth_users.010: expected a bcrypt hash"),
    # A cross-check at a refused value's place says something else of it.
    ("gateways:\n  - name: '0123'\n    url: http://a\n  - name: 0123\n    url: http://b\n",
     "gateways[1].name: duplicate gateway name '0123'"),
], ids=["a key's value", "a cross-check"])
def test_a_misread_number_hides_no_other_problem_at_its_place(
        tmp_path: Path, text: str, hidden: str) -> None:
    """`load_checked` leaves out every problem the schema finds where a misread number is,
    taking each for a repeat of the loader's; these are not, and the file, once the number
    is quoted, is refused again for them."""
    path = tmp_path / "c.yml"
    found = problems_in(path, text, load_config)
    [misread] = [problem for problem in found if " is octal in YAML 1.1 " in problem]
    assert any(f": {hidden}" in problem for problem in found if problem != misread), found
    # What quoting the number alone leaves.
    quoted = problems_in(path, text.replace(" 010:", " '010':").replace(" 0123\n", " '0123'\n"),
                         load_config)
    assert any(f": {hidden}" in problem for problem in quoted), quoted


@pytest.mark.parametrize("value", ["!!int 010", "!!int 0_10"])
def test_an_explicitly_tagged_octal_is_not_read_as_another_number(
        tmp_path: Path, value: str) -> None:
    """`!!int 010` is 10 in YAML 1.2 and 8 in YAML 1.1: an explicit tag skips the resolver
    that refuses the plain `010`, and PyYAML's constructor still reads it as octal, so the
    series budget became 8 without a word."""
    path = tmp_path / "c.yml"
    path.write_text(f"max_series_per_metric: {value}\n"
                    "gateways:\n  - name: a\n    url: http://a\n")
    try:
        budget = load_config(path).max_series_per_metric
    except ConfigError:
        return  # refused, as the plain form is: fine
    assert budget == 10


def test_a_binary_file_is_one_problem_and_is_not_read_further(tmp_path: Path) -> None:
    """Past MAX_UNDECODABLE_BYTES bytes that are not UTF-8 the file is binary (an image, an
    archive given as --config): its one problem is that, and parsing megabytes of it for
    others took seconds and hundreds of megabytes."""
    path = tmp_path / "c.yml"
    path.write_bytes(b"\xff" * (MAX_UNDECODABLE_BYTES + 1) + b"\ncolour: red\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:1:1: not UTF-8: byte 0xFF cannot be read (nor can {MAX_UNDECODABLE_BYTES} "
        "more after it); save the file as UTF-8"]


def test_a_problem_in_a_file_is_placed_at_its_line_and_column(tmp_path: Path) -> None:
    """In a file of dozens of gateways, `gateways[31].url` is found by counting; an editor
    finds `c.yml:130:5` at once. Each problem is placed at the key it names (a value's
    problem too), or, for a key left out, at the mapping that lacks it."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - name: a
    url: http://a
    timout: 5s
  - name: b
    url: 12
  - name: c
listen: x
""", load_config)
    assert found[0].startswith(f"{path}:4:5: gateways[0].timout: unknown key")
    assert found[1:] == [f"{path}:6:5: gateways[1].url: expected a string, got int",
                         f"{path}:7:5: gateways[2].url: required key is missing",
                         found[3]]
    assert found[3].startswith(f"{path}:8:1: listen: unknown key")


@pytest.mark.parametrize(("text", "expected"), [
    ("poll_interval: 10s\ngateways:\n  - name: a\n    url: http://a\n    timeout: 20s\n",
     "5:5: gateways[0].timeout: 20s exceeds the poll interval 10s: polls would overlap"),
    ("timeout: 20s\ngateways:\n  - name: a\n    url: http://a\n    poll_interval: 10s\n",
     "1:1: timeout: 20s exceeds the poll interval of gateways[0] 'a' (10s): polls would overlap"),
], ids=["in the gateway", "inherited"])
def test_a_cross_check_is_placed_where_its_key_is_written(tmp_path: Path, text: str,
                                                          expected: str) -> None:
    """A problem between settings is placed at the key that carries it, also when that is
    inherited from the top level."""
    path = tmp_path / "c.yml"
    assert problems_in(path, text, load_config) == [f"{path}:{expected}"]


def test_a_web_configuration_problem_is_placed_too(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    found = problems_in(path, "tls_server_config:\n  cert_file: a.crt\n  key_fil: a.key\n",
                        load_web_config)
    assert any(p.startswith(f"{path}:3:3: tls_server_config.key_fil: unknown key")
               for p in found), found


@pytest.mark.parametrize(("written", "meant"), [("timout", "timeout"),
                                                ("poll_intervall", "poll_interval"),
                                                ("stale-after", "stale_after")])
def test_an_unknown_key_close_to_a_known_one_names_it(tmp_path: Path, written: str,
                                                      meant: str) -> None:
    found = problems_in(tmp_path / "c.yml", f"""\
gateways:
  - name: a
    url: http://a
    {written}: 5s
""", load_config)
    assert f"gateways[0].{written}: unknown key: did you mean {meant}? (allowed: " in found[0]


def test_an_unknown_key_like_none_names_no_guess(tmp_path: Path) -> None:
    [found] = problems_in(tmp_path / "c.yml", "gateways: [{name: a, url: 'http://a'}]\n"
                                              "colour: red\n", load_config)
    assert "did you mean" not in found and "colour: unknown key (allowed: " in found


def test_a_long_dotted_key_reached_through_an_alias_does_not_hang(tmp_path: Path) -> None:
    """A problem whose location is not among the file's marks (a key inside an aliased
    gateway) is placed by stripping one step at a time, each step scanning the whole
    location again: a key of 200,000 dots took hours to place, holding a start,
    `--check-config` or a reload's thread (and its lock) all that time. The same file was
    refused in a quarter of a second before problems were placed."""
    path = tmp_path / "c.yml"
    key = ".".join(["a"] * 200_000)
    path.write_text(f'gateways:\n  - &g\n    ? "{key}"\n    : 1\n    name: a\n'
                    f'    url: "http://a"\n  - *g\n')
    assert loaded_apart(
        path, "len(e.problems), any('duplicate gateway name' in str(p) for p in e.problems)",
        30, "placing the problems of a key of many dots inside an alias hangs") == "3 True\n"


def test_a_key_written_before_a_merge_is_placed_where_it_is_written(tmp_path: Path) -> None:
    """A mapping's own key wins over a merged one (`<<`) wherever the merge is written; the
    value refused is the gateway's own `-1`, on line 3, not the merged `5` on line 4."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - name: a
    timeout: -1
    <<: {url: 'http://a', timeout: 5}
""", load_config)
    assert found == [f"{path}:3:5: gateways[0].timeout: duration must be positive, got -1"]


def test_a_list_item_written_as_an_alias_is_placed_at_the_alias(tmp_path: Path) -> None:
    """`- *g` on line 5 is gateways[1]; its problem was placed on line 2, at the anchored
    gateways[0] it repeats (the node the alias stands for), where nothing is wrong."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - &g
    name: a
    url: http://a
  - *g
""", load_config)
    assert found == [f"{path}:5:5: gateways[1].name: duplicate gateway name 'a' (also "
                     "gateways[0])"]


def test_a_key_yaml_reads_as_another_type_is_placed_at_its_line(tmp_path: Path) -> None:
    """`yes:`, `on:`, `null:`, `0x10:` are keys YAML 1.1 reads as true, None and 16: the
    schema names them so (`gateways[0].True`), the marks by their text (`yes`), so they
    were placed at the gateway around them (line 2, not 4 to 6), or, at the top level,
    nowhere."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - name: a
    url: http://a
    yes: 1
    null: 2
    0x10: 3
on: 4
""", load_config)
    assert [problem.split(": unknown key")[0] for problem in found] == [
        f"{path}:4:5: gateways[0].True", f"{path}:5:5: gateways[0].None",
        f"{path}:6:5: gateways[0].16", f"{path}:7:1: True"]


def test_a_near_miss_names_no_key_the_mapping_already_has(tmp_path: Path) -> None:
    """`timout` beside a `timeout` is no misspelling of it: renaming it as told would make a
    key written twice, itself an error."""
    [found] = problems_in(tmp_path / "c.yml", """\
gateways:
  - name: a
    url: http://a
    timeout: 5s
    timout: 5s
""", load_config)
    assert "gateways[0].timout: unknown key" in found and "did you mean timeout" not in found


def test_a_key_left_out_is_placed_in_the_copy_kept_of_a_repeated_key(tmp_path: Path) -> None:
    """`gateways:` written twice keeps the second list; its plant-b lacks `url`, but the
    problem was placed at line 3, where the discarded first list writes plant-a's `url`:
    `c.yml:3:5: gateways[0].url: required key is missing` on a line that holds it."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - name: plant-a
    url: http://a
gateways:
  - name: plant-b
""", load_config)
    assert f"{path}:5:5: gateways[0].url: required key is missing" in found, found


def test_a_top_level_key_left_out_is_placed_at_the_top_level_mapping(tmp_path: Path) -> None:
    """A required key left out is placed at the mapping that lacks it; for `gateways` that is
    the top level, at 1:1, but the problem came without a file, line or column."""
    path = tmp_path / "c.yml"
    assert problems_in(path, "poll_interval: 15s\n", load_config) == [
        f"{path}:1:1: gateways: required key is missing"]


def test_a_key_written_twice_is_placed_like_every_other_problem(tmp_path: Path) -> None:
    """Every problem starts `file:line:column:`, which editors and `grep` jump to; a key
    written twice came as `gateways[0].timeout: key written twice, on lines 4 and 5` alone."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
gateways:
  - name: a
    url: http://a
    timeout: 5s
    timeout: 6s
""", load_config)
    assert found == [f"{path}:5:5: gateways[0].timeout: key written twice, on lines 4 and 5: "
                     "keep one"], found


@pytest.mark.parametrize(("text", "place", "hint"), [
    ("gateways:\n\t- name: a\n", "2:1", "tab"),
    ("gateways:\n  - name: a\n  url: http://a\n", "3:3", "indent"),
    ("gateways:\n  - name: a\n      url: http://a\n", "3:10", "indent"),
], ids=["tab", "key under the list", "key indented too far"])
def test_a_yaml_syntax_error_says_what_to_fix(tmp_path: Path, text: str, place: str,
                                              hint: str) -> None:
    """The usual syntax mistakes of a hand-written file are indentation: a tab, a key not
    lined up with the others of its gateway. They got PyYAML's own words (`found character
    '\\t' that cannot start any token`, `expected <block end>, but found '?'`, `mapping
    values are not allowed here`), which name neither indentation nor a fix."""
    path = tmp_path / "c.yml"
    [found] = problems_in(path, text, load_config)
    assert found.startswith(f"{path}:{place}: invalid YAML: "), found
    assert hint in found.split(": invalid YAML: ", 1)[1].lower(), found


def test_problems_are_listed_in_the_order_of_the_file(tmp_path: Path) -> None:
    """A file's problems are fixed top to bottom; the list jumped: a base-60 number on
    line 5 came before an invalid duration on line 2, and a gateway's ca_file (line 7)
    before its token_file (line 6)."""
    path = tmp_path / "c.yml"
    found = problems_in(path, """\
poll_interval: 15s
idle_after: 90 s
gateways:
  - name: a
    poll_interval: 1:30
    token_file: /nonexistent/token
    ca_file: /nonexistent/ca.pem
    url: http://a
""", load_config)
    lines = [int(p.removeprefix(f"{path}:").split(":")[0]) for p in found]
    assert lines == [2, 5, 6, 7], found


def test_a_long_key_over_many_keys_costs_no_more_memory_than_its_file(
        tmp_path: Path) -> None:
    """Where each key is written is kept by its whole location, whose text repeats every
    key above it: a 256 kB key over 40,000 small ones (a 0.7 MB file) kept 10 GB of
    locations; it was read in 95 MB before. Read here under a 2 GiB address-space limit,
    it must be refused as the configuration it is, not end the process (MemoryError)."""
    path = tmp_path / "c.yml"
    path.write_text('gateways: [{name: a, url: "http://a"}]\n? "' + "a" * 256_000 + '"\n:\n'
                    + "".join(f"  k{i}: 1\n" for i in range(40_000)))
    program = ("import resource, sys; from exporter.config import load_config, ConfigError\n"
               "resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))\n"
               "try: load_config(sys.argv[1])\n"
               "except ConfigError as e: print(len(e.problems), ': unknown key (' in "
               "str(e.problems[0]))\n")
    done = subprocess.run([sys.executable, "-c", program, str(path)], timeout=300,
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0 and "MemoryError" not in done.stderr, done.stderr[-500:]
    assert done.stdout == "1 True\n", done.stdout


def test_many_problems_in_one_mapping_do_not_hang(tmp_path: Path) -> None:
    """Each problem's place is found by walking down the document; a mapping's keys were
    indexed again for every problem in it: 20,000 unknown keys (a 0.4 MB file) took minutes
    to place, holding a start, `--check-config` or a reload's thread. They take about a
    second; the bound here only tells a hang from that."""
    path = tmp_path / "c.yml"
    path.write_text("gateways: [{name: a, url: 'http://a'}]\n"
                    + "".join(f"unknown_{i}: 1\n" for i in range(20_000)))
    assert loaded_apart(path, "len(e.problems), e.problems[-1].location", 60,
                        "placing 20,000 problems of one mapping hangs") \
        == f"20000 {path}:20001:1\n"


def test_a_file_path_is_read_beside_the_file_that_names_it(tmp_path: Path) -> None:
    """A relative path is joined to the configuration's folder, made absolute however the
    configuration itself was named, so a check, a run and a reload started elsewhere read
    the same file; an absolute one is kept, and an empty one is refused (it would name the
    folder itself)."""
    reader = Reader(folder_of(tmp_path / "etc" / "config.yml"))
    assert file_field(reader, "tls.crt", "cert_file") == str(tmp_path / "etc" / "tls.crt")
    assert file_field(reader, "/srv/tls.crt", "cert_file") == "/srv/tls.crt"
    assert Reader(folder_of("config.yml")).folder == Path.cwd()
    assert file_field(Reader(), "tls.crt", "cert_file") == "tls.crt"  # a document in code
    assert not reader.problems
    file_field(reader, "", "key_file")
    assert [str(p) for p in reader.problems] == [
        "key_file: expected a file's path, got an empty string"]
