"""Command line: parse arguments, load config (or build the demo), serve until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Self

from exporter import __version__, packaged, webdev_script
from exporter.clock import Clock, SystemClock
from exporter.config import Config, ConfigError, GatewayConfig, load_config
from exporter.logs import LOG_FORMATS, setup_logging
from exporter.polling import workers
from exporter.standins import simulate
from exporter.standins.simulator import (
    PLANT_USERS,
    QUIET_SESSIONS_PER_USER,
    WEBDEV_PATH,
    GatewaySimulator,
    simulator_app,
)
from exporter.web.appkeys import RELOADER
from exporter.web.http import create_app, gateway_connection_limit
from exporter.web.server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    EXIT_CANNOT_LISTEN,
    MIN_CONNECTIONS,
    OTHER_FILES,
    Limits,
    ListenError,
    digest_process_files,
    running_site,
)
from exporter.web.webconfig import WebConfig, load_web_config

DEFAULT_PORT = 9871
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
DEMO_SESSION_LIMIT = 60
DEMO_GATEWAY_CONNECTIONS = 16  # its only client is the exporter's own poller

log = logging.getLogger("exporter")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def connection_count(value: str) -> int:
    if not value.isdigit() or int(value) < MIN_CONNECTIONS:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least "
                                         f"{MIN_CONNECTIONS}, got {value!r}")
    return int(value)


PRINTERS = {"webdev-script": webdev_script.render, "rules": packaged.rules_text,
            "dashboard": packaged.dashboard_text, "runbook": packaged.runbook_text,
            "site-thresholds": packaged.site_thresholds_text}
PRINTED = {"webdev-script": "the gateway-side WebDev script and how to install it",
           "rules": "the Prometheus alerting and recording rules",
           "dashboard": "the Grafana dashboard's JSON",
           "runbook": "the alerts' runbook",
           "site-thresholds": "an example of a site's own thresholds"}


# What each command other than `run` does, which none of the exporter's options changes.
WITHOUT_CONFIGURATION = {
    "simulate": "which serves a simulated gateway and reads no configuration",
    "rules": "which prints the rules as shipped: none depends on a configuration (thresholds "
             "are Prometheus series, and what a configuration sets reaches the rules as the "
             "exporter's metrics)",
    "dashboard": "which prints the dashboard as shipped: it reads everything from Prometheus, "
                 "nothing from a configuration",
    "webdev-script": "which prints the gateway-side script as shipped: its TOKEN is set in the "
                     "script, on the gateway",
    "runbook": "which prints the runbook as shipped",
    "site-thresholds": "which prints the example as shipped: a site's thresholds are its own "
                       "rule file",
}


class _Refused(argparse.Action):
    """An option given to a command that has no use for it: refused by name rather than
    ignored (`simulate --config c.yml --check-config` served a gateway, `rules --config
    c.yml` printed the rules as if the file mattered)."""

    def __init__(self, option_strings: list[str], dest: str, whose: str = "the exporter",
                 **_: object) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.whose = whose

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        command = parser.prog.rsplit(" ", 1)[-1]
        why = WITHOUT_CONFIGURATION.get(command)  # none for the exporter itself
        parser.error(f"{option_string} is an option of {self.whose}"
                     + (f", not of {command}, {why}" if why else ""))


class _StandIn:
    """Stands for a parser, or one of its groups, in a function that adds options; its
    groups are itself."""

    def add_argument_group(self, *_: object, **__: object) -> Self:
        return self

    def add_mutually_exclusive_group(self, **_: object) -> Self:
        return self


class _Refusing(_StandIn):
    """Each option is added only to be refused (`_Refused`), as an option of `whose`."""

    def __init__(self, parser: argparse.ArgumentParser, whose: str = "the exporter") -> None:
        self.parser, self.whose = parser, whose

    def add_argument(self, *flags: str, **_: object) -> argparse.Action:
        return self.parser.add_argument(*flags, action=_Refused, whose=self.whose)


class _Lenient(_StandIn):
    """Each option is added taking any value or none, so that reading which command is
    meant never fails on an option's value; the command's own parser then judges them."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_argument(self, *flags: str, **options: Any) -> argparse.Action:
        if options.get("action") == "store_true":
            return self.parser.add_argument(*flags, action="store_true")
        return self.parser.add_argument(*flags, nargs="?")


