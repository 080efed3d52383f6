"""lambdad's command line, made from the settings table (argparse-manpage reads
`build_parser` to write lambdad.8)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from lambdad.config.settings import SETTINGS, Setting

EPILOG = """\
configuration:
  Every setting above has three spellings: the flag --gateway-listen, the environment
  variable LAMBDAD_GATEWAY_LISTEN and the key gateway_listen in the TOML config file.
  Precedence: flags > environment > config file > defaults. The config file is --config,
  else $LAMBDAD_CONFIG, else $CONFIGURATION_DIRECTORY/lambdad.toml under systemd, else
  /etc/lambdad/lambdad.toml when it exists; 'none' reads no file. Sizes are MiB, times
  are seconds, listen addresses are HOST:PORT or 'none'.

exit codes:
  0   stopped cleanly
  1   could not start or failed while running (the log says why)
  2   usage error on the command line
  78  configuration error (EX_CONFIG); the unit does not restart on it"""


def _flag_type(setting: Setting) -> Callable[[str], Any]:
    """argparse wants ArgumentTypeError to print a usage error instead of a traceback."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.key
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambdad",
        description="The lambda daemon: builds functions into images, runs them in hardened "
        "containers, serves them through an HTTP gateway and exposes a gRPC control API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # one name per setting; --check-config reports flags as given
    )
    parser.add_argument("--version", action="version", version=f"lambdad {version()}")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="TOML config file, or 'none' (default: $LAMBDAD_CONFIG, else "
                        "/etc/lambdad/lambdad.toml when it exists)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration from all sources, print the "
                        "effective settings as TOML with where each came from, and exit "
                        "(0: valid, 78: not)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in SETTINGS:
        group = groups.get(setting.group)
        if group is None:
            group = groups[setting.group] = parser.add_argument_group(setting.group)
        group.add_argument(setting.flag, dest=setting.key, type=_flag_type(setting),
                           default=argparse.SUPPRESS, help=setting.help,
                           metavar=_metavar(setting))
    return parser


def _metavar(setting: Setting) -> str | None:
    if setting.choices:
        return "{" + ",".join(setting.choices) + "}"
    return setting.metavar


def version() -> str:
    """lambdad's version, imported late (the package imports this module)."""
    from lambdad import __version__

    return __version__
