"""`make run` driven as a script or a service manager would: lambdad's pid file, signals."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import daemon_env, free_port, runtime_image_args

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.docker]


class MakeRun:
    """`make run` with a state folder, ports and image prefix of its own. `-o` keeps make
    from rebuilding the shared runtime image or reinstalling the venv: those steps are not
    what is tested, and other tests use that image."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pid_file = state_dir / "run" / "lambdad.pid"
        self.log = state_dir / "make-run.log"
        args = " ".join([
            "--config", "none", "--state-dir", str(state_dir),
            "--gateway-listen", f"127.0.0.1:{free_port()}", "--grpc-listen", "none",
            "--admin-listen", "none", "--cell-pool-size", "0", "--drain-grace", "1",
            "--image-prefix", f"lambda-test-{secrets.token_hex(4)}", *runtime_image_args(),
        ])
        with self.log.open("wb") as out:
            self.make = subprocess.Popen(
                ["make", "--no-print-directory", "-o", "runtime-image",
                 "-o", ".venv/bin/.installed", "run", f"ARGS={args}"],
                cwd=ROOT, env=daemon_env(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def lambdad_pid(self, timeout: float = 120) -> int:
        """The pid in the pid file, once lambdad is ready."""
        deadline = time.monotonic() + timeout
        while not (self.pid_file.exists() and self.pid_file.read_text().endswith("\n")):
            assert self.make.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.1)
        return int(self.pid_file.read_text())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.make.poll() is None:
            os.killpg(self.make.pid, signal.SIGKILL)
            self.make.wait()


@pytest.fixture
def make_run() -> Iterator[MakeRun]:
    state_dir = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))
    run = MakeRun(state_dir)
    try:
        yield run
    finally:
        run.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_pid_file_names_lambdad_and_its_signals_stop_it_cleanly(
    make_run: MakeRun, sig: signal.Signals
) -> None:
    pid = make_run.lambdad_pid()
    assert parent_of(pid) == make_run.make.pid  # exec'd by the recipe's shell: make's child
    assert b"lambdad" in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert oct(make_run.pid_file.stat().st_mode & 0o777) == "0o644"
    os.kill(pid, sig)
    assert make_run.make.wait(timeout=60) == 0, make_run.output()  # lambdad's status
    assert "lambdad stopped" in make_run.output()
    assert not make_run.pid_file.exists()  # removed once everything stopped


def test_sigterm_to_make_reaches_lambdad(make_run: MakeRun) -> None:
    pid = make_run.lambdad_pid()
    make_run.make.send_signal(signal.SIGTERM)
    assert make_run.make.wait(timeout=60) == -signal.SIGTERM  # make dies of it, after lambdad
    assert not running(pid)
    assert "lambdad stopped" in make_run.output()
    assert not make_run.pid_file.exists()
