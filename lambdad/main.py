"""`lambdad` entry point."""

from __future__ import annotations

import asyncio
import logging
import sys

from lambdad.config import parse_config


def configure_logging(level: str) -> None:
    """One line per event on stderr, in logfmt-ish form that journald keeps as is."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging(config.log_level)
    from lambdad.daemon import Daemon, StartupError, install_signal_handlers

    async def run() -> None:
        daemon = Daemon(config)
        install_signal_handlers(daemon)
        await daemon.run()

    try:
        asyncio.run(run())
    except StartupError as exc:
        logging.getLogger("lambdad").error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
