"""`lambdad` entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TextIO

from lambdad.config import ConfigError
from lambdad.config.check import check
from lambdad.config.render import effective_toml
from lambdad.config.resolve import Resolved, read_existing, resolve
from lambdad.fds import QuietEmfile

EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus keeps a bad config from looping


def configure_logging(level: str) -> None:
    """One line per event on stderr, in logfmt-ish form that journald keeps as is."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    for handler in logging.getLogger().handlers:  # EMFILE comes in floods: one line a second
        handler.addFilter(QuietEmfile())
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _config_errors(problems: list[str], err: TextIO) -> int:
    for problem in problems:
        print(f"lambdad: configuration error: {problem}", file=err)
    return EX_CONFIG


def check_config(resolved: Resolved, out: TextIO, err: TextIO) -> int:
    """--check-config: the effective settings on stdout, problems on stderr."""
    out.write(effective_toml(resolved))
    problems = check(resolved.config, reach_database=True)
    if problems:
        return _config_errors(problems, err)
    print("lambdad: configuration OK", file=err)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        resolved, args = resolve(argv, os.environ, read_existing)
    except ConfigError as exc:
        return _config_errors(exc.problems, sys.stderr)
    if args.check_config:
        return check_config(resolved, sys.stdout, sys.stderr)
    problems = check(resolved.config)
    if problems:
        return _config_errors(problems, sys.stderr)
    config = resolved.config
    configure_logging(config.log_level)
    from lambdad.daemon import Daemon, install_signal_handlers
    from lambdad.host import StartupError

    async def run() -> None:
        daemon = Daemon(config)
        install_signal_handlers(daemon)
        await daemon.run()

    from lambdad.errors import DatabaseUnavailable

    try:
        asyncio.run(run())
    except (StartupError, DatabaseUnavailable) as exc:  # a setting or a database down: no trace
        logging.getLogger("lambdad").error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a fault, not a setting: its traceback goes with the reason
        logging.getLogger("lambdad").exception("lambdad failed: %s: %s",
                                               type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
