"""`ignition-exporter simulate`: a simulated gateway on its own, to wire the exporter,
Prometheus and Grafana together before touching a real gateway.

It serves the same simulated population the demo uses, in the WebDev shape
(`ignition/session_exporter.py`'s document) or the Ignition 8.3 REST API's, optionally behind
a token, and prints the exporter configuration that polls it.

Like the demo's, its users hold at most QUIET_SESSIONS_PER_USER sessions each, so the shipped
rules raise no alert on it: a newcomer must not be paged by sample data. `--sessions` is always
served in full. Without `--users`, the plant gains users when its own are too few for that;
`--users N` too few for it share the sessions evenly, more than QUIET_SESSIONS_PER_USER each,
and above the alert's threshold a warning at start says that IgnitionUserTooManySessions
will fire.
"""

from __future__ import annotations

import argparse
import logging
import math

from aiohttp import web

from exporter.clock import Clock, SystemClock
from exporter.standins.simulator import (
    PLANT_USERS,
    QUIET_SESSIONS_PER_USER,
    USER_SESSIONS_ALERT_THRESHOLD,
    WEBDEV_PATH,
    GatewaySimulator,
    plant_users,
    simulator_app,
)

log = logging.getLogger("exporter.simulate")

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
                       help=f"Perspective sessions held (default 40), at most "
                            f"{QUIET_SESSIONS_PER_USER} a user so that the shipped rules raise "
                            "no alert")
    group.add_argument("--clients", type=int, default=DEFAULTS["clients"], metavar="N",
                       help="Vision clients and Designers held (default 6)")
    group.add_argument("--users", type=int, default=DEFAULTS["users"], metavar="N",
                       help=f"N distinct usernames (default: the plant's {len(PLANT_USERS)} "
                            "users, and more when --sessions needs them); fewer than "
                            f"--sessions / {QUIET_SESSIONS_PER_USER} share the sessions evenly, "
                            f"and above {USER_SESSIONS_ALERT_THRESHOLD} each the start says "
                            "that IgnitionUserTooManySessions will fire")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What the options' types cannot say: counts are not negative, and a REST token is an
    API key."""
    for name in ("sessions", "clients", "users"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative")
    if args.shape == "rest" and args.token and ":" not in args.token:
        parser.error("--token for --shape rest is an 8.3 API key, NAME:SECRET "
                     "(a gateway refuses the secret alone)")


# The REST API exists only from 8.3, so that shape reports an 8.3 build (as a live 8.3.6 one
# spells it); the WebDev resource runs on 7.9 to 8.3, and reports the simulator's default.
REST_VERSION = "8.3.6 (b2026042713)"


def sessions_per_user(args: argparse.Namespace) -> int:
    """The most Perspective sessions one user holds: QUIET_SESSIONS_PER_USER, unless the
    `--users` given are too few for `--sessions` at that; then an even share, as asked."""
    if not args.users:
        return QUIET_SESSIONS_PER_USER
    return max(QUIET_SESSIONS_PER_USER, math.ceil(args.sessions / args.users))


def simulator(args: argparse.Namespace, clock: Clock | None = None) -> GatewaySimulator:
    """The simulated gateway the options describe."""
    versions = {"version": REST_VERSION} if args.shape == "rest" else {}
    plant = {} if args.users else {"users": plant_users(args.sessions)}
    return GatewaySimulator(name="simulated-gateway", target_sessions=args.sessions,
                            target_clients=args.clients, distinct_users=args.users,
                            max_sessions_per_user=sessions_per_user(args),
                            clock=clock or SystemClock(), **plant, **versions)


def announce(args: argparse.Namespace) -> None:
    """Say at start where `--sessions` changed the users: more of them than the plant's, or
    (with `--users`) more sessions each than the alert allows."""
    most, users = sessions_per_user(args), len(plant_users(args.sessions))
    if most > USER_SESSIONS_ALERT_THRESHOLD:
        log.warning("each user holds more sessions than IgnitionUserTooManySessions allows: "
                    "the shipped rules will raise it",
                    extra={"sessions": args.sessions, "users": args.users,
                           "sessions_per_user": most,
                           "alert_threshold": USER_SESSIONS_ALERT_THRESHOLD,
                           "users_for_no_alert": users})
    elif not args.users and users > len(PLANT_USERS):
        log.info(f"the plant's users are too few for --sessions at {QUIET_SESSIONS_PER_USER} "
                 "a user: more users simulated",
                 extra={"sessions": args.sessions, "users": users, "sessions_per_user": most})


def build(args: argparse.Namespace) -> web.Application:
    announce(args)
    return simulator_app(simulator(args), token=args.token, shape=args.shape)


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
