"""deploy, config, versions and rollback: the commands that make or pick a version."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lambdactl.parser.options import add_config_flags, positive_int

if TYPE_CHECKING:
    from lambdactl.parser.options import Subparsers


def add_deploy(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    deploy = sub.add_parser(
        "deploy",
        parents=[common],
        help="package a function folder, build its image and start it",
        description="Package the function folder PATH (honouring .lambdaignore), upload it, "
        "build a new immutable version of the function and make it live. Flags override "
        "the settings in the folder's lambda.toml for this version.",
    )
    deploy.add_argument("path", metavar="PATH", help="the function folder")
    deploy.add_argument(
        "--name",
        help="function name (default: `name` in lambda.toml, else the folder's name)",
    )
    deploy.add_argument(
        "--no-cache", action="store_true",
        help="resolve requirements.txt again instead of reusing the daemon's build cache "
        "(it keeps what the same requirements resolved to last time)",
    )
    deploy.add_argument(
        "--prewarm", type=positive_int, metavar="N",
        help="start N instances of the new version, each with the function's code imported, "
        "before traffic moves to it, so no request waits for an import (default: the one "
        "every deploy starts; at most max_instances; they are then scaled like any other, "
        "stopped after idle_timeout beyond min_instances). If one fails to load, the deploy "
        "fails and the live version keeps serving",
    )
    add_config_flags(deploy)


def add_versions(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    versions = sub.add_parser(
        "versions",
        parents=[common],
        help="list a function's versions and when each was active",
        description="List every version of function NAME, newest last: the active one is "
        "marked with *, pruned versions (image removed by retention) are marked, and each "
        "version shows when it was active and why (deploy, config, rollback).",
    )
    versions.add_argument("name", metavar="NAME", help="the function")


def add_rollback(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    rollback = sub.add_parser(
        "rollback",
        parents=[common],
        help="make an earlier version live again (no rebuild)",
        description="Switch function NAME back to the newest kept version below the active "
        "one, or to version N with --to. Instant: no rebuild, no new version; in-flight "
        "requests finish on the version they started on. Recorded in `versions`.",
    )
    rollback.add_argument("name", metavar="NAME", help="the function")
    rollback.add_argument("--to", type=positive_int, metavar="N", dest="to_version",
                          help="the version to make live (default: the previous kept one)")


def add_config(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser(
        "config",
        parents=[common],
        help="change settings without new code (creates a version)",
        description="Create a new version of function NAME with the active version's image "
        "and changed settings, and make it live. Because it is a version, a rollback also "
        "reverts configuration.",
    )
    config.add_argument("name", metavar="NAME", help="the function")
    add_config_flags(config)
