"""The options several lambdactl commands share, and how flags' text becomes values.

Like the rest of lambdactl.parser: neither grpc nor rich.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lambdad.functions.overrides import OVERRIDE_FIELDS

if TYPE_CHECKING:  # typeshed makes it generic; at run time it is a plain class
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UINT32_MAX = 2**32 - 1  # the control API's whole numbers (versions, seconds, MiB, counts)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    return _whole_number(text, allow_zero=True)


def positive_int(text: str) -> int:
    return _whole_number(text, allow_zero=False)


def _whole_number(text: str, *, allow_zero: bool) -> int:
    """A whole number from 0 or 1 up to what the control API's uint32 fields hold."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        rule = "must be 0 or more" if allow_zero else "must be greater than 0"
        raise argparse.ArgumentTypeError(f"{rule}: {text!r}")
    return _within_uint32(value, text)


def _within_uint32(value: int, text: str) -> int:
    """Every whole number the control API takes is a uint32: a larger one made protobuf
    raise ValueError while building the request, and lambdactl died with a traceback."""
    if value > UINT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {UINT32_MAX}: {text!r}")
    return value


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not _ENV_KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY made of letters, digits and _: {text!r}"
        )
    return key, value


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
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
    add_output_option(parser, suppress=suppress)


def add_output_option(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default=argparse.SUPPRESS if suppress else "text",
        help="output format: human-readable text, or one JSON value on stdout (default: text)",
    )


_READERS: dict[str, Callable[[str], object]] = {
    "positive_int": positive_int, "non_negative_int": non_negative_int,
    "positive_float": positive_float, "env": env_pair,
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The settings both `deploy` and `config` can change (lambdad/functions/overrides.py)."""
    for setting in OVERRIDE_FIELDS:
        extra: dict[str, Any] = {}
        if setting.kind in _READERS:
            extra["type"] = _READERS[setting.kind]
        if setting.kind == "env":  # repeatable, each KEY=VALUE adds one
            extra.update(action="append", default=[])
        parser.add_argument(setting.flag, choices=setting.choices, metavar=setting.metavar,
                            help=setting.help, **extra)
