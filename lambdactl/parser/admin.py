"""keys and schedules: the commands that administer the daemon."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambdactl.parser.options import Subparsers


def add_keys(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys",
        parents=[common],
        help="manage API keys for the TCP control API",
        description="Create, list and revoke API keys. Allowed over the Unix socket or with "
        "an admin key. Roles: invoker (invoke, list, get, logs, stats), deployer (also "
        "deploy, rollback, config, delete, schedules, redrive, environment values), admin "
        "(everything, keys too). Revoking a key ends its open streams (logs -f, deploy).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", parents=[common], help="create a key; the secret "
                                 "is printed once")
    create.add_argument("--name", required=True, help="a name to recognize the key by")
    create.add_argument("--role", choices=("invoker", "deployer", "admin"), default="invoker",
                        help="what the key may do (default: invoker)")
    keys_sub.add_parser("list", parents=[common], help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", parents=[common], help="revoke a key at once")
    revoke.add_argument("key", metavar="NAME|ID", help="the key's name or id")


def add_schedule(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    schedule = sub.add_parser(
        "schedule",
        parents=[common],
        help="run a function on a cron schedule",
        description="Create a schedule: each run enqueues an asynchronous invocation of NAME "
        "with the --data object plus {source, schedule_id, scheduled_time}. Prints the "
        "schedule id and the next three run times.",
    )
    schedule.add_argument("name", metavar="NAME", help="the function")
    schedule.add_argument("--cron", required=True, metavar="EXPR",
                          help='5 fields ("0 * * * *"), or 6 with seconds first '
                          '("*/2 * * * * *")')
    schedule.add_argument("--tz", default="UTC", metavar="ZONE",
                          help="IANA time zone of the expression (default: UTC)")
    schedule.add_argument("--data", metavar="JSON", default="{}",
                          help="a JSON object merged into every event (default: {})")
    schedule.add_argument("--overlap", choices=("skip", "allow", "replace"), default="skip",
                          help="while the previous run is still queued or running: skip this "
                          "run (default), allow both, or replace the previous one")


def add_schedules(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    schedules = sub.add_parser(
        "schedules",
        parents=[common],
        help="list schedules",
        description="List schedules (of NAME, or all): id, function, cron, time zone, overlap "
        "policy, next run, last run and its result.",
    )
    schedules.add_argument("name", metavar="NAME", nargs="?", default="",
                           help="the function (default: all)")


def add_unschedule(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    unschedule = sub.add_parser(
        "unschedule",
        parents=[common],
        help="delete a schedule",
        description="Delete the schedule ID (a unique prefix is enough).",
    )
    unschedule.add_argument("id", metavar="ID", help="the schedule id (or a unique prefix)")


def add_nodes(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "nodes",
        parents=[common],
        help="list the nodes of a cluster",
        description="List the lambdad nodes sharing this daemon's PostgreSQL database: name, "
        "state (up, down, left), instances, ready stem cells, requests in flight (LOAD) and "
        "when its last heartbeat was seen; * marks the leader (cron and the other "
        "singletons). With SQLite, this daemon alone.",
    )
