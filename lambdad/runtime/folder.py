"""An instance's socket folder, the one host folder a function can write, used safely.

`STATE/i/<id>` is bind-mounted read-write at `/run/lambda` so that the process in the
container can create `invoke.sock` there. Whatever the function puts in the folder is
hostile until checked: lambdad never opens, connects to or deletes anything in it by
path. It holds a directory fd opened (O_NOFOLLOW) when it made the folder, and

- connects only through `InstanceFolder.connect`: `openat(invoke.sock, O_PATH |
  O_NOFOLLOW)`, `fstat` the fd (a socket, owned by the container's uid, one link), then
  `connect("/proc/self/fd/N")`. That magic link resolves to the very inode that was
  checked, so a rename or a symlink put in place afterwards changes nothing: the kernel
  never looks the name up again;
- locks the folder (`fchmod 0755` through the fd; lambdad owns it, the container's uid
  has no capability) once the socket appears, and from then on refuses it unless it
  holds exactly `invoke.sock`: after the lock the function can create, rename or remove
  nothing in it;
- while waiting for the socket, bounds what the folder holds (entries and bytes,
  counted fd-based without following links): a Dockerfile function's code runs from
  the start and could otherwise fill the host's disk;
- removes it fd-based without following links (`remove_tree`); what lambdad's own user
  cannot remove (a folder the function made 0700 before the lock) is left for a
  cleanup container (`DockerBackend.clean_folder`).

The verdicts (`socket_problem`, `locked_problem`, `start_problem`) are pure functions
of what `fstat`/`scandir` returned, unit-tested in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "invoke.sock"
CONTAINER_UID = 10001  # the user every instance runs as (docker_backend.CONTAINER_USER)
OPEN_MODE = 0o777  # until the socket appears: the container's user creates it
LOCKED_MODE = 0o755  # from then on: lambdad's user only
# What a folder may hold before its socket appears. The runtime binds a temporary
# socket and renames it; a Dockerfile function's server needs no more than a few.
MAX_START_ENTRIES = 32
MAX_START_BYTES = 1 << 20
MAX_REMOVE_DEPTH = 64  # deeper than this is left to the cleanup container

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PARENT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # i/ or c/: lambdad's own


class Refused(Exception):
    """The folder holds something lambdad will not use; the instance must be discarded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Pure verdicts


