"""`ignition-exporter simulate`: a simulated gateway on its own, to wire the exporter,
Prometheus and Grafana together before touching a real gateway.

It serves the same simulated population the demo uses, in the WebDev shape
(`ignition/session_exporter.py`'s document) or the Ignition 8.3 REST API's, optionally behind
a token, and prints the exporter configuration that polls it.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from exporter.standins.simulator import WEBDEV_PATH, GatewaySimulator, simulator_app

SHAPES = ("webdev", "rest")
DEFAULT_LISTEN = "127.0.0.1:8088"  # Ignition's own default HTTP port
DEFAULTS = {"shape": "webdev", "token": None, "sessions": 40, "clients": 6, "users": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("simulate")
    group.add_argument("--shape", choices=SHAPES, default=DEFAULTS["shape"],
                       help="the WebDev resource (default) or the 8.3 REST API")
    group.add_argument("--token", default=DEFAULTS["token"], metavar="TOKEN",
                       help="require this token (webdev: Authorization: Bearer TOKEN; "
                            "rest: an 8.3 API key NAME:SECRET, in X-Ignition-API-Token or "
                            "Authorization: Bearer); default: none")
    group.add_argument("--sessions", type=int, default=DEFAULTS["sessions"], metavar="N",
                       help="Perspective sessions held (default 40)")
    group.add_argument("--clients", type=int, default=DEFAULTS["clients"], metavar="N",
                       help="Vision clients and Designers held (default 6)")
    group.add_argument("--users", type=int, default=DEFAULTS["users"], metavar="N",
                       help="N distinct usernames (default: a handful of plant "
                            "users)")


def refuse_misplaced(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Simulator options given to another command are a mistake worth saying so."""
    if args.command == "simulate":
        for name in ("sessions", "clients", "users"):
            if getattr(args, name) < 0:
                parser.error(f"--{name} must not be negative")
        if args.shape == "rest" and args.token and ":" not in args.token:
            parser.error("--token for --shape rest is an 8.3 API key, NAME:SECRET "
                         "(a gateway refuses the secret alone)")
        return
    given = [name for name, default in DEFAULTS.items() if getattr(args, name) != default]
    if given:
        parser.error(f"--{given[0]} is an option of the simulate command")


# The REST API exists only from 8.3, so that shape reports an 8.3 build (as a live 8.3.6 one
# spells it); the WebDev resource runs on 7.9 to 8.3, and reports the simulator's default.
REST_VERSION = "8.3.6 (b2026042713)"


def build(args: argparse.Namespace) -> web.Application:
    versions = {"version": REST_VERSION} if args.shape == "rest" else {}
    simulator = GatewaySimulator(name="simulated-gateway", target_sessions=args.sessions,
                                 target_clients=args.clients, distinct_users=args.users,
                                 **versions)
    return simulator_app(simulator, token=args.token, shape=args.shape)


def exporter_config(address: str, args: argparse.Namespace) -> str:
    """The exporter configuration that polls this simulator, printed at start."""
    lines = ["# ignition-exporter configuration for this simulated gateway:", "gateways:",
             "  - name: simulated"]
    if args.shape == "rest":
        lines += [f"    url: {address}", "    source: rest"]
    else:
        lines += [f"    url: {address}{WEBDEV_PATH}"]
    if args.token:
        lines += ["    token_env: SIMULATOR_TOKEN   # export SIMULATOR_TOKEN=<the --token value>"]
    return "\n".join(lines) + "\n"
