"""The argparse parser of lambdactl, one module per command group as in lambdactl/commands/.

Imports neither grpc nor rich: argparse-manpage imports this package to write the
man page, and `--help` should stay instant.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from lambdactl.exitcodes import EXIT_CODES_HELP
from lambdactl.parser import admin, deploy, functions, invoke, local
from lambdactl.parser.options import add_connection_options

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


# In the order `lambdactl --help` lists them.
_COMMANDS = (
    deploy.add_deploy, invoke.add_invoke, admin.add_keys, admin.add_schedule,
    admin.add_schedules, admin.add_unschedule, invoke.add_invocations, invoke.add_invocation,
    invoke.add_redrive, functions.add_list, functions.add_get, invoke.add_logs,
    functions.add_stats, admin.add_nodes, deploy.add_versions, deploy.add_rollback,
    deploy.add_config, functions.add_delete, local.add_version, local.add_context,
)


def client_version() -> str:
    """lambdactl's own version, from the installed package's metadata."""
    try:
        return metadata.version("lambda-faas")
    except metadata.PackageNotFoundError:
        return "unknown"


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
    add_connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common, suppress=True)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub, common)
    return parser