def kind(mode: int) -> str:
    """What a file is, for a sentence: "a socket", "a symbolic link", ..."""
    for test, name in ((stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return f"a file of unknown type {stat.S_IFMT(mode):o}"


def socket_problem(mode: int, uid: int, nlink: int, *, owner: int = CONTAINER_UID) -> str | None:
    """Why lambdad must not connect to what it opened as `invoke.sock`, or None.

    Only a socket the function bound itself, under this one name, is acceptable: a link
    (symbolic or hard) could lead to any socket on the host that lambdad's user reaches,
    the Docker API's included.
    """
    if not stat.S_ISSOCK(mode):
        return f"{SOCKET_NAME} is {kind(mode)}, not a socket"
    if uid != owner:
        return f"{SOCKET_NAME} belongs to uid {uid}, not to the function's uid {owner}"
    if nlink != 1:
        return f"{SOCKET_NAME} has {nlink} hard links"
    return None


@dataclass(frozen=True)
class Entry:
    """One name in the folder, as `fstatat(AT_SYMLINK_NOFOLLOW)` saw it."""

    name: str
    mode: int
    uid: int
    nlink: int


def locked_problem(entries: Sequence[Entry], *, owner: int = CONTAINER_UID) -> str | None:
    """Why a locked folder is refused: it must hold exactly a good `invoke.sock`."""
    others = sorted(e.name for e in entries if e.name != SOCKET_NAME)
    if others:
        shown = ", ".join(repr(name) for name in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        return f"the socket folder holds {shown}{more} besides {SOCKET_NAME}"
    found = [e for e in entries if e.name == SOCKET_NAME]
    if not found:
        return f"the socket folder has no {SOCKET_NAME}"
    sock = found[0]
    return socket_problem(sock.mode, sock.uid, sock.nlink, owner=owner)


@dataclass(frozen=True)
class Usage:
    """What a folder holds, counted without following links; counting stops past the cap."""

    entries: int
    bytes: int
    unreadable: str = ""  # a directory in it that lambdad could not open


def start_problem(usage: Usage, *, max_entries: int = MAX_START_ENTRIES,
                  max_bytes: int = MAX_START_BYTES) -> str | None:
    """Why a folder is refused while its instance starts: too much in it, or hidden."""
    if usage.unreadable:
        return f"the socket folder holds a folder lambdad cannot read ({usage.unreadable!r})"
    if usage.entries > max_entries:
        return (f"the socket folder holds more than {max_entries} entries before its socket "
                "appeared")
    if usage.bytes > max_bytes:
        return (f"the socket folder holds {usage.bytes} bytes before its socket appeared "
                f"(at most {max_bytes})")
    return None


def stored_bytes(size: int, blocks: int) -> int:
    """What a file counts for: its allocated 512-byte blocks, or its size if larger (a
    sparse file is refused as if written)."""
    return max(size, blocks * 512)


# I/O


class InstanceFolder:
    """The socket folder of one instance (or stem cell), through a directory fd kept open
    from creation until `close`; see the module's docstring."""

    def __init__(self, path: Path, fd: int, *, owner: int = CONTAINER_UID) -> None:
        self.path = path
        self.fd = fd
        self.owner = owner
        self.locked = False

    @classmethod
    def create(cls, parent: Path, name: str, *, owner: int = CONTAINER_UID) -> InstanceFolder:
        """Makes `parent/name` (a folder lambdad owns) and opens it, open for the
        container's user to create its socket in."""
        parent_fd = os.open(parent, _PARENT_FLAGS)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        try:
            os.fchmod(fd, OPEN_MODE)  # mkdir's mode is filtered by the umask
        except BaseException:
            os.close(fd)
            raise
        return cls(parent / name, fd, owner=owner)

    @classmethod
    def open(cls, parent: Path, name: str, *, owner: int = CONTAINER_UID) -> InstanceFolder:
        """An existing folder (an instance adopted after a restart); a link is refused."""
        parent_fd = os.open(parent, _PARENT_FLAGS)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        return cls(parent / name, fd, owner=owner)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def open_socket(self) -> int:
        """An O_PATH fd of `invoke.sock`, checked; FileNotFoundError while there is none,
        Refused when it is not a socket the function bound."""
        fd = os.open(SOCKET_NAME, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
            problem = socket_problem(st.st_mode, st.st_uid, st.st_nlink, owner=self.owner)
            if problem is not None:
                raise Refused(problem)
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def connect(self) -> socket.socket:
        """A stream connected to the checked socket: the only way lambdad connects to an
        instance. OSError when nothing listens (yet), Refused as `open_socket`."""
        fd = self.open_socket()
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.setblocking(False)
                # The magic link names the inode behind `fd`: no path lookup in the folder.
                await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{fd}")
            except BaseException:
                sock.close()
                raise
        finally:
            os.close(fd)
        return sock

    def usage(self, limit: int = MAX_START_ENTRIES) -> Usage:
        return scan(self.fd, limit)

    def lock(self) -> None:
        """Makes the folder unwritable for the function, then checks that it holds exactly
        its socket; Refused otherwise. Safe to call again."""
        if os.geteuid() == CONTAINER_UID:
            raise Refused(f"lambdad runs as uid {CONTAINER_UID}, the functions' own uid: "
                          "the socket folder cannot be locked against them")
        os.fchmod(self.fd, LOCKED_MODE)
        self.locked = True
        problem = locked_problem(entries(self.fd, MAX_START_ENTRIES), owner=self.owner)
        if problem is not None:
            raise Refused(problem)

    def seal(self) -> None:
        """Locks without checking: stops a refused instance from creating more."""
        with contextlib.suppress(OSError):
            os.fchmod(self.fd, LOCKED_MODE)
            self.locked = True


def entries(dir_fd: int, limit: int) -> list[Entry]:
    """The first `limit + 1` names in a folder, stat'ed without following links."""
    found: list[Entry] = []
    with os.scandir(dir_fd) as listing:  # scandir works on a dup and rewinds the fd
        for item in listing:
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append(Entry(item.name, st.st_mode, st.st_uid, st.st_nlink))
            if len(found) > limit:
                break
    return found


def scan(dir_fd: int, limit: int) -> Usage:
    """Entries and bytes under a folder, sub-folders included, without following links;
    stops once past `limit` entries."""
    count = 0
    total = 0
    unreadable = ""
    pending = [os.dup(dir_fd)]
    try:
        while pending and count <= limit and not unreadable:
            fd = pending.pop()
            try:
                with os.scandir(fd) as listing:
                    for item in listing:
                        count += 1
                        if count > limit:
                            break
                        try:
                            st = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        total += stored_bytes(st.st_size, st.st_blocks)
                        if stat.S_ISDIR(st.st_mode):
                            try:
                                pending.append(os.open(item.name, _DIR_FLAGS, dir_fd=fd))
                            except FileNotFoundError:
                                continue
                            except OSError:
                                unreadable = item.name
                                break
            except PermissionError:
                unreadable = unreadable or "."
            finally:
                os.close(fd)
    finally:
        for fd in pending:
            os.close(fd)
    return Usage(count, total, unreadable)


def remove_tree(parent: Path, name: str) -> bool:
    """Removes `parent/name` and everything in it, fd-based and never following a link;
    True when nothing is left. Blocking: run it in a thread.

    shutil.rmtree is fd-based too, but opens sub-folders with plain O_RDONLY (a folder
    swapped for a FIFO blocks the thread) and recurses without a bound.
    """
    try:
        parent_fd = os.open(parent, _PARENT_FLAGS)
    except FileNotFoundError:
        return True
    try:
        _remove(parent_fd, name, 0)
        try:
            os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return False
    finally:
        os.close(parent_fd)


def _remove(dir_fd: int, name: str, depth: int) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        return
    if depth >= MAX_REMOVE_DEPTH:
        return
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return  # e.g. a folder the function made 0700: the cleanup container's
    try:
        if not os.path.samestat(st, os.fstat(fd)):
            return  # swapped since the stat: not the folder that was checked
        try:
            with os.scandir(fd) as listing:
                names = [item.name for item in listing]
        except OSError:
            names = []
        for child in names:
            _remove(fd, child, depth + 1)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=dir_fd)
