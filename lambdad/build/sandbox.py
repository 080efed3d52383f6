"""Runs pip where a deploy cannot reach the host's secrets, and within limits.

pip gets only requirement strings that `requirements.parse_requirements` produced, as
arguments: never the uploaded file. It still resolves what a deployer names, from an
index anyone can publish to, so it runs

- in a clean environment: PATH, the operator's pip settings (PIP_* variables, the system
  and user pip.conf, proxies and CA bundles) and nothing else of lambdad's; HOME, TMPDIR
  and the pip cache in a private work folder; cwd an empty folder; stdin /dev/null;
- as an unprivileged uid (`build_user`, 65534 by default) with no supplementary groups
  when lambdad runs as root, so it cannot read root-only files (the API key, the state
  folder) or reach the Docker socket;
- under a wall-clock deadline (the build's), RLIMIT_AS (the build's memory), RLIMIT_CPU,
  RLIMIT_FSIZE and no core files, with its output capped; the whole process group is
  killed when it ends, fails or overruns.

This module holds the sandbox's work folders and `install`, which runs pip through it;
`pipcommand` (the environment and the command line) and `pipdiagnosis` (why pip failed)
are pure and tested in memory, `piprun` supervises pip's process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lambdad.build.depcache import tree_size
from lambdad.build.limits import MIB, BuildLimits, OutputCap
from lambdad.build.pipcommand import (
    WorkDirs,
    as_user,
    pip_command,
    pip_folder,
    user_config_files,
    wheel_check_command,
)
from lambdad.build.pipdiagnosis import (
    NOISE,
    PipResult,
    conflict_causes,
    explain_failure,
    missing_wheel,
)
from lambdad.build.piprun import drops_privileges, interpreter, run_pip
from lambdad.build.wheeltags import TargetPlatform
from lambdad.errors import BuildFailed

# A failed resolution names at most this many packages to check for a missing wheel.
MAX_WHEEL_CHECKS = 4


def workdir_prefix(spool: Path) -> str:
    """The name every pip work folder for builds in `spool` (one state folder's) starts
    with in the system temp folder: a start removes what a killed daemon left there, and
    nothing of another daemon's."""
    tag = hashlib.sha256(str(spool.resolve()).encode()).hexdigest()[:12]
    return f"lambdad-pip-{tag}-"


def remove_leftover_workdirs(spool: Path) -> int:
    """Removes the work folders a killed daemon with this spool left; how many."""
    removed = 0
    for leftover in Path(tempfile.gettempdir()).glob(workdir_prefix(spool) + "*"):
        shutil.rmtree(leftover, ignore_errors=True)  # never follows a link
        removed += 1
    return removed


def make_workdirs(build_dir: Path, limits: BuildLimits) -> WorkDirs:
    """A private work folder: under the build folder when pip runs as lambdad's user; in
    the system temp folder, owned by the build uid, when it runs as another (the state
    folder is 0750 and must stay closed to it)."""
    if drops_privileges(limits):
        root = Path(tempfile.mkdtemp(prefix=workdir_prefix(build_dir.parent)))
    else:
        root = build_dir / "pip"
        root.mkdir(mode=0o700)
    work = WorkDirs(root)
    for folder in work.all():
        folder.mkdir(mode=0o700)
    for source, relative in user_config_files(os.environ):
        with contextlib.suppress(OSError):
            if source.is_file():
                copy = work.home / relative
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)
    if drops_privileges(limits):
        for top, dirs, files in os.walk(root):
            for path in [top, *(os.path.join(top, n) for n in (*dirs, *files))]:
                os.lchown(path, limits.user, limits.user)
    return work


def reclaim(work: WorkDirs) -> None:
    """Takes the work folder back from the build uid before lambdad reads it."""
    if os.geteuid() == 0:
        os.chown(work.root, 0, 0)
        os.chmod(work.root, 0o700)


