"""list, get, stats and delete: the commands that look at functions or remove them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambdactl.parser.options import Subparsers


def add_list(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "list",
        parents=[common],
        help="list deployed functions",
        description="List deployed functions with their active version, status and URL.",
    )


def add_get(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    get = sub.add_parser(
        "get",
        parents=[common],
        help="show one function and its configuration",
        description="Show the active version of function NAME: status, URL, image, "
        "configuration and code digest. Environment values are masked.",
    )
    get.add_argument("name", metavar="NAME", help="the function to show")
    get.add_argument("--show-env", action="store_true",
                     help="show environment values instead of masking them (over TCP this "
                     "needs a deployer or admin key)")


def add_stats(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    stats = sub.add_parser(
        "stats",
        parents=[common],
        help="invocations, errors, latency percentiles and cold starts over time",
        description="For function NAME (or every function): invocations, error rate, "
        "p50/p95/p99 duration, cold-start rate and the most instances over the last 5 "
        "minutes, hour and day, from per-minute figures the daemon keeps across restarts; "
        "the memory its instances use now; and the stem-cell pool: ready and starting "
        "cells per resource class and the memory they hold.",
    )
    stats.add_argument("name", metavar="NAME", nargs="?", default="",
                       help="the function (default: all)")
    stats.add_argument("--cells", action="store_true",
                       help="only the stem-cell pool (with -o json: a list of its classes)")


def add_delete(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    delete = sub.add_parser(
        "delete",
        parents=[common],
        help="delete a function with all its versions and instances",
        description="Delete function NAME: stop its instances and remove all its versions "
        "and images. On a terminal lambdactl asks for confirmation first unless --yes is "
        "given; when stdin or stderr is not a terminal (scripts, CI) it does not ask.",
    )
    delete.add_argument("name", metavar="NAME", help="the function to delete")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
