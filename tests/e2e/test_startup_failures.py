"""lambdad started where one of its addresses is taken: it must say which and exit.

It used to print nothing and hang for good (its Docker event thread kept the process
alive, SIGTERM went to a loop that had stopped), with whatever it had started still
running. Real process, real Docker engine, a real socket holding the address.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad, daemon_env

# The requirement is an exit within about 2 s; a loaded CI machine gets slack, and the
# old code never exited at all.
EXIT_WITHIN = 10.0


@pytest.fixture
def daemon() -> Iterator[Lambdad]:
    daemon = Lambdad()
    try:
        yield daemon
    finally:
        daemon.close()


def _occupy(daemon: Lambdad, listener: str) -> tuple[socket.socket, str]:
    """Holds the listener's address as another program would; returns it as named."""
    if listener == "unix":
        daemon.socket_path.parent.mkdir(parents=True)
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(str(daemon.socket_path))
        holder.listen()
        return holder, str(daemon.socket_path)
    port = {"gateway": daemon.gateway_port, "grpc": daemon.grpc_port,
            "admin": daemon.admin_port}[listener]
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder, f"127.0.0.1:{port}"


def _processes_in(state_dir: Path) -> list[int]:
    """Processes whose command line names this daemon's state folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(state_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("listener", ["gateway", "grpc", "admin", "unix"])
def test_a_busy_address_fails_the_start_at_once(daemon: Lambdad, listener: str) -> None:
    holder, address = _occupy(daemon, listener)
    started = time.monotonic()
    process = subprocess.Popen(daemon.command(), cwd=ROOT, env=daemon_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"lambdad still running {EXIT_WITHIN} s after start with {address} "
                    f"taken:\n{stderr}")
    finally:
        holder.close()  # (a Unix socket's file stays: a closed socket does not unlink it)
    elapsed = time.monotonic() - started
    assert process.returncode != 0
    assert address in stderr and "cannot start" in stderr, stderr
    assert elapsed < EXIT_WITHIN
    # Nothing left: no container with its label (stem cells included), no process.
    label = f"lambda.daemon={daemon.daemon_id}"
    assert daemon.docker.containers.list(all=True, filters={"label": label}) == []
    assert _processes_in(daemon.state_dir) == []
    # Its own socket is gone; another daemon's, on the other hand, is left alone.
    assert daemon.socket_path.exists() == (listener == "unix")