# What the functions adding options add them to: a parser, or one standing for it.
_Adder = argparse.ArgumentParser | _StandIn


def _add_exporter_options(parser: _Adder) -> None:
    """The options of the exporter itself (`_Refusing`: for another command, refused)."""
    source = parser.add_mutually_exclusive_group()
    add = parser.add_argument
    source.add_argument("--config", metavar="FILE", help="YAML configuration file")
    source.add_argument("--demo", action="store_true",
                        help="poll a simulated gateway running inside this process")
    add("--web.config.file", dest="web_config", metavar="FILE",
        help="exporter-toolkit web configuration: TLS, basic auth, headers")
    add("--web.max-connections", dest="max_connections", type=connection_count,
        default=DEFAULT_MAX_CONNECTIONS, metavar="N",
        help="connections served at once (default %(default)s); idle ones are dropped to make "
             "room; when all are busy, the client holding most gives one up to a client "
             "holding at least 2 fewer; else new ones are refused")
    add("--web.max-connections-per-address", dest="max_connections_per_address",
        type=connection_count, default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, metavar="N",
        help="connections one client (IPv4 address, IPv6 /64) may hold (default %(default)s); "
             "behind a reverse proxy, where every client has the proxy's address, raise it "
             "to --web.max-connections")
    add("--web.enable-lifecycle", dest="lifecycle", action="store_true",
        help="allow POST /-/reload (SIGHUP always reloads)")
    add("--check-config", action="store_true",
        help="validate the configuration, print a summary and exit")


def _add_shared_options(parser: _Adder, listen: str) -> None:
    """The options the exporter and `simulate` both take; `listen` says the default."""
    parser.add_argument("--web.listen-address", "--listen", dest="listen", type=parse_listen,
                        metavar="HOST:PORT", help=f"where to serve (default {listen})")
    parser.add_argument("--log.level", "--log-level", dest="log_level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log.format", dest="log_format", default="logfmt",
                        choices=LOG_FORMATS)


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


COMMANDS = ["run", *PRINTERS, "simulate"]


def build_parser() -> argparse.ArgumentParser:
    """The exporter's own command line (`run`); the simulate command's options are refused
    by name, and left out of its help."""
    parser = argparse.ArgumentParser(
        prog="ignition-exporter",
        description="Prometheus exporter for Ignition gateway sessions.")
    parser.add_argument("command", nargs="?", default="run", choices=COMMANDS,
                        help="run (default) serves metrics; "
                             + "".join(f"{name} prints {what}; " for name, what in PRINTED.items())
                             + "simulate serves a simulated gateway (simulate --help lists "
                               "its options)")
    _add_exporter_options(parser)
    _add_shared_options(parser, DEFAULT_LISTEN)
    _add_version(parser)
    simulate.add_arguments(_Refusing(parser, "the simulate command"))
    return parser


def _command_of(argv: Sequence[str]) -> str:
    """Which command `argv` means, wherever it stands among the options: read by a parser
    that knows every command's options, taking any value (so an option's value is never
    taken for the command, and a wrong one is left to the command's own parser, with its
    usage), and has no help option (so `--help`, also abbreviated, is the command's own).
    Whatever it cannot read (a command that does not exist) is the exporter's to say."""
    parser = argparse.ArgumentParser(prog="ignition-exporter", add_help=False,
                                     exit_on_error=False)
    parser.add_argument("command", nargs="?", default="run")
    _add_exporter_options(_Lenient(parser))
    _add_shared_options(_Lenient(parser), DEFAULT_LISTEN)
    simulate.add_arguments(_Lenient(parser))
    try:
        command = str(parser.parse_known_args(argv)[0].command)
    except argparse.ArgumentError:
        return "run"
    return command if command in COMMANDS else "run"


def build_simulate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ignition-exporter simulate",
        description="Serve a simulated Ignition gateway and print the exporter configuration "
                    "that polls it: to wire the exporter, Prometheus and Grafana together "
                    "before touching a real gateway.")
    parser.add_argument("command", choices=["simulate"], help=argparse.SUPPRESS)
    _add_shared_options(parser, simulate.DEFAULT_LISTEN)
    _add_version(parser)
    _add_exporter_options(_Refusing(parser))
    simulate.add_arguments(parser)
    return parser


