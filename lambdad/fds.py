"""File descriptors: the process's limit, the gateway's share of it, quiet EMFILE logs.

Every client connection costs lambdad a descriptor, and one more (the upstream
connection to an instance) while its request runs. Under systemd's default soft
limit of 1024 and the gateway's default cap of 1024 connections, ~990 idle
keep-alive connections left nothing for the control API, instance folders, Docker or
SQLite: deploys failed with EMFILE and asyncio logged each failed accept a hundred
times over. So lambdad raises its soft limit to the hard one at start, and the
gateway never accepts more connections than the limit leaves room for after a
reserve (`connection_cap`); what EMFILE errors still happen are logged at most once
a second, with a count (`QuietEmfile`).

The arithmetic and the throttle are pure and unit-tested; `raise_nofile` is the one
call that touches the process.
"""

from __future__ import annotations

import errno
import logging
import resource
from dataclasses import dataclass

# Kept for everything but gateway clients: gRPC (listeners, epoll, each control client),
# SQLite (database, WAL, shm), the Docker client's connection pool and event stream,
# function log files, instance folders (a directory fd each) and their log channels,
# stem cells, build spools and pip, the admin listener. Generous on purpose: the
# control API must keep working while the gateway is full.
FD_RESERVE = 256
# Descriptors one gateway connection may hold: itself and an upstream connection.
FDS_PER_CONNECTION = 2
MIN_CONNECTIONS = 16  # below this the gateway is useless; the limit is the problem then


@dataclass(frozen=True)
class NofileLimit:
    before: int  # the soft limit lambdad was started with
    soft: int  # the soft limit now
    hard: int
    error: str = ""  # why it could not be raised, if it could not


def unlimited(value: int) -> bool:
    return value < 0 or value == resource.RLIM_INFINITY


def raise_nofile() -> NofileLimit:
    """Raises RLIMIT_NOFILE's soft limit to the hard limit (no privilege needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or unlimited(soft):
        return NofileLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:  # a seccomp filter, or a hard limit past nr_open
        return NofileLimit(soft, soft, hard, str(exc))
    return NofileLimit(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)


def connection_cap(nofile: int, configured: int) -> int:
    """The gateway's effective connection cap: `configured`, but never more than the
    descriptors left after `FD_RESERVE`, at `FDS_PER_CONNECTION` per connection."""
    if unlimited(nofile):
        return configured
    room = (nofile - FD_RESERVE) // FDS_PER_CONNECTION
    return min(configured, max(MIN_CONNECTIONS, room))


class Throttle:
    """At most one event per `interval` seconds; the rest are counted, not lost.

    `allow(now)` is None for an event to drop, else how many were dropped since the
    last one allowed (0 for the first): the allowed line reports them.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: float | None = None
        self._dropped = 0

    def allow(self, now: float) -> int | None:
        if self._last is not None and now - self._last < self.interval:
            self._dropped += 1
            return None
        self._last = now
        dropped, self._dropped = self._dropped, 0
        return dropped


_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
# asyncio's message for a failed accept (EMFILE, ENFILE, ENOBUFS, ENOMEM); Python 3.11
# logs it once per pending connection, up to a hundred times per wake-up.
_ACCEPT_FAILED = "socket.accept() out of system resource"


def out_of_descriptors(record: logging.LogRecord) -> bool:
    """A log record about running out of descriptors (or of what accept needs)."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
        return True
    text = record.getMessage()
    return _ACCEPT_FAILED in text or "Too many open files" in text


class QuietEmfile(logging.Filter):
    """Lets one out-of-descriptors record a second through, as one line with a count
    of those dropped and no traceback (an EMFILE traceback says nothing the line does
    not); every other record passes untouched. Installed on the daemon's log handler."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.throttle = Throttle(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if not out_of_descriptors(record):
            return True
        dropped = self.throttle.allow(record.created)
        if dropped is None:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage().split("\n", 1)[0]
        if exc is not None and str(exc) not in text:
            text = f"{text}: {exc}"
        if dropped:
            text += f" ({dropped} more like this since the last such line)"
        record.msg, record.args = text, ()
        record.exc_info = record.exc_text = None
        record.stack_info = None
        return True
