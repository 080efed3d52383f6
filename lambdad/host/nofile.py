"""The open-files limit, raised, and the gateway's connection cap fitted under it."""

from __future__ import annotations

import logging

from lambdad.config import Config
from lambdad.fds import FD_RESERVE, connection_cap, raise_nofile

log = logging.getLogger("lambdad")


def gateway_connection_cap(config: Config) -> int:
    """Raises the open-files soft limit to the hard one, then fits the gateway's
    connection cap under it: idle clients must never take the descriptors the control
    API, instances, Docker and SQLite need (see lambdad.fds)."""
    limit = raise_nofile()
    if limit.error:
        log.warning("open files: cannot raise the soft limit %d to the hard limit %d: %s",
                    limit.before, limit.hard, limit.error)
    elif limit.soft != limit.before:
        log.info("open files: soft limit raised from %d to %d (the hard limit)",
                 limit.before, limit.soft)
    cap = connection_cap(limit.soft, config.max_connections)
    if cap < config.max_connections:
        log.warning("gateway: at most %d client connections (max_connections is %d, but the "
                    "open-files limit is %d: %d are kept for the control API, instances, "
                    "Docker and SQLite, and each connection may need 2); raise LimitNOFILE",
                    cap, config.max_connections, limit.soft, FD_RESERVE)
    else:
        log.info("gateway: at most %d client connections (open-files limit %d)", cap,
                 limit.soft)
    return cap