def build_printer_parser(command: str) -> argparse.ArgumentParser:
    """A command that prints a shipped file takes no option: each is refused by name."""
    parser = argparse.ArgumentParser(prog=f"ignition-exporter {command}",
                                     description=f"Print {PRINTED[command]}.")
    parser.add_argument("command", choices=[command], help=argparse.SUPPRESS)
    _add_shared_options(_Refusing(parser), DEFAULT_LISTEN)
    _add_version(parser)
    _add_exporter_options(_Refusing(parser))
    simulate.add_arguments(_Refusing(parser, "the simulate command"))
    return parser


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line. `simulate` has a parser of its own, so that its --help lists only
    its options and the exporter's are refused by name; which command is meant is read
    first, by the exporter's parser, the help options aside (they would print its help)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    if command in PRINTERS:
        return build_printer_parser(command).parse_args(argv)
    if command == "run":
        return build_parser().parse_args(argv)
    parser = build_simulate_parser()
    args = parser.parse_args(argv)
    simulate.check_arguments(parser, args)
    return args


def demo_simulator(clock: Clock | None = None) -> GatewaySimulator:
    """The plant `--demo` polls: its 40 sessions spread over enough users, none holding more
    than a phone, a PC and a wall screen or two, so the shipped rules raise no alert."""
    return GatewaySimulator(name="demo-gateway", target_sessions=40, users=PLANT_USERS,
                            max_sessions_per_user=QUIET_SESSIONS_PER_USER,
                            clock=clock or SystemClock())


def demo_config(url: str, digest_processes: int = 0) -> Config:
    """The demo's one gateway. `serve` digests its polls as a configuration file's default
    (`auto`) would, so the demo runs the worker processes a site runs; tests polling it in
    their own process keep the worker thread."""
    return Config(gateways=(GatewayConfig(name="demo", url=url, poll_interval=5.0, timeout=4.0,
                                          stale_after=20.0, session_limit=DEMO_SESSION_LIMIT),),
                  digest_processes=digest_processes)


def demo_processes() -> int:
    """`digest_processes: auto` for this host: what the demo runs."""
    return workers.auto_processes(workers.usable_cpus())


def reserved_files(config: Config) -> int:
    """File descriptors the served connections must leave to the rest: the gateway connection
    pool, the digest worker processes (`config.digest_processes`, resolved: `auto` is already
    a number), and the others (OTHER_FILES). A reload does not change them: the pool and the
    workers stay as started."""
    return (gateway_connection_limit(config) + digest_process_files(config.digest_processes)
            + OTHER_FILES)


