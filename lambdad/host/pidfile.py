"""The pid file: cleared of a dead daemon's pid at start, written once ready, removed
last (and only while it still holds this process's pid)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from lambdad.host import StartupError

PID_TEXT = re.compile(rb"[0-9]{1,10}\n?")


def read_pid_file(path: Path) -> int | None:
    """The pid a regular file at `path` holds; None if there is none. Read without following
    a link or blocking (a FIFO put there would hang lambdad) and 32 bytes at most (a link to
    /dev/zero): pid_file may be in a folder others write in, and lambdad often runs as root."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 32)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if PID_TEXT.fullmatch(text) else None


def clear_stale_pid_file(path: Path) -> None:
    """Removes the pid file an earlier lambdad left (killed, it could not): this one holds
    the socket now, so that daemon is gone, and its pid may be another program's already,
    which a script would signal until this one is ready (or for good if this start fails).
    A folder or a file holding something else than a pid is refused, never removed: the
    setting names the wrong path (the database, say)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"cannot check the pid file {path}: {exc.strerror}") from None
    if stat.S_ISDIR(found.st_mode) or (stat.S_ISREG(found.st_mode) and found.st_size > 0
                                       and read_pid_file(path) is None):
        raise StartupError(f"pid_file {path} exists and is not a pid file; remove it or set "
                           "pid_file to another path")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot remove the stale pid file {path}: {exc.strerror}") from None


def write_pid_file(path: Path) -> None:
    """This process's id, written whole (a temporary file renamed over the old one), so a
    script never reads half a number or a stale one mid-write. The temporary file gets an
    unguessable name and is created, never opened through a link."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise StartupError(f"cannot write the pid file {path}: {exc.strerror}") from None


def remove_pid_file(path: Path) -> None:
    """Removes the pid file if it still holds this process's id (never another's)."""
    if read_pid_file(path) == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


class PidFile:
    """First to start, last to stop: a stale pid goes at once, this one is removed at the
    very end. (The pid is written by the daemon's last step, once it is ready.)"""

    name = "pid file"

    def __init__(self, path: Path | None) -> None:
        self.path = path

    async def start(self) -> None:
        if self.path is not None:
            clear_stale_pid_file(self.path)

    async def stop(self) -> None:
        if self.path is not None:
            remove_pid_file(self.path)
