"""Attacks on issue 16's client side (gateway/stream.py's Protocol, the one-pass header
rules, the admission-once shortcut) from the caller's side, on the real engine: a caller
that never reads its answer, and what a function or a client can make cross."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for

BODY_TIMEOUT = 2  # seconds: also how long a client may leave an answer untaken

BIG = (
    "def handler(event, context):\n"
    "    return {'statusCode': 200, 'headers': {'content-type': 'text/plain'},\n"
    "            'body': 'x' * (16 * 1024 * 1024)}\n"
)


@pytest.fixture(scope="module")
def daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    started = Lambdad(extra_args=["--wheelhouse", str(wheelhouse),
                                  "--body-timeout", str(BODY_TIMEOUT)])
    try:
        started.start()
        yield started
    finally:
        started.close()


def _deploy(daemon: Lambdad, folder: Path, handler: str, manifest: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(handler)
    (folder / "lambda.toml").write_text(manifest)
    result = daemon.deploy(folder)
    assert result.code == 0, result.stderr


def _rss_kib(daemon: Lambdad) -> int:
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_connections(daemon: Lambdad) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/metrics",
                                timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("lambdad_gateway_connections "):
                return int(float(line.split()[1]))
    raise AssertionError("no lambdad_gateway_connections")


HOGS = 6


def test_callers_that_never_read_their_answers_cannot_hold_memory_or_connections(
        daemon: Lambdad, tmp_path: Path) -> None:
    """Slow-read attack: GET a 16 MiB answer and never read it, on several connections.
    The gateway waited on the write for ever (no deadline on a client taking its
    answer): each connection kept its place under the cap and what lambdad had of the
    answer. Now a client that takes nothing of its answer for `--body-timeout` is cut."""
    _deploy(daemon, tmp_path / "hog", BIG, 'name = "hog"\n')
    assert daemon.http("hog").status == 200  # warm, and the body is fine for a reader
    base = _open_connections(daemon)
    before = _rss_kib(daemon)
    hogs = []
    try:
        for _ in range(HOGS):
            hog = socket.create_connection(("127.0.0.1", daemon.gateway_port), timeout=30)
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.sendall(b"GET / HTTP/1.1\r\nHost: hog.localhost\r\n\r\n")
            hogs.append(hog)
        time.sleep(1.5)
        grown = _rss_kib(daemon) - before  # back-pressure: not the answers, a buffer each
        assert grown < HOGS * 4 * 1024, f"lambdad grew {grown} KiB for unread answers"
        closed = wait_for(lambda: _open_connections(daemon) <= base, timeout=BODY_TIMEOUT + 13)
        assert closed, f"{_open_connections(daemon) - base} unread connections still open"
        answer = daemon.http("hog")
        assert answer.status == 200, (answer.status, answer.body[:200])
    finally:
        for hog in hogs:
            hog.close()
