"""lambdactl entry point: run one subcommand, map every expected failure to an exit code.

Data goes to stdout (text, or JSON with `-o json`); progress, messages and errors
go to stderr, so `lambdactl invoke f > out.json` captures only the payload. The
commands live in lambdactl.commands, their formatting in lambdactl.render.
"""

from __future__ import annotations

import sys
from contextlib import redirect_stderr, redirect_stdout
from typing import TextIO

import grpc

from lambdactl.client import error_from_rpc
from lambdactl.commands import COMMANDS, Ctx
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.parser import build_parser
from lambdactl.render import console


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run lambdactl; returns the exit code (see lambdactl.exitcodes)."""
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    try:
        with redirect_stdout(out_stream), redirect_stderr(err_stream):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    ctx = Ctx(args, console(stdout, sys.stdout), console(stderr, sys.stderr), stdin or sys.stdin)
    try:
        return int(COMMANDS[args.command](ctx))
    except CliError as exc:
        ctx.error(exc.message)
        return int(exc.code)
    except grpc.RpcError as exc:
        error = error_from_rpc(exc, ctx.target)
        ctx.error(error.message)
        return int(error.code)
    except KeyboardInterrupt:
        ctx.message("")
        ctx.error("interrupted")
        return ExitCode.INTERRUPTED
