"""version and context: the commands that are mostly about this client."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lambdactl.parser.options import add_output_option

if TYPE_CHECKING:
    from lambdactl.parser.options import Subparsers


def add_version(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "version",
        parents=[common],
        help="print the versions of lambdactl and of the daemon",
        description="Print lambdactl's version, then ask the daemon for its version, API "
        "version and where it is. If the daemon cannot be reached the client's version is "
        "still printed, and the exit code says why (69 unreachable, 77 authentication).",
    )


def add_context(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """`lambdactl context ...`: its --host and key flags describe the context being
    saved, so they have their own names and do not take the global (`common`) options."""
    output = argparse.ArgumentParser(add_help=False)
    add_output_option(output, suppress=True)
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
