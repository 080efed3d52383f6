"""The argparse parser of lambdactl.

Imports neither grpc nor rich: argparse-manpage imports this module to write the
man page, and `--help` should stay instant.
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata

from lambdactl.exitcodes import EXIT_CODES_HELP

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

ENVIRONMENT_HELP = """\
environment:
  LAMBDA_HOST          where lambdad listens: unix:///path/to.sock or host:port
                       (default: the current context, else the first socket that
                       exists of $LAMBDA_STATE_DIR/run/lambdad.sock,
                       ${XDG_STATE_HOME:-~/.local/state}/lambdad/run/lambdad.sock,
                       /run/lambdad/lambdad.sock)
  LAMBDA_CONTEXT       context to use (same as --context)
  LAMBDA_API_KEY       API key sent as `authorization: Bearer <key>` to a TCP host
  LAMBDA_API_KEY_FILE  file holding the API key (used when LAMBDA_API_KEY is unset)
  LAMBDA_TLS_CA        CA certificate(s) for lambdad's TLS certificate (--tls-ca)
  LAMBDA_STATE_DIR     state folder of a daemon started with --state-dir
  XDG_CONFIG_HOME      contexts live in $XDG_CONFIG_HOME/lambdactl/config.toml
                       (default ~/.config/lambdactl/config.toml)
  NO_COLOR             when set and not empty, no colours on a terminal"""


def client_version() -> str:
    """lambdactl's own version, from the installed package's metadata."""
    try:
        return metadata.version("lambda-faas")
    except metadata.PackageNotFoundError:
        return "unknown"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """`90`, `30s`, `10m`, `2h`, `1d` -> seconds."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in _UNITS else text
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30s, 10m, 2h or 1d, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return max(1, int(value * _UNITS.get(unit, 1)))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not _ENV_KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY made of letters, digits and _: {text!r}"
        )
    return key, value


