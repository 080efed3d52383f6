"""lambdactl entry point: run one subcommand, map every expected failure to an exit code.

Data goes to stdout (text, or JSON with `-o json`); progress, messages and errors
go to stderr, so `lambdactl invoke f > out.json` captures only the payload. The
commands live in lambdactl.commands, their formatting in lambdactl.render.
"""

from __future__ import annotations

import contextlib
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from typing import NoReturn, TextIO

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


def run() -> NoReturn:
    """The `lambdactl` program: `main`, then the process ends at once.

    Everything a command does is finished when `main` returns (the channel closed, files
    written and closed, the upload's spool gone with its descriptor), so only stdout and
    stderr need flushing. The interpreter's teardown (freeing grpc's, protobuf's and
    rich's modules) took 40-300 ms after every command, as long as a warm deploy's own
    work in the daemon.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
