from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import build_parser, main, parse_arguments, parse_listen, reserved_files
from exporter.config import load_config
from exporter.polling.workers import auto_processes, describe, usable_cpus
from exporter.web.server import OTHER_FILES, digest_process_files
from exporter.webdev_script import DO_GET, script_path
from tests.conftest import eventually
from tests.processes import ExporterProcess, children, command_line, running

ROOT = Path(__file__).resolve().parent.parent


def test_webdev_script_prints_script_and_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webdev-script"]) == 0
    out = capsys.readouterr().out
    assert DO_GET in out
    assert (ROOT / "ignition" / "session_exporter.py").read_text() in out
    assert "Require HTTPS" in out and "/system/webdev/monitoring/sessions" in out
    assert script_path() == ROOT / "ignition" / "session_exporter.py"


@pytest.mark.parametrize("command", ["rules", "dashboard", "webdev-script"])
def test_output_closed_early_is_one_line_not_a_traceback(command: str) -> None:
    """`ignition-exporter rules | promtool check rules` (promtool wants a file and exits at
    once) closes the pipe before the text is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "exporter", command], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    closed = "the output was closed before it was all written"
    assert done.stderr == f"ignition-exporter {command}: {closed}\n"


PRINTING = ["rules", "dashboard", "webdev-script", "runbook", "site-thresholds"]


@pytest.mark.parametrize("command", PRINTING)
def test_a_printing_command_refuses_a_configuration(tmp_path: Path, command: str) -> None:
    """`rules --config FILE` printed the shipped rules as if the file mattered: nothing a
    command that prints a shipped file prints depends on a configuration (the thresholds are
    Prometheus series; stale_after and idle_after reach the rules as metrics), so the option
    is a usage error, as the exporter's options are for `simulate`."""
    config = tmp_path / "config.yml"
    config.write_text("gateways:\n  - {name: a, url: 'http://a'}\n")
    done = subprocess.run([sys.executable, "-m", "exporter", command, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"usage: ignition-exporter {command} [-h] [--version]\n")
    assert f"ignition-exporter {command}: error: --config is an option of the exporter, not " \
           f"of {command}, which prints " in done.stderr


@pytest.mark.parametrize("command", PRINTING)
@pytest.mark.parametrize("argv", [
    ["--config", "c.yml"], ["--check-config"], ["--demo"], ["--web.config.file", "web.yml"],
    ["--web.enable-lifecycle"], ["--web.max-connections", "100"],
    ["--web.max-connections-per-address", "100"], ["--web.listen-address", ":9000"],
    ["--listen", ":9000"], ["--log.level", "debug"], ["--log-level", "debug"],
    ["--log.format", "json"]])
def test_a_printing_command_refuses_every_option_of_the_exporter(
        command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Before or after the command, none changes what it prints: each is refused by name."""
    for order in ([command, *argv], [*argv, command]):
        with pytest.raises(SystemExit) as exited:
            main(order)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"ignition-exporter {command}: error: {argv[0]} is an option of the exporter, " \
               f"not of {command}, which prints " in err, err


def test_a_printing_command_still_prints_its_help_and_the_version(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rules", "--help"])
    assert exited.value.code == 0
    assert "Print the Prometheus alerting and recording rules." in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["dashboard", "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("ignition-exporter ")


def test_check_config_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yml"
    good.write_text("gateways:\n  - {name: a, url: 'http://a'}\n")
    assert main(["--config", str(good), "--check-config"]) == 0
    out = capsys.readouterr().out
    assert "OK, 1 gateway(s): a" in out
    assert f"\ndigest_processes: {describe(auto_processes(usable_cpus()))}\n" in out
    good.with_name("thread.yml").write_text(good.read_text() + "digest_processes: 0\n")
    assert main(["--config", str(good.with_name("thread.yml")), "--check-config"]) == 0
    assert f"digest_processes: 0, the worker thread (this process may use {usable_cpus()} " \
           "core(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.yml"
    bad.write_text("gateways:\n  - {name: a, url: 'http://a', timeout: soon}\n")
    assert main(["--config", str(bad), "--check-config"]) == 2
    assert "gateways[0].timeout: invalid duration 'soon'" in capsys.readouterr().err


def test_check_config_reads_relative_paths_as_the_service_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A check run in the configuration's folder and the service, started in `/`, read the
    same token file: beside the configuration."""
    (tmp_path / "plant-a.token").write_text("s3cret\n")
    path = tmp_path / "config.yml"
    path.write_text("gateways:\n  - {name: a, url: 'http://a', token_file: plant-a.token}\n")
    for folder in (tmp_path, Path("/")):
        monkeypatch.chdir(folder)
        assert main(["--config", str(path), "--check-config"]) == 0, capsys.readouterr().err
    (tmp_path / "plant-a.token").unlink()
    assert main(["--config", str(path), "--check-config"]) == 2
    assert f"from the configuration's folder, {tmp_path})" in capsys.readouterr().err


# A file's text, and the problem `--check-config` must name (with `{path}`, the file's).
CHECKED = {
    "budget": ("max_series_per_metric: 1\ngateways:\n  - {name: a, url: 'http://a'}\n"
               "  - {name: b, url: 'http://b'}\n",
               "  {path}:1:1: max_series_per_metric: 1 is fewer than the 2 gateways that "
               "share it: "),
    "token_header": ("gateways:\n  - {name: plant-a, url: 'http://a', token_header: X-Token}\n",
                     "  {path}:2:38: gateways[0].token_header: only a source: rest gateway "
                     "sends the token in another header"),
    "base 60": ("gateways:\n  - {name: a, url: 'http://a', poll_interval: 1:30}\n",
                "  {path}:2:47: gateways[0].poll_interval: 1:30 is a base-60 number in YAML 1.1 "
                "(90) and text in YAML 1.2: for a duration write 90s or 1m30s; "),
    "not UTF-8": ("gateways:\n  - {name: Montr\xe9al, url: 'http://a', bogus: 1}\n",
                  "  {path}:2:17: not UTF-8: byte 0xE9 cannot be read; save the file as UTF-8\n"
                  "  {path}:2:39: gateways[0].bogus: unknown key"),
}


@pytest.mark.parametrize("case", CHECKED)
def test_check_config_names_each_problem_and_where(tmp_path: Path, case: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yml"
    text, expected = CHECKED[case]
    path.write_bytes(text.encode("latin-1"))
    assert main(["--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ignition-exporter: {path}: invalid configuration:\n"), err
    assert expected.format(path=path) in err, err


def test_check_config_of_the_demo_says_what_it_checked(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "--check-config"]) == 0
    expected = ("--demo: OK, 1 gateway: the simulated one this process starts\n"
                f"digest_processes: {describe(auto_processes(usable_cpus()))}\n")
    assert capsys.readouterr().out == expected


@pytest.mark.slow
async def test_the_demo_digests_where_a_configuration_file_would(tmp_path: Path) -> None:
    """`make demo` shows the exporter as a site runs it: `digest_processes: auto`, so on two
    cores or more its one gateway's polls go to a worker process (started from a forkserver,
    at nice 5), and the thread only where `auto` means the thread. All end with the demo."""
    async with ExporterProcess(tmp_path, "--demo") as exporter:
        await exporter.wait_for_metric('ignition_up{gateway="demo"} 1.0')
        assert exporter.process is not None
        servers = [pid for pid in children(exporter.process.pid)
                   if "multiprocessing.forkserver" in command_line(pid)]
        digesting = [pid for server in servers for pid in children(server) if running(pid)]
        assert len(digesting) == min(auto_processes(usable_cpus()), 1)
        assert all(os.getpriority(os.PRIO_PROCESS, pid) == 5 for pid in digesting)
        assert await exporter.stop() == 0
    await eventually(lambda: not any(map(running, [*servers, *digesting])),
                     what="the forkserver and its worker to end with the demo")


def test_nothing_to_do_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "give --config FILE, or --demo" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9871", ("127.0.0.1", 9871)), (":9871", ("0.0.0.0", 9871)),
    ("[::1]:80", ("::1", 80)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9871", "host:", "host:99999", "host:http"])
def test_parse_listen_rejects(text: str) -> None:
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        parse_listen(text)


def test_port_in_use_is_one_line_and_exit_status_3(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yml"
    config.write_text("gateways:\n  - {name: a, url: 'http://127.0.0.1:1/x'}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["--config", str(config), "--listen", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert status == 3
    assert f"ignition-exporter: cannot listen on 127.0.0.1:{port}: another process is using " \
           "it: stop that process or choose another --web.listen-address\n" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--web.max-connections", "--web.max-connections-per-address"])
@pytest.mark.parametrize("value", ["0", "7", "-5", "many", "1e3"])
def test_max_connections_must_be_a_sensible_number(
        flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--demo", flag, value])
    assert exited.value.code == 2
    assert f"{flag}: expected a whole number of at least 8" in capsys.readouterr().err


@pytest.mark.parametrize(("old", "new"), [
    (["--listen", "127.0.0.1:1234"], ["--web.listen-address", "127.0.0.1:1234"]),
    (["--log-level", "debug"], ["--log.level", "debug"]),
])
def test_old_flags_are_aliases(old: list[str], new: list[str]) -> None:
    assert build_parser().parse_args(old) == build_parser().parse_args(new)


def test_prometheus_style_flags() -> None:
    args = build_parser().parse_args(["--config", "c.yml", "--web.listen-address", ":9871",
                                      "--log.format", "json", "--web.enable-lifecycle"])
    assert (args.listen, args.log_format, args.lifecycle) == (("0.0.0.0", 9871), "json", True)
    defaults = build_parser().parse_args([])
    assert (defaults.log_format, defaults.lifecycle, defaults.log_level) == ("logfmt", False,
                                                                           "info")


@pytest.mark.slow
async def test_json_logs_from_the_process(tmp_path: Path) -> None:
    async with ExporterProcess(tmp_path, "--demo", "--log.format", "json") as exporter:
        assert await exporter.stop() == 0
    lines = [json.loads(line) for line in exporter.log.read_text().splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    listening = next(line for line in lines if line["msg"] == "listening")
    assert listening["address"] == exporter.url and listening["gateways"] == 1


def test_open_files_are_reserved_for_the_digest_processes_auto_starts(tmp_path: Path) -> None:
    """`auto` is a number by the time files are shared out: the cores' worth of workers."""
    config = tmp_path / "config.yml"
    config.write_text("gateways:\n  - {name: a, url: 'http://127.0.0.1:1/x'}\n")
    thread = tmp_path / "thread.yml"
    thread.write_text(config.read_text() + "digest_processes: 0\n")
    assert reserved_files(load_config(thread)) == 100 + OTHER_FILES  # the gateway pool's 100
    assert reserved_files(load_config(config)) == 100 + OTHER_FILES \
        + digest_process_files(auto_processes(usable_cpus()))


@pytest.mark.slow
async def test_the_connection_cap_leaves_files_to_the_digest_processes(tmp_path: Path) -> None:
    """Under a low open-file limit the connection cap is lowered to what is left; it used to
    leave nothing for the worker processes, whose pipes the exporter holds (8 files each)."""
    resource = pytest.importorskip("resource")
    config = tmp_path / "config.yml"
    config.write_text("digest_processes: 3\n"
                      "gateways:\n  - {name: a, url: 'http://127.0.0.1:1/x'}\n")

    def low_open_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    async with ExporterProcess(tmp_path, "--config", str(config), "--log.format", "json",
                               preexec=low_open_file_limit) as exporter:
        assert await exporter.stop() == 0
    lines = [json.loads(line) for line in exporter.log.read_text().splitlines()]
    lowered = next(line for line in lines if line["msg"].startswith("open file limit"))
    # 256, less the gateway pool's 100, OTHER_FILES' 64, and 3 workers' 8 each plus the 2
    # their forkserver and resource tracker hold: 66 (it was 92, nothing for the workers).
    assert lowered["max_connections"] == 256 - 100 - OTHER_FILES - digest_process_files(3) == 66


def test_the_exporters_help_lists_only_its_own_options(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` listed the simulate command's options among the exporter's, where they are
    refused; it points to `simulate --help` instead."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ignition-exporter ") and "simulate --help" in out
    for option in ("--config", "--check-config", "--web.listen-address", "--log.format"):
        assert option in out
    for option in ("--shape", "--token", "--sessions", "--clients", "--users"):
        assert option not in out


@pytest.mark.parametrize("command", [*PRINTING, "simulate"])
def test_an_abbreviated_help_prints_the_commands_own(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse takes `--he` for `--help`: `rules --he` printed the exporter's help."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--he"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ignition-exporter {command} ")


def test_a_simulate_option_is_refused_even_at_its_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--sessions 40` (simulate's default) given to the exporter was ignored without a word,
    where `--sessions 41` was refused."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(["--demo", "--sessions", "40"])
    assert exited.value.code == 2
    assert "error: --sessions is an option of the simulate command" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "said"), [
    (["--log.level", "bogus"], "argument --log.level/--log-level: invalid choice: 'bogus'"),
    (["--listen", "rules"], "expected HOST:PORT, got 'rules'"),
    (["rules", "--log.level", "bogus"], "--log.level is an option of the exporter, not of rules"),
    (["simulate", "--web.max-connections", "1"],
     "--web.max-connections is an option of the exporter, not of simulate"),
    (["dashboard", "--token"], "--token is an option of the simulate command, not of dashboard"),
], ids=["exporter", "exporter, a command as a value", "rules", "simulate", "dashboard"])
def test_a_bad_option_value_is_told_by_the_commands_own_parser(
        argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Which command is meant is read first by a parser that knows every command's options
    and checks their values: a value it refuses ended the program there, with that parser's
    usage (the simulate command's options among the exporter's, no -h nor --version), and,
    for an option the command does not take, a complaint of its value rather than that."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert said in err
    usage = err.split("error:")[0]
    assert "[-h]" in usage and "[--version]" in usage
    if argv[0] != "simulate":
        assert "--sessions" not in usage


@pytest.mark.parametrize("argv", [["--config"], ["--demo", "--config", "c.yml"],
                                  ["--log.level", "loud"], ["simulat"],
                                  ["--web.max-connections", "3"]])
def test_a_mistake_on_the_exporters_command_line_shows_the_exporters_usage(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`ignition-exporter --config` (no file) printed a usage line of the parser that only
    picks the command: simulate's --shape, --token, --sessions, --clients and --users
    listed among the exporter's options, which are refused there, and no -h or --version."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ignition-exporter [-h] "), err
    for option in ("--shape", "--token", "--sessions", "--clients", "--users"):
        assert option not in err, err


@pytest.mark.parametrize(("argv", "refused"), [
    (["simulate", "--web.max-connections", "3"], "--web.max-connections is an option of the "
                                                  "exporter, not of simulate"),
    (["rules", "--shape", "foo"], "--shape is an option of the simulate command, not of rules"),
    (["rules", "--listen", "nope"], "--listen is an option of the exporter, not of rules"),
    (["dashboard", "--log.level", "loud"], "--log.level is an option of the exporter, not of "
                                           "dashboard"),
])
def test_an_option_of_another_command_is_refused_by_name_whatever_its_value(
        argv: list[str], refused: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rules --listen 0.0.0.0:9871` is refused as an option of the exporter, but `rules
    --listen nope` got `argument --web.listen-address/--listen: expected HOST:PORT`, under a
    usage line holding every command's options: the value was judged before the command."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: ignition-exporter {argv[0]} " in err and refused in err, err


def test_check_config_names_the_problems_of_both_files_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--check-config` validates the configuration and the web configuration, but stopped
    at the first file with a problem: a typo in each took two runs to learn of."""
    config, web = tmp_path / "config.yml", tmp_path / "web.yml"
    config.write_text("gateways:\n  - name: a\n    url: http://a\n    timout: 5s\n")
    web.write_text("basic_auth_user:\n  prometheus: x\n")
    assert main(["--config", str(config), "--web.config.file", str(web), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert f"{config}:4:5: gateways[0].timout: unknown key" in err, err
    assert f"{web}:1:1: basic_auth_user: unknown key" in err, err
