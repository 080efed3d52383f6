"""lambdad's pid file after a kill -9: scripts signal the pid it names (often as root), so it
must never name another program. A real lambdad, killed and started again."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from tests.support.daemon import ROOT, Lambdad


def test_a_pid_file_left_by_kill_9_never_names_another_program(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    pid_file = daemon.state_dir / "run" / "lambdad.pid"
    assert daemon.process is not None
    assert pid_file.read_text() == f"{daemon.process.pid}\n"
    daemon.stop(signal.SIGKILL)
    # The dead daemon's pid goes to another program, as pids are reused.
    other = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text(f"{other.pid}\n")
        holder = socket.socket()  # the next start fails halfway: its gateway port is taken
        holder.bind(("127.0.0.1", daemon.gateway_port))
        holder.listen()
        try:
            with pytest.raises(RuntimeError, match="cannot listen for HTTP"):
                daemon.start()
        finally:
            holder.close()
        assert not pid_file.exists() or pid_file.read_text() != f"{other.pid}\n"
        daemon.start()
        assert daemon.process is not None
        assert pid_file.read_text() == f"{daemon.process.pid}\n"
        assert daemon.stop() == 0
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()


def test_a_second_daemon_on_the_same_state_leaves_the_first_s_pid_file(
    fresh_lambdad: Lambdad
) -> None:
    daemon = fresh_lambdad
    pid_file = daemon.state_dir / "run" / "lambdad.pid"
    assert daemon.process is not None
    second = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert second.returncode == 1 and "another lambdad is already running" in second.stderr
    assert pid_file.read_text() == f"{daemon.process.pid}\n"
