"""The open-files limit, the gateway's share of it, and quiet EMFILE logs (pure parts)."""

from __future__ import annotations

import errno
import logging
import resource
import subprocess
import sys

import pytest

from lambdad.fds import (
    FD_RESERVE,
    MIN_CONNECTIONS,
    QuietEmfile,
    Throttle,
    connection_cap,
    out_of_descriptors,
)


@pytest.mark.parametrize(("nofile", "configured", "cap"), [
    (1024, 1024, (1024 - FD_RESERVE) // 2),  # systemd's default soft limit: 384, not 1024
    (524288, 1024, 1024),  # raised to systemd's default hard limit: as configured
    (65536, 50000, (65536 - FD_RESERVE) // 2),
    (270, 1024, MIN_CONNECTIONS),  # absurdly low: a floor, and the start log says why
    (resource.RLIM_INFINITY, 1024, 1024),
])
def test_the_gateway_never_takes_the_descriptors_the_rest_needs(
    nofile: int, configured: int, cap: int
) -> None:
    assert connection_cap(nofile, configured) == cap
    if nofile >= FD_RESERVE + 2 * MIN_CONNECTIONS and nofile != resource.RLIM_INFINITY:
        assert 2 * cap + FD_RESERVE <= nofile  # even with every connection busy


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    """In a child started with a low soft limit, as systemd starts services (1024)."""
    code = ("import resource; from lambdad.fds import raise_nofile; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 512)); "
            "print(raise_nofile(), resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "before=64, soft=512, hard=512, error=''" in out and "(512, 512)" in out


def test_throttle_lets_one_a_second_through_and_counts_the_rest() -> None:
    throttle = Throttle(1.0)
    assert throttle.allow(100.0) == 0
    assert [throttle.allow(100.0 + i / 10) for i in range(1, 10)] == [None] * 9
    assert throttle.allow(101.0) == 9
    assert throttle.allow(101.5) is None
    assert throttle.allow(105.0) == 1


def _record(message: str, created: float, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, (),
                               (type(exc), exc, None) if exc else None)
    record.created = created
    return record


def test_emfile_floods_become_one_line_a_second_with_a_count() -> None:
    quiet = QuietEmfile()
    emfile = OSError(errno.EMFILE, "Too many open files")
    accept = "socket.accept() out of system resource\nsocket: <asyncio.TransportSocket fd=7>"
    kept = [r for r in (_record(accept, 10 + i / 1000, emfile) for i in range(500))
            if quiet.filter(r)]
    assert len(kept) == 1
    assert kept[0].getMessage() == ("socket.accept() out of system resource: [Errno 24] "
                                    "Too many open files")
    assert kept[0].exc_info is None  # no traceback per line
    later = _record("Unexpected [OSError] raised by servicer method", 11.5, emfile)
    assert quiet.filter(later)
    assert later.getMessage().endswith("(499 more like this since the last such line)")
    # Everything else passes untouched, tracebacks and all.
    other = _record("something else", 11.6, ValueError("x"))
    assert quiet.filter(other) and other.exc_info is not None
    assert not out_of_descriptors(_record("disk full", 1, OSError(errno.ENOSPC, "full")))
    assert out_of_descriptors(_record("open failed: [Errno 24] Too many open files", 1))
