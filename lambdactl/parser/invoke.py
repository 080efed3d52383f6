"""invoke, logs and the asynchronous invocations: the commands that call functions and
follow what they did."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lambdactl.parser.options import duration, positive_int

if TYPE_CHECKING:
    from lambdactl.parser.options import Subparsers


def add_invoke(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    invoke = sub.add_parser(
        "invoke",
        parents=[common],
        help="call a function synchronously and print its response",
        description="Call the function NAME with a JSON payload and print the response "
        "payload on stdout. If the function raises, the error goes to stderr and the exit "
        "code is 1.",
    )
    invoke.add_argument("name", metavar="NAME", help="the function to call")
    invoke.add_argument(
        "--version", type=positive_int, metavar="N", dest="pinned_version",
        help="call version N whatever version is active (its instances start on demand)",
    )
    invoke.add_argument(
        "--log", action="store_true",
        help="after the result, print this invocation's log lines on stderr",
    )
    invoke.add_argument(
        "--async", action="store_true", dest="event",
        help="queue the invocation and return at once, printing its id (retried on failure)",
    )
    data = invoke.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="JSON", help="JSON payload (default: {})")
    data.add_argument(
        "--data-file", metavar="FILE", help="read the JSON payload from FILE ('-' for stdin)"
    )


def add_logs(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    logs = sub.add_parser(
        "logs",
        parents=[common],
        help="print a function's captured log lines, or follow them",
        description="Print the captured stdout and stderr lines of function NAME, oldest "
        "first, with their time, version, request id and stream. With -f, keep printing new "
        "lines as instances write them (across instance starts, stops and version switches) "
        "until Ctrl-C.",
    )
    logs.add_argument("name", metavar="NAME", help="the function")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--since", type=duration, metavar="DURATION",
                      help="only lines from the last DURATION (e.g. 30s, 10m, 2h, 1d)")
    logs.add_argument("--tail", type=positive_int, metavar="N",
                      help="only the last N lines (before following)")
    logs.add_argument("--request-id", metavar="ID", help="only the lines of one invocation")
    logs.add_argument("--version", type=positive_int, metavar="N", dest="log_version",
                      help="only the lines of version N")


def add_invocations(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    invocations = sub.add_parser(
        "invocations",
        parents=[common],
        help="list a function's asynchronous invocations",
        description="List the asynchronous invocations of function NAME, newest first.",
    )
    invocations.add_argument("name", metavar="NAME", help="the function")
    invocations.add_argument("--status", choices=("queued", "running", "succeeded", "failed"),
                             help="only invocations in this state")


def add_invocation(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    invocation = sub.add_parser(
        "invocation",
        parents=[common],
        help="show one asynchronous invocation",
        description="Show an asynchronous invocation: payload, attempts, result or last error "
        "and timings. A unique prefix of the id is enough.",
    )
    invocation.add_argument("id", metavar="ID", help="the invocation id (or a unique prefix)")


def add_redrive(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    redrive = sub.add_parser(
        "redrive",
        parents=[common],
        help="queue dead-lettered invocations again",
        description="Put a failed (dead-lettered) asynchronous invocation back in the queue with "
        "fresh attempts, or every failed one of a function with --all-failed.",
    )
    target = redrive.add_mutually_exclusive_group(required=True)
    target.add_argument("id", metavar="ID", nargs="?", help="the invocation id (or a prefix)")
    target.add_argument("--all-failed", metavar="NAME", help="every failed invocation of NAME")
