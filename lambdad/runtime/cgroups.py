"""A container's cgroup freezer, written directly to thaw it in microseconds.

`docker unpause` goes dockerd -> containerd -> shim -> runc and takes 12-48 ms on this
host; the write it ends in (`freezer.state` THAWED on cgroup v1, `cgroup.freeze` 0 on
v2) takes microseconds. lambdad (root on the host) makes that write itself when it can
and uses the Docker API otherwise (rootless Docker, lambdad in a container with its own
cgroup namespace, no freezer): `freezer_file` answers None and the caller falls back.

Where the file is comes only from the kernel and Docker, never from the function: the
cgroup of the container's init process (/proc/<pid>/cgroup, written by the kernel; a
hardened container cannot move itself, its cgroupfs is read-only), under a cgroup mount
of lambdad's own mount namespace (/proc/self/mountinfo). The path is accepted only when
its last component is the container's own cgroup as Docker names it (`<id>` with the
cgroupfs driver, `docker-<id>.scope` with systemd's), it has no `..` (another cgroup
namespace), and (checked at I/O time, `find`) the directory is owned by lambdad's user.

Docker's own view is left behind by a direct thaw (it still says Paused, and runc's
resume refuses a thawed container: "container not paused"); `freeze` re-freezes it
directly so that an API unpause then brings Docker's view back (runtime/forward.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

V1_THAWED = b"THAWED"
V1_FROZEN = b"FROZEN"


@dataclass(frozen=True)
class Mounts:
    """Where the cgroup hierarchies are mounted, each only when its root is the
    hierarchy's root (a mount of a sub-tree cannot map /proc/<pid>/cgroup paths)."""

    freezer: Path | None = None  # cgroup v1 hierarchy with the freezer controller
    unified: Path | None = None  # cgroup v2


@dataclass(frozen=True)
class FreezerFile:
    path: Path
    version: int  # 1: freezer.state (THAWED/FROZEN); 2: cgroup.freeze (0/1)

    @property
    def thawed(self) -> bytes:
        return V1_THAWED if self.version == 1 else b"0"

    @property
    def frozen(self) -> bytes:
        return V1_FROZEN if self.version == 1 else b"1"


def parse_mounts(mountinfo: str) -> Mounts:
    """The freezer (v1) and unified (v2) mount points from /proc/self/mountinfo."""
    freezer: Path | None = None
    unified: Path | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, mount_point, fstype, options = fields[3], fields[4], tail[0], tail[2]
        if root != "/":
            continue
        if fstype == "cgroup2" and unified is None:
            unified = Path(_unescape(mount_point))
        elif fstype == "cgroup" and "freezer" in options.split(",") and freezer is None:
            freezer = Path(_unescape(mount_point))
    return Mounts(freezer=freezer, unified=unified)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def own_cgroup(path: str, container_id: str) -> bool:
    """`path` (as /proc/<pid>/cgroup shows it) is the container's own cgroup."""
    if not path.startswith("/") or not container_id:
        return False
    parts = path.split("/")[1:]
    if not parts or any(p in ("", ".", "..") for p in parts):
        return False
    return parts[-1] in (container_id, f"docker-{container_id}.scope")


def freezer_file(proc_cgroup: str, mounts: Mounts, container_id: str) -> FreezerFile | None:
    """The freezer file of the container whose init's /proc/<pid>/cgroup is `proc_cgroup`;
    None when it cannot be written directly (then the Docker API thaws). The v1 freezer
    wins on a hybrid host: there the v2 hierarchy has no controllers and Docker freezes
    through v1."""
    v1: str | None = None
    v2: str | None = None
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if not sep:
            continue
        if number == "0" and controllers == "":
            v2 = path
        elif "freezer" in controllers.split(","):
            v1 = path
    if v1 is not None:
        if mounts.freezer is None or not own_cgroup(v1, container_id):
            return None
        return FreezerFile(mounts.freezer / v1.lstrip("/") / "freezer.state", 1)
    if v2 is not None and mounts.unified is not None and own_cgroup(v2, container_id):
        return FreezerFile(mounts.unified / v2.lstrip("/") / "cgroup.freeze", 2)
    return None


# I/O


def find(pid: int, container_id: str) -> FreezerFile | None:
    """The freezer file of the container whose init is `pid` (from Docker), when lambdad
    may write it: it exists, lambdad's user owns its directory and may write it."""
    if pid <= 0:
        return None
    try:
        proc_cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        mounts = parse_mounts(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    found = freezer_file(proc_cgroup, mounts, container_id)
    if found is None:
        return None
    try:
        owner = os.stat(found.path.parent).st_uid
    except OSError:
        return None
    if owner != os.geteuid() or not os.access(found.path, os.W_OK):
        return None
    return found


def write(freezer: FreezerFile, value: bytes) -> None:
    """One write of the freezer file (OSError when the cgroup is gone)."""
    fd = os.open(freezer.path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def is_frozen(freezer: FreezerFile) -> bool:
    """Frozen all through (v1 goes FREEZING first; v2 says so in cgroup.events)."""
    if freezer.version == 1:
        return freezer.path.read_bytes().strip() == V1_FROZEN
    events = (freezer.path.parent / "cgroup.events").read_text()
    return "frozen 1" in events.splitlines()


def freeze(freezer: FreezerFile, timeout: float = 1.0) -> bool:
    """Freezes the cgroup and waits until every task is frozen; False (thawed again)
    when that did not happen within `timeout` (a task stuck in the kernel).

    The freeze is written again while the cgroup says FREEZING, as runc does: a v1
    freeze walks the tasks once, and a task forked meanwhile can escape it, leaving the
    cgroup FREEZING for good. A function forking in a loop made one write fail 10-15 %
    of the time here (the settle then failed); rewritten, none failed."""
    write(freezer, freezer.frozen)
    deadline = time.monotonic() + timeout
    while not is_frozen(freezer):
        if time.monotonic() >= deadline:
            write(freezer, freezer.thawed)
            return False
        time.sleep(0.001)
        write(freezer, freezer.frozen)
    return True