def _stop_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT (Ctrl+C, and a Windows service manager's stop request)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # Windows event loops have no add_signal_handler
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    return stop


# The reload signal (Windows has none). Its default action kills, so the entry point
# (`exporter/__main__.py`) ignores it from its first lines until this handler replaces that,
# and shutdown ignores it again.
HANGUP = getattr(signal, "SIGHUP", None)


def _reload_on_hangup(request: Callable[[], None]) -> None:
    if HANGUP is not None:
        asyncio.get_running_loop().add_signal_handler(HANGUP, request)


def _ignore_further_signals() -> None:
    """Shutdown has begun: a repeated SIGTERM, or a SIGHUP, must not kill it half-way (for
    instance after the event loop has closed and its handlers are gone). Ctrl+C still
    interrupts."""
    for sig in (signal.SIGTERM, HANGUP):
        if sig is None:
            continue
        with contextlib.suppress(NotImplementedError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


async def serve(config: Config | None, web_config: WebConfig, host: str, port: int,
                max_connections: int = DEFAULT_MAX_CONNECTIONS, *,
                max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
                load: Callable[[], Config] | None = None,
                load_web: Callable[[], WebConfig] | None = None,
                lifecycle: bool = False) -> None:
    """Serve until SIGTERM or SIGINT. `config` None runs the demo; `load` and `load_web` read
    the configuration and the web configuration again on a reload (None: nothing to read)."""
    stop = _stop_event()
    async with contextlib.AsyncExitStack() as stack:
        if config is None:
            simulator = demo_simulator()
            gateway_url = await stack.enter_async_context(
                running_site(simulator_app(simulator), "127.0.0.1", 0,
                             limits=Limits(max_connections=DEMO_GATEWAY_CONNECTIONS)))
            config = demo_config(gateway_url + WEBDEV_PATH, demo_processes())
            log.info("demo gateway started", extra={"url": config.gateways[0].url})
        app = create_app(config, web_config=web_config, load=load, load_web=load_web,
                         lifecycle=lifecycle)
        limits = Limits(max_connections=max_connections,
                        max_connections_per_address=max_connections_per_address,
                        reserved_files=reserved_files(config))
        address = await stack.enter_async_context(
            running_site(app, host, port, web_config.ssl_context, limits))
        _reload_on_hangup(app[RELOADER].request)
        log.info("listening", extra={"address": address, "gateways": len(config.gateways),
                                     "version": __version__})
        await stop.wait()
        _ignore_further_signals()
        log.info("stopping")
    log.info("stopped")


async def _simulate(args: argparse.Namespace) -> None:
    """Serve a simulated gateway until SIGTERM or SIGINT."""
    stop = _stop_event()
    host, port = args.listen or parse_listen(simulate.DEFAULT_LISTEN)
    async with running_site(simulate.build(args), host, port) as address:
        log.info("listening", extra={"address": address, "simulated_gateway": args.shape})
        sys.stdout.write(simulate.exporter_config(address, args))
        sys.stdout.flush()
        await stop.wait()
        _ignore_further_signals()
    log.info("stopped")


def _print(command: str) -> int:
    try:
        text = PRINTERS[command]()
    except LookupError as exc:
        print(f"ignition-exporter {command}: {exc}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        print(f"ignition-exporter {command}: the output was closed before it was all written",
              file=sys.stderr)
        return 1
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what is left in its
    buffer does not hit the closed pipe again and print a traceback at exit (the recipe of
    Python's `signal` documentation for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _check(args: argparse.Namespace, config: Config | None, web_config: WebConfig) -> int:
    if config is not None:
        names = ", ".join(g.name for g in config.gateways)
        print(f"{args.config}: OK, {len(config.gateways)} gateway(s): {names}")
    else:  # --demo: its configuration is built in, so there is nothing of the user's to check
        print("--demo: OK, 1 gateway: the simulated one this process starts")
    processes = config.digest_processes if config else demo_processes()
    print(f"digest_processes: {workers.describe(processes)}")
    if args.web_config:
        print(f"{args.web_config}: OK, {web_config.scheme}, "
              f"{len(web_config.basic_auth_users)} basic auth user(s)")
    return 0


def _read_files(args: argparse.Namespace) -> tuple[Config | None, WebConfig] | None:
    """The configuration and the web configuration; None when either has a problem, after
    saying every problem of both (so a typo in each takes one run to learn of, not two)."""
    loaded: list[Any] = []
    failed = False
    for path, read, default in ((args.config, load_config, None),
                                (args.web_config, load_web_config, WebConfig())):
        try:
            loaded.append(read(path) if path else default)
        except ConfigError as exc:
            print(f"ignition-exporter: {path}: {exc}", file=sys.stderr)
            failed = True
    return None if failed else (loaded[0], loaded[1])


def _exporter(args: argparse.Namespace) -> int:
    if not args.demo and not args.config:
        print("ignition-exporter: give --config FILE, or --demo to try it on a simulated "
              "gateway", file=sys.stderr)
        return 2
    files = _read_files(args)
    if files is None:
        return 2
    config, web_config = files
    for warning in config.warnings if config else ():
        log.warning("configuration", extra={"warning": warning})
    if args.check_config:
        return _check(args, config, web_config)
    path, web_path = args.config, args.web_config
    return _run(serve(config, web_config, *(args.listen or parse_listen(DEFAULT_LISTEN)),
                      args.max_connections,
                      max_connections_per_address=args.max_connections_per_address,
                      load=(lambda: load_config(path)) if path else None,
                      load_web=(lambda: load_web_config(web_path)) if web_path else None,
                      lifecycle=args.lifecycle))


def _run(serving: Coroutine[None, None, None]) -> int:
    """Serve until stopped: exit status 0, or EXIT_CANNOT_LISTEN with the reason."""
    try:
        asyncio.run(serving)
    except ListenError as exc:
        print(f"ignition-exporter: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return workers.unblocked_exit(0)  # not waiting for workers a stopped forkserver holds


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.command in PRINTERS:
        return _print(args.command)
    setup_logging(args.log_level, args.log_format)
    if args.command == "simulate":
        return _run(_simulate(args))
    return _exporter(args)