def _add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, also accepted after the subcommand (`lambdactl list -o json`).

    On subparsers the defaults are suppressed so they never overwrite a value
    given before the subcommand.
    """
    default: object = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--context",
        metavar="NAME",
        default=default,
        help="use the daemon of context NAME (env LAMBDA_CONTEXT; default: the current "
        "context; --host and LAMBDA_HOST win over contexts)",
    )
    parser.add_argument(
        "--host",
        metavar="ADDRESS",
        default=default,
        help="lambdad control address: unix:///path/to.sock, host:port, or tls://host:port "
        "for TLS (env LAMBDA_HOST; default: the local daemon's socket)",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=default,
        help="CA certificate(s) to verify lambdad's TLS certificate; implies TLS "
        "(env LAMBDA_TLS_CA; tls:// hosts without it use the system CAs)",
    )
    parser.add_argument(
        "--api-key-file",
        metavar="FILE",
        default=default,
        help="file holding the API key for a TCP host (env LAMBDA_API_KEY_FILE; "
        "env LAMBDA_API_KEY gives the key itself)",
    )
    _add_output_option(parser, suppress=suppress)


def _add_output_option(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default=argparse.SUPPRESS if suppress else "text",
        help="output format: human-readable text, or one JSON value on stdout (default: text)",
    )


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The settings both `deploy` and `config` can change."""
    parser.add_argument(
        "--timeout",
        type=_positive_int,
        metavar="SECONDS",
        help="seconds an invocation may run before it is stopped",
    )
    parser.add_argument(
        "--memory", type=_positive_int, metavar="MiB", help="memory limit of each instance, in MiB"
    )
    parser.add_argument(
        "--cpu", type=_positive_float, metavar="CORES",
        help="CPU limit of each instance, in cores (e.g. 0.5)",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, metavar="N",
        help="requests one instance serves at once (default 1)",
    )
    parser.add_argument(
        "--min-instances", type=_non_negative_int, metavar="N",
        help="instances kept warm even when idle (default 0: scale to zero)",
    )
    parser.add_argument(
        "--max-instances", type=_positive_int, metavar="N",
        help="most instances that may run at once (default 10); beyond, requests queue",
    )
    parser.add_argument(
        "--idle-timeout", type=_positive_int, metavar="SECONDS",
        help="idle instances beyond the minimum stop after this (default 300)",
    )
    parser.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable in the function (repeatable; "
        "added to those in lambda.toml)",
    )
    parser.add_argument("--handler", metavar="MODULE.FUNCTION", help="handler to call")
    parser.add_argument(
        "--network",
        choices=("none", "bridge"),
        help="network of the instances: none (no network, the default) or bridge",
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser; also the entry point argparse-manpage uses."""
    parser = argparse.ArgumentParser(
        prog="lambdactl",
        description="Deploy, invoke and manage functions on a lambdad daemon.",
        epilog=f"{ENVIRONMENT_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {client_version()}",
                        help="print lambdactl's version and exit (`lambdactl version` also "
                        "asks the daemon)")
    _add_connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_connection_options(common, suppress=True)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    _add_config_flags(deploy)

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
        "--version", type=_positive_int, metavar="N", dest="pinned_version",
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

    schedules = sub.add_parser(
        "schedules",
        parents=[common],
        help="list schedules",
        description="List schedules (of NAME, or all): id, function, cron, time zone, overlap "
        "policy, next run, last run and its result.",
    )
    schedules.add_argument("name", metavar="NAME", nargs="?", default="",
                           help="the function (default: all)")

    unschedule = sub.add_parser(
        "unschedule",
        parents=[common],
        help="delete a schedule",
        description="Delete the schedule ID (a unique prefix is enough).",
    )
    unschedule.add_argument("id", metavar="ID", help="the schedule id (or a unique prefix)")

    invocations = sub.add_parser(
        "invocations",
        parents=[common],
        help="list a function's asynchronous invocations",
        description="List the asynchronous invocations of function NAME, newest first.",
    )
    invocations.add_argument("name", metavar="NAME", help="the function")
    invocations.add_argument("--status", choices=("queued", "running", "succeeded", "failed"),
                             help="only invocations in this state")

    invocation = sub.add_parser(
        "invocation",
        parents=[common],
        help="show one asynchronous invocation",
        description="Show an asynchronous invocation: payload, attempts, result or last error "
        "and timings. A unique prefix of the id is enough.",
    )
    invocation.add_argument("id", metavar="ID", help="the invocation id (or a unique prefix)")

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
    data = invoke.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="JSON", help="JSON payload (default: {})")
    data.add_argument(
        "--data-file", metavar="FILE", help="read the JSON payload from FILE ('-' for stdin)"
    )

    sub.add_parser(
        "list",
        parents=[common],
        help="list deployed functions",
        description="List deployed functions with their active version, status and URL.",
    )

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
    logs.add_argument("--since", type=_duration, metavar="DURATION",
                      help="only lines from the last DURATION (e.g. 30s, 10m, 2h, 1d)")
    logs.add_argument("--tail", type=_positive_int, metavar="N",
                      help="only the last N lines (before following)")
    logs.add_argument("--request-id", metavar="ID", help="only the lines of one invocation")
    logs.add_argument("--version", type=_positive_int, metavar="N", dest="log_version",
                      help="only the lines of version N")

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

    versions = sub.add_parser(
        "versions",
        parents=[common],
        help="list a function's versions and when each was active",
        description="List every version of function NAME, newest last: the active one is "
        "marked with *, pruned versions (image removed by retention) are marked, and each "
        "version shows when it was active and why (deploy, config, rollback).",
    )
    versions.add_argument("name", metavar="NAME", help="the function")

    rollback = sub.add_parser(
        "rollback",
        parents=[common],
        help="make an earlier version live again (no rebuild)",
        description="Switch function NAME back to the newest kept version below the active "
        "one, or to version N with --to. Instant: no rebuild, no new version; in-flight "
        "requests finish on the version they started on. Recorded in `versions`.",
    )
    rollback.add_argument("name", metavar="NAME", help="the function")
    rollback.add_argument("--to", type=_positive_int, metavar="N", dest="to_version",
                          help="the version to make live (default: the previous kept one)")

    config = sub.add_parser(
        "config",
        parents=[common],
        help="change settings without new code (creates a version)",
        description="Create a new version of function NAME with the active version's image "
        "and changed settings, and make it live. Because it is a version, a rollback also "
        "reverts configuration.",
    )
    config.add_argument("name", metavar="NAME", help="the function")
    _add_config_flags(config)

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

    sub.add_parser(
        "version",
        parents=[common],
        help="print the versions of lambdactl and of the daemon",
        description="Print lambdactl's version, then ask the daemon for its version, API "
        "version and where it is. If the daemon cannot be reached the client's version is "
        "still printed, and the exit code says why (69 unreachable, 77 authentication).",
    )
    _add_context_parser(sub)
    return parser


def _add_context_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`lambdactl context ...`: its --host and key flags describe the context being
    saved, so they have their own names and do not take the global options."""
    output = argparse.ArgumentParser(add_help=False)
    _add_output_option(output, suppress=True)
    context = sub.add_parser(
        "context",
        parents=[output],
        help="manage named daemons (contexts) and pick the current one",
        description="Contexts name daemons: a host and the paths of its API key and TLS CA "
        "files (never the key itself), kept in $XDG_CONFIG_HOME/lambdactl/config.toml "
        "(default ~/.config/lambdactl/config.toml). Without --host or LAMBDA_HOST, "
        "lambdactl talks to --context / LAMBDA_CONTEXT, else the current context, else the "
        "local daemon's socket.",
    )
    actions = context.add_subparsers(dest="context_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[output], help="add or replace a context")
    add.add_argument("name", metavar="NAME", help="the context's name")
    add.add_argument("--host", required=True, metavar="ADDRESS", dest="context_host",
                     help="the daemon: unix:///path/to.sock, host:port or tls://host:port")
    add.add_argument("--api-key-file", metavar="FILE", dest="context_key_file",
                     help="file holding the API key (its path is stored, not the key)")
    add.add_argument("--tls-ca", metavar="PEM", dest="context_tls_ca",
                     help="CA certificate(s) to verify the daemon's TLS certificate")
    use = actions.add_parser("use", parents=[output], help="make a context the current one")
    use.add_argument("name", metavar="NAME", help="the context")
    actions.add_parser("list", parents=[output], help="list contexts; * marks the current one")
    show = actions.add_parser("show", parents=[output], help="show one context")
    show.add_argument("name", metavar="NAME", nargs="?",
                      help="the context (default: the current one)")
    remove = actions.add_parser("remove", parents=[output], help="remove a context")
    remove.add_argument("name", metavar="NAME", help="the context")
