"""Anonymous floods against the shared limits, on a real daemon: stalled uploads against
the memory for request bodies, idle connections against the daemon's file descriptors.

The daemon runs under `prlimit --nofile=400:600` (a soft limit below the hard one, as
systemd gives services 1024 of 524288) with an 8 MiB body budget and 2 MiB bodies, so
the floods are small enough for a test and still go past every limit."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdad.fds import FD_RESERVE
from tests.support.daemon import Lambdad, wait_for
from tests.support.gateway import connect
from tests.support.metrics import sample

MIB = 1024 * 1024
SOFT, HARD = 400, 600
CAP = (HARD - FD_RESERVE) // 2  # the gateway's connection cap once the limit is raised
BODY = 2 * MIB


@pytest.fixture(scope="module")
def daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    started = Lambdad(extra_args=["--wheelhouse", str(wheelhouse),
                                  "--max-buffered-bodies", "8", "--max-body-size", "2",
                                  "--body-timeout", "60"])
    started.command_prefix = ["prlimit", f"--nofile={SOFT}:{HARD}", "--"]
    try:
        started.start()
        started.deploy("echo")
        yield started
    finally:
        started.close()


def _stall(daemon: Lambdad) -> socket.socket:
    """A POST of a 2 MiB body that stops one byte short: the body_memory attack."""
    sock = connect(daemon)
    sock.sendall(f"POST / HTTP/1.1\r\nHost: echo.localhost\r\nContent-Length: {BODY}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode())
    with contextlib.suppress(OSError):  # a refused one may be closed before it all went
        sock.sendall(b"x" * (BODY - 1))
    return sock


def _answer(sock: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_stalled_uploads_cannot_pass_the_body_budget(daemon: Lambdad) -> None:
    """300 connections each stalling 1 byte short of 6 MiB took the daemon from 61 MiB to
    1.8 GiB. With an 8 MiB budget (1 MiB kept for small bodies) three 2 MiB bodies are
    buffered; every further one is answered 503 with Retry-After before it is read."""
    stalled, refused = [], []
    try:
        for _ in range(8):
            sock = _stall(daemon)
            sock.settimeout(1.0)
            try:
                first = sock.recv(65536)  # a buffered body gets no answer: it waits
            except TimeoutError:
                stalled.append(sock)
                continue
            sock.settimeout(10)
            refused.append(first + _answer(sock))
            sock.close()
        assert len(stalled) == 3 and len(refused) == 5, (len(stalled), refused[:1])
        for out in refused:
            head, _, body = out.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), out[:300]
            assert b"retry-after: 2" in head.lower() and b"connection: close" in head.lower()
            assert b'"error": "unavailable"' in body and b"max_buffered_bodies" in body
        assert sample(daemon, "lambdad_gateway_buffered_body_bytes") == 3 * BODY
        assert sample(daemon, "lambdad_gateway_buffered_body_limit_bytes") == 8 * MIB
        assert sample(daemon, "lambdad_gateway_refused_total", reason="body_budget") >= 5
        # An ordinary request goes through while the large ones hold what they may.
        reply = daemon.http("echo", method="POST", body=b'{"still": "served"}',
                            headers={"Content-Type": "application/json"})
        assert reply.status == 200, reply.body
        assert b"served" in reply.body
        assert sample(daemon, "lambdad_gateway_buffered_body_peak_bytes") <= 8 * MIB
    finally:
        for sock in stalled:
            sock.close()
    # Connections that end give their bytes back.
    assert wait_for(lambda: sample(daemon, "lambdad_gateway_buffered_body_bytes") == 0,
                    timeout=10)


def _open_idle(daemon: Lambdad) -> socket.socket | None:
    """One complete request, then idle (kept open for the keep-alive timeout); None if the
    gateway closed the connection instead of answering."""
    sock = connect(daemon, timeout=10)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: nope.localhost\r\n\r\n")
        answer = sock.recv(4096)
    except OSError:
        answer = b""
    if answer.startswith(b"HTTP/1.1 404 "):
        return sock
    sock.close()
    return None


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


@pytest.mark.slow
def test_idle_connections_cannot_lock_out_the_control_api(daemon: Lambdad) -> None:
    """~990 idle keep-alive connections under systemd's 1024 soft limit used to leave
    lambdad without descriptors: EMFILE for the control API, deploys and the gateway, and
    1,400 log lines. Now the soft limit is raised to the hard one, the gateway stops at
    what that leaves room for, and the rest of the daemon keeps working."""
    assert daemon.process is not None
    assert _limits(daemon.process.pid) == (HARD, HARD)
    log = daemon.log()
    assert f"soft limit raised from {SOFT} to {HARD}" in log
    assert f"gateway: at most {CAP} client connections" in log
    assert sample(daemon, "lambdad_gateway_connection_limit") == CAP
    started = time.monotonic()
    held: list[socket.socket] = []
    closed = 0
    try:
        for _ in range(HARD):  # more than the daemon has descriptors for
            sock = _open_idle(daemon)
            if sock is None:
                closed += 1
            else:
                held.append(sock)
        assert len(held) == CAP and closed == HARD - CAP, (len(held), closed)
        # One more client is closed at once, not left hanging.
        with connect(daemon, timeout=10) as extra:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: echo.localhost\r\n\r\n")
            assert _answer(extra) == b""
        # The control API, instances, Docker and the build spool still have descriptors.
        listed = daemon.cli("list", timeout=60)
        assert listed.code == 0 and "echo" in listed.stdout, listed.stderr
        invoked = daemon.cli("invoke", "echo", "--data", '{"during": "flood"}', timeout=60)
        assert invoked.code == 0 and "flood" in invoked.stdout, invoked.stderr
        deployed = daemon.cli("deploy", str(Path(__file__).parents[2] / "functions" / "greet"),
                              timeout=180)
        assert deployed.code == 0, deployed.stderr
        # A client of the flood still gets served on its own connection.
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: echo.localhost\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    assert wait_for(lambda: sample(daemon, "lambdad_gateway_connections") == 0, timeout=10)
    assert daemon.http("echo").status == 200
    assert daemon.http("greet", "/?name=ops").status == 200
    # The log is not flooded: at most one refusal line a second, and no EMFILE at all.
    seconds = time.monotonic() - started
    log = daemon.log()
    refusals = [line for line in log.splitlines() if "connection refused:" in line]
    assert 1 <= len(refusals) <= seconds + 1, len(refusals)
    assert "Too many open files" not in log and "out of system resource" not in log
