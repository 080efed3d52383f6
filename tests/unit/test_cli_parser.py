"""lambdactl's argparse parser: every subcommand, its errors, and its import footprint."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest

from lambdactl.main import main
from lambdactl.parser import build_parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def usage_error(argv: list[str]) -> str:
    err = io.StringIO()
    assert main(argv, stdout=io.StringIO(), stderr=err) == 2
    return err.getvalue()


def test_parser_imports_neither_grpc_nor_rich() -> None:
    code = (
        "import lambdactl.parser, sys; lambdactl.parser.build_parser(); "
        "assert 'grpc' not in sys.modules and 'rich' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('grpc', 'rich'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deploy_all_options() -> None:
    args = parse(
        "deploy", "fn", "--name", "greet", "--timeout", "30", "--memory", "256",
        "--env", "A=1", "--env", "B=x=y", "--env", "EMPTY=", "--handler", "app.main",
        "--network", "bridge", "--cpu", "0.5", "--concurrency", "4", "--min-instances", "0",
        "--max-instances", "3", "--idle-timeout", "60", "--prewarm", "2",
    )  # fmt: skip
    assert vars(args) == {
        "context": None,
        "host": None,
        "tls_ca": None,
        "api_key_file": None,
        "output": "text",
        "command": "deploy",
        "path": "fn",
        "no_cache": False,
        "prewarm": 2,
        "name": "greet",
        "timeout": 30,
        "memory": 256,
        "env": [("A", "1"), ("B", "x=y"), ("EMPTY", "")],
        "handler": "app.main",
        "network": "bridge",
        "cpu": 0.5,
        "concurrency": 4,
        "min_instances": 0,
        "max_instances": 3,
        "idle_timeout": 60,
    }


def test_deploy_defaults() -> None:
    args = parse("deploy", ".")
    assert (args.name, args.timeout, args.memory, args.env, args.handler, args.network) == (
        None, None, None, [], None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["deploy"], "PATH"),
        (["deploy", ".", "--timeout", "0"], "greater than 0"),
        (["deploy", ".", "--timeout", "ten"], "not a whole number"),
        (["deploy", ".", "--memory", "-5"], "greater than 0"),
        (["deploy", ".", "--env", "NOEQUALS"], "KEY=VALUE"),
        (["deploy", ".", "--env", "1BAD=x"], "KEY=VALUE"),
        (["deploy", ".", "--network", "host"], "invalid choice"),
        (["invoke"], "NAME"),
        (["invoke", "f", "--data", "{}", "--data-file", "x"], "not allowed with"),
        (["get"], "NAME"),
        (["delete"], "NAME"),
        (["list", "extra"], "unrecognized arguments"),
        (["-o", "yaml", "list"], "invalid choice"),
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], needle: str) -> None:
    assert needle in usage_error(argv)


def test_invoke_data_options() -> None:
    assert parse("invoke", "f").data is None
    assert parse("invoke", "f", "--data", '{"a": 1}').data == '{"a": 1}'
    assert parse("invoke", "f", "--data-file", "-").data_file == "-"


def test_list_get_delete() -> None:
    assert parse("list").command == "list"
    assert parse("get", "greet").name == "greet"
    args = parse("delete", "greet")
    assert (args.name, args.yes) == ("greet", False)
    assert parse("delete", "greet", "--yes").yes
    assert parse("delete", "greet", "-y").yes


def test_global_options_before_or_after_the_subcommand() -> None:
    before = parse("--host", "h:1", "--api-key-file", "k", "-o", "json", "list")
    after = parse("list", "--host", "h:1", "--api-key-file", "k", "-o", "json")
    for args in (before, after):
        assert (args.host, args.api_key_file, args.output) == ("h:1", "k", "json")
    # A subcommand that does not repeat the option keeps the global value.
    assert parse("-o", "json", "get", "f").output == "json"
    assert parse("get", "f").output == "text"


def test_version_and_help_go_to_stdout() -> None:
    out = io.StringIO()
    assert main(["--version"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().startswith("lambdactl ")
    out = io.StringIO()
    assert main(["--help"], stdout=out, stderr=io.StringIO()) == 0
    assert "exit codes:" in out.getvalue() and "LAMBDA_HOST" in out.getvalue()
    out = io.StringIO()
    assert main(["delete", "--help"], stdout=out, stderr=io.StringIO()) == 0
    assert "--yes" in out.getvalue()
