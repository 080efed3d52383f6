"""Fault injection for crash-consistency tests: LAMBDAD_FAULT=<point> makes the daemon
die like kill -9 when a deploy reaches that point. Unset in normal operation."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("lambdad.control")

_FAULT = os.environ.get("LAMBDAD_FAULT", "")


def fault_point(name: str) -> None:
    if name == _FAULT:
        log.error("LAMBDAD_FAULT=%s: dying here on purpose", name)
        os._exit(137)
