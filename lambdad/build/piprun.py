"""pip's process: which interpreter runs it, as which uid, and its supervision to the
end, the deadline or the disk floor, after which its whole process group is killed."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lambdad.build.limits import MIB, BuildLimits, OutputCap
from lambdad.build.pipcommand import WorkDirs, as_user, pip_environment
from lambdad.build.pipdiagnosis import PipResult
from lambdad.errors import BuildFailed


def drops_privileges(limits: BuildLimits) -> bool:
    return os.geteuid() == 0 and limits.user != 0


# Tried in order when pip must run as another uid: lambdad's interpreter may live where
# that uid cannot read (a pyenv under /root), the system's usually does not.
FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


@functools.cache
def interpreter(uid: int, pip_path: str) -> str:
    """A Python that `uid` can run and that can import lambdad's pip; BuildFailed if none."""
    if os.geteuid() != 0 or uid == 0:
        return sys.executable
    probe = f"import sys; sys.path.insert(0, {pip_path!r}); import pip"
    for python in dict.fromkeys((sys.executable, *FALLBACK_PYTHONS)):
        if not os.path.isfile(python):
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(as_user([python, "-I", "-c", probe], uid), cwd="/",
                                  env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=30)
            if done.returncode == 0:
                return python
    raise BuildFailed(
        f"pip cannot run as uid {uid} (build_user): neither {sys.executable} nor "
        f"{', '.join(FALLBACK_PYTHONS)} can import pip from {pip_path} as that user; "
        "install lambdad where it can read it, or set build_user")


# How often pip's disk watch measures the free space.
DISK_POLL = 0.25


def disk_shortage(folders: Sequence[Path], floor: int) -> str | None:
    """Why a build must stop: a folder it writes to is on a file system with less than
    `floor` bytes free (build_min_free_disk); None if all have room or cannot be measured."""
    for folder in folders:
        try:
            info = os.statvfs(folder)
        except OSError:
            continue
        free = info.f_bavail * info.f_frsize
        if free < floor:
            return (f"{folder} has {free // MIB} MiB free, less than the {floor // MIB} MiB "
                    "builds must leave (build_min_free_disk)")
    return None


def run_pip(command: list[str], work: WorkDirs, limits: BuildLimits, deadline: float,
            output: OutputCap, watch: Sequence[Path] = ()) -> PipResult:
    """Runs pip to the end, the deadline, or until a folder in `watch` is on a file system
    with less than `build_min_free_disk` free (a wheel unpacks to what it likes: 100 GiB of
    zeros fit in a 100 MB wheel); its whole process group dies either way.

    No user= here: see `pipcommand.as_user`."""
    timed_out = threading.Event()
    stop_watch = threading.Event()
    short: list[str] = []
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=work.cwd, env=pip_environment(os.environ, work), close_fds=True,
        start_new_session=True, umask=0o022,
    ) as proc:

        def kill() -> None:
            if proc.returncode is not None:  # reaped: its id may belong to another now
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        def overrun() -> None:
            timed_out.set()
            kill()

        def watch_disk() -> None:
            while True:
                reason = disk_shortage(watch, limits.min_free_disk_bytes)
                if reason is not None:
                    short.append(reason)
                    kill()
                    return
                if stop_watch.wait(DISK_POLL):
                    return

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), overrun)
        timer.daemon = True
        timer.start()
        watcher = threading.Thread(target=watch_disk, name="pip-disk", daemon=True)
        if watch and limits.min_free_disk_bytes > 0:
            watcher.start()
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.readline(4 * limits.line_chars):
                output.line(chunk.decode("utf-8", errors="replace"))
            # Wait without reaping, so the group's id cannot be reused before it is killed.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            stop_watch.set()
            if watcher.is_alive():
                watcher.join()
            kill()
            code = proc.wait()
        finally:
            stop_watch.set()
            timer.cancel()
            kill()
    return PipResult(code=code, tail=list(output.tail), timed_out=timed_out.is_set(),
                     disk_short=short[0] if short else "")