class _Pip:
    """One build's pip runs: same sandbox, same interpreter, same deadline."""

    def __init__(self, work: WorkDirs, limits: BuildLimits, target: TargetPlatform,
                 wheelhouse: Path | None, deadline: float, build_dir: Path) -> None:
        self.work, self.limits, self.target = work, limits, target
        self.wheelhouse, self.deadline = wheelhouse, deadline
        self.watch = [work.root, build_dir]  # pip writes to one, lambdad copies to the other
        self.pip_path = pip_folder()
        self.python = interpreter(limits.user if drops_privileges(limits) else 0,
                                  self.pip_path)

    def run(self, build: Callable[..., list[str]], first: object, folder: Path,
            output: OutputCap) -> PipResult:
        command = build(first, folder, self.limits, target=self.target,
                        wheelhouse=self.wheelhouse, python=self.python,
                        pip_path=self.pip_path,
                        timeout_s=max(1.0, self.deadline - time.monotonic()))
        if drops_privileges(self.limits):
            command = as_user(command, self.limits.user)
        return run_pip(command, self.work, self.limits, self.deadline, output, self.watch)

    def without_wheels(self, causes: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Which of a failed resolution's dependencies have no wheel for the target at all."""
        missing = []
        for requirement, who in causes[:MAX_WHEEL_CHECKS]:
            if time.monotonic() >= self.deadline:
                break
            quiet = OutputCap(lambda _line: None, 0, self.limits.line_chars, skip=NOISE)
            checked = self.run(wheel_check_command, requirement, self.work.tmp / "check",
                               quiet)
            if checked.code != 0 and missing_wheel(checked.tail) is not None:
                missing.append((requirement, who))
        return missing


def check_plain_tree(folder: Path) -> None:
    """BuildFailed unless `folder` holds only folders and regular files with one link each,
    which is all pip makes of wheels. What lambdad does next trusts that: it hard-links the
    tree into the build cache, chmods every file (`normalize_modes`) and copies it into the
    image, so a symlink or a hard link to a file outside (made by anything that ran as pip's
    user) would be followed, shared or made readable."""
    for top, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = os.path.join(top, name)
            info = os.lstat(path)
            plain = stat.S_ISDIR(info.st_mode) or (
                stat.S_ISREG(info.st_mode) and info.st_nlink == 1)
            if not plain:
                raise BuildFailed(
                    "requirements.txt: pip left something other than plain files and "
                    f"folders ({os.path.relpath(path, folder)}); nothing was installed")


def _check_room(folder: Path, size: int, limits: BuildLimits) -> None:
    """BuildFailed unless `size` more bytes in `folder` leave build_min_free_disk free."""
    if limits.min_free_disk_bytes <= 0:
        return
    with contextlib.suppress(OSError):
        info = os.statvfs(folder)
        free = info.f_bavail * info.f_frsize
        if free - size < limits.min_free_disk_bytes:
            raise BuildFailed(
                f"requirements.txt: resolving stopped: the resolved packages "
                f"({size // MIB} MiB) would leave {folder} {max(0, free - size) // MIB} MiB "
                f"free, less than the {limits.min_free_disk_bytes // MIB} MiB builds must "
                "leave (build_min_free_disk)")


def install(requirements: list[str], build_dir: Path, deps: Path, limits: BuildLimits, *,
            target: TargetPlatform, wheelhouse: Path | None, deadline: float,
            emit: Callable[[str], None]) -> None:
    """Resolves `requirements` to wheels in a sandboxed pip and leaves them in `deps`."""
    work = make_workdirs(build_dir, limits)
    try:
        pip = _Pip(work, limits, target, wheelhouse, deadline, build_dir)
        output = OutputCap(emit, limits.output_lines, limits.line_chars, tail=40, skip=NOISE)
        result = pip.run(pip_command, requirements, work.target, output)
        if result.code != 0 or result.timed_out or result.disk_short:
            stopped = result.timed_out or result.disk_short
            causes = [] if stopped else conflict_causes(result.tail)
            raise BuildFailed(explain_failure(result, limits, target,
                                              pip.without_wheels(causes)))
        reclaim(work)
        check_plain_tree(work.target)
        if drops_privileges(limits):
            # A copy, so every file of the image's deps is lambdad's, not the build uid's:
            # only if the build folder's file system keeps its floor with it.
            _check_room(build_dir, tree_size(work.target), limits)
            shutil.copytree(work.target, deps, symlinks=True)
        else:
            try:
                os.rename(work.target, deps)
            except OSError as exc:  # the artifacts on another file system than the spool
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copytree(work.target, deps, symlinks=True)
    finally:
        reclaim(work)
        shutil.rmtree(work.root, ignore_errors=True)
