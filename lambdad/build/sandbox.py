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

The environment and the command line are pure functions, tested in memory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lambdad.build.depcache import tree_size
from lambdad.build.requirements import plain_requirement
from lambdad.build.wheeltags import TargetPlatform
from lambdad.errors import BuildFailed

MIB = 1024 * 1024
# A failed resolution names at most this many packages to check for a missing wheel.
MAX_WHEEL_CHECKS = 4


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use: pip and `docker build` together."""

    timeout_s: float = 600.0
    memory_bytes: int = 2048 * MIB
    cpu_shares: int = 512  # half a container's default weight: builds yield to instances
    file_bytes: int = 2048 * MIB  # the largest file pip may write (a wheel, an .so)
    output_lines: int = 2000  # lines of pip or build output shown; the rest is counted
    line_chars: int = 1000
    user: int = 65534  # uid (and gid) pip runs as when lambdad is root
    max_image_bytes: int = 4096 * MIB  # the largest image a build may leave
    min_free_disk_bytes: int = 1024 * MIB  # a build stops below this on Docker's data root,
    # and pip below this on its work folder's and the build folder's file systems


# Variables the operator's pip configuration may live in; all else of lambdad's is dropped.
_PASSED = frozenset({
    "PATH", "XDG_CONFIG_DIRS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY",
    "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
})
# Set by us; the operator's own values for these would point pip back at lambdad's HOME.
_OURS = frozenset({"PIP_CACHE_DIR", "PIP_CONFIG_FILE", "PIP_TARGET", "PIP_SRC",
                   "PIP_BUILD_DIR", "PIP_LOG", "PIP_LOG_FILE"})


@dataclass(frozen=True)
class WorkDirs:
    """The private folders of one pip run."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"

    @property
    def target(self) -> Path:
        return self.root / "target"

    def all(self) -> tuple[Path, ...]:
        return (self.home, self.tmp, self.cache, self.cwd, self.target)


def user_config_files(env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """(lambdad's user pip config file, where it goes under the private HOME)."""
    home = Path(env.get("HOME") or "~").expanduser()
    xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    found = [(xdg / "pip" / "pip.conf", ".config/pip/pip.conf"),
             (home / ".pip" / "pip.conf", ".pip/pip.conf")]
    named = env.get("PIP_CONFIG_FILE")
    if named and named != os.devnull:
        found.append((Path(named), "pip-config-file.conf"))
    return found


def pip_environment(parent: Mapping[str, str], work: WorkDirs) -> dict[str, str]:
    """What pip's process sees: the operator's pip settings, private folders, nothing else."""
    env = {k: v for k, v in parent.items()
           if (k in _PASSED or k.startswith("PIP_")) and k not in _OURS}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if parent.get("PIP_CONFIG_FILE") == os.devnull:
        env["PIP_CONFIG_FILE"] = os.devnull
    elif parent.get("PIP_CONFIG_FILE"):
        env["PIP_CONFIG_FILE"] = str(work.home / "pip-config-file.conf")
    env.update({
        "HOME": str(work.home),
        "XDG_CONFIG_HOME": str(work.home / ".config"),
        "XDG_CACHE_HOME": str(work.cache),
        "TMPDIR": str(work.tmp),
        "PIP_CACHE_DIR": str(work.cache),
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


# Runs in the child, as its uid: limits first, then lambdad's own pip in the same process
# (from its folder, so that any Python 3 the build uid can run will do).
#
# `--only-binary=:all:` rules only what pip finds on an index. A wheel's metadata may
# name a dependency by URL (`Requires-Dist: x @ https://host/x.tar.gz`, or `file:///a/dir`),
# which pip fetches and builds, running its build backend on the host, whenever the
# parent came from anywhere but PyPI's own file host (a mirror, a private index, the
# wheelhouse). So every distribution pip prepares must be a wheel that pip found itself
# (no `original_link`, the URL a requirement named); anything else fails before pip
# downloads, unpacks or builds it. A pip without these names fails closed.
#
# pip runs in a session of its own (so its whole group can be killed), which a killed
# lambdad would leave running, writing to the disk unwatched: it gets SIGKILL when
# lambdad (argv[5]) dies, and stops at once if that has already happened.
_CHILD = """\
import ctypes, os, resource, runpy, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[5]):
    sys.exit("lambdad is gone")
memory, cpu, fsize = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
sys.path.insert(0, sys.argv[4])
from pip._internal.exceptions import InstallationError
from pip._internal.operations.prepare import RequirementPreparer
prepare = RequirementPreparer.prepare_linked_requirement

def index_wheels_only(self, req, *args, **kwargs):
    if req.original_link is not None or not req.link.is_wheel:
        parent = getattr(req.comes_from, "name", None)
        raise InstallationError(
            f"{req.name or 'a requirement'}{f' (needed by {parent})' if parent else ''} "
            f"refers to {req.link}, not to a wheel on the package index: lambda installs "
            "only those (never a URL, a path or a source distribution)")
    return prepare(self, req, *args, **kwargs)

RequirementPreparer.prepare_linked_requirement = index_wheels_only
sys.argv = ["pip", *sys.argv[6:]]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


# pip's configuration files besides the user's (which `user_config_files` finds).
_SYSTEM_CONFIGS = ("/etc/pip.conf",)


def pip_settings(env: Mapping[str, str]) -> dict[str, str]:
    """What of the operator's pip configuration can change a resolution: PIP_* variables
    and the contents of every pip.conf pip reads (for the build cache's key)."""
    found = {k: v for k, v in env.items() if k.startswith("PIP_") and k not in _OURS}
    configs = [Path(p) for p in _SYSTEM_CONFIGS]
    configs += [Path(d) / "pip" / "pip.conf"
                for d in (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    configs += [source for source, _ in user_config_files(env)]
    for path in configs:
        with contextlib.suppress(OSError):
            found[f"file:{path}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@functools.cache
def pip_version() -> str:
    try:
        return importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return ""


def pip_folder() -> str:
    """The folder holding lambdad's pip package (found without importing it)."""
    spec = importlib.util.find_spec("pip")
    if spec is None or spec.origin is None:
        raise BuildFailed("pip is not installed beside lambdad; requirements.txt cannot be "
                          "resolved")
    return str(Path(spec.origin).resolve().parent.parent)


def _pip(python: str, limits: BuildLimits, pip_path: str, timeout_s: float | None) -> list[str]:
    cpu = max(1, int(timeout_s if timeout_s is not None else limits.timeout_s))
    return [python, "-I", "-c", _CHILD, str(limits.memory_bytes), str(cpu),
            str(limits.file_bytes), pip_path or pip_folder(), str(os.getpid())]


def _for_target(target: TargetPlatform, wheelhouse: Path | None) -> list[str]:
    options = ["--disable-pip-version-check", "--no-input", "--only-binary=:all:",
               *target.pip_options()]
    if wheelhouse is not None:
        options += ["--no-index", "--find-links", str(wheelhouse)]
    return options


def pip_command(requirements: list[str], folder: Path, limits: BuildLimits, *,
                target: TargetPlatform, wheelhouse: Path | None, python: str = sys.executable,
                pip_path: str = "", timeout_s: float | None = None) -> list[str]:
    """pip for the image's platform, wheels only; the requirements after `--`."""
    return [*_pip(python, limits, pip_path, timeout_s), "install", "--no-compile",
            "--no-warn-script-location", "--target", str(folder),
            *_for_target(target, wheelhouse), "--", *requirements]


def wheel_check_command(requirement: str, folder: Path, limits: BuildLimits, *,
                        target: TargetPlatform, wheelhouse: Path | None,
                        python: str = sys.executable, pip_path: str = "",
                        timeout_s: float | None = None) -> list[str]:
    """pip asked for one requirement alone (no dependencies): fails only when no version
    of it has a wheel for the target."""
    return [*_pip(python, limits, pip_path, timeout_s), "download", "--no-deps",
            "--dest", str(folder), *_for_target(target, wheelhouse), "--", requirement]


_NO_MATCH = re.compile(r"No matching distribution found for (?P<req>\S+)")
_NEEDED_BY = re.compile(
    r"satisfies the requirement (?P<req>\S+) \(from (?!versions:)(?P<who>[^)]+)\)")
_CAUSE = re.compile(r"^\s*(?P<who>\S+ \S+) depends on (?P<req>\S+)")


def missing_wheel(tail: list[str]) -> tuple[str, str] | None:
    """(requirement, who needs it or "") pip found no wheel of, when pip said so itself."""
    needed_by = {m.group("req"): m.group("who") for line in tail
                 if (m := _NEEDED_BY.search(line))}
    for line in tail:
        if found := _NO_MATCH.search(line):
            return found.group("req"), needed_by.get(found.group("req"), "")
    return None


def conflict_causes(tail: list[str]) -> list[tuple[str, str]]:
    """(requirement, who needs it) from pip's "The conflict is caused by" lines, one per
    package: a package without a compatible wheel shows up there as a "conflict".

    A package's metadata wrote those requirements, and each goes to pip again as an
    argument (`wheel_check_command`): only one that requirements.txt could hold (a name,
    extras, versions) is kept, never one pip would open as a path, archive or URL."""
    found: dict[str, tuple[str, str]] = {}
    for line in tail:
        if cause := _CAUSE.match(line):
            # pip prints markers after "; ", so the requirement stops at ";".
            requirement = plain_requirement(cause.group("req").split(";", 1)[0])
            if requirement is None:
                continue
            name = re.split(r"[<>=!~\[;( ]", requirement, maxsplit=1)[0].lower()
            found.setdefault(name, (requirement, cause.group("who")))
    return list(found.values())


# pip lines that say nothing to a deployer (an index folder of the operator's without
# this package).
_NOISE = ("is ignored: it is neither a file nor a directory",)


@dataclass(frozen=True)
class PipResult:
    code: int
    tail: list[str]
    timed_out: bool
    disk_short: str = ""  # why the disk watch stopped pip (build_min_free_disk), or ""


class OutputCap:
    """Passes on the first `lines` lines (each cut to `chars`), then one note; keeps a
    tail for error messages whatever was dropped."""

    def __init__(self, emit: Callable[[str], None], lines: int, chars: int,
                 tail: int = 15, skip: tuple[str, ...] = ()) -> None:
        self._emit = emit
        self._skip = skip
        self._left = lines
        self._chars = chars
        self.dropped = 0
        self.tail: deque[str] = deque(maxlen=tail)

    def line(self, text: str) -> None:
        text = text.rstrip()
        if not text or any(noise in text for noise in self._skip):
            return
        if len(text) > self._chars:
            text = text[: self._chars] + " …"
        self.tail.append(text)
        if self._left > 0:
            self._left -= 1
            self._emit(text)
            if self._left == 0:
                self._emit("(further output is not shown)")
        else:
            self.dropped += 1


def drops_privileges(limits: BuildLimits) -> bool:
    return os.geteuid() == 0 and limits.user != 0


# Tried in order when pip must run as another uid: lambdad's interpreter may live where
# that uid cannot read (a pyenv under /root), the system's usually does not.
FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


# Drops to the build uid, then execs the command. lambdad's own interpreter runs it as
# root, and the uid change happens after exec: a fork() of the daemon itself (which
# subprocess's user= would need) runs gRPC's fork handlers, and those crash the child.
_DROP = """\
import os, sys
uid = int(sys.argv[1])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
    sys.exit("could not drop privileges")
os.execv(sys.argv[2], sys.argv[2:])
"""


def as_user(command: list[str], uid: int) -> list[str]:
    """`command`, run as `uid` (and gid `uid`) without supplementary groups."""
    return [sys.executable, "-I", "-c", _DROP, str(uid), *command]


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

    No user= here: see `_DROP`."""
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


def no_wheel_message(requirement: str, needed_by: str, target: TargetPlatform) -> str:
    who = f" (needed by {needed_by})" if needed_by else ""
    return (f"requirements.txt: no version of {requirement}{who} has a wheel for "
            f"{target.describe()} (or the index has no package of that name); wheels "
            f"tagged {target.describe_tags()} would run. lambda installs wheels only and "
            "never builds a source distribution: pick a version that publishes such a "
            "wheel, or vendor the package into the function folder")


def explain_failure(result: PipResult, limits: BuildLimits, target: TargetPlatform,
                    no_wheel: Sequence[tuple[str, str]] = ()) -> str:
    """The deploy error for a pip run that did not succeed; `no_wheel` lists the
    (requirement, needed by) that checks found without a compatible wheel."""
    where = f"wheels for {target.describe()}"
    if result.disk_short:
        return f"requirements.txt: resolving stopped: {result.disk_short}"
    if result.timed_out:
        return (f"requirements.txt: resolving {where} did not finish within the build "
                f"timeout of {limits.timeout_s:g} s (build_timeout)")
    if result.code in (-signal.SIGXCPU, -signal.SIGKILL):
        return (f"requirements.txt: pip was stopped by the build limits ({limits.timeout_s:g} "
                "s of CPU, build_timeout)")
    if any("MemoryError" in line for line in result.tail):
        return (f"requirements.txt: pip ran out of memory (build_memory = "
                f"{limits.memory_bytes // MIB} MiB)")
    direct = missing_wheel(result.tail)
    if direct is not None:
        return no_wheel_message(*direct, target)
    if no_wheel:
        return "\n".join(no_wheel_message(req, who, target) for req, who in no_wheel)
    return (f"requirements.txt could not be resolved to {where} (pip exited with "
            f"{result.code}):\n" + "\n".join(result.tail))


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
            quiet = OutputCap(lambda _line: None, 0, self.limits.line_chars, skip=_NOISE)
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
        output = OutputCap(emit, limits.output_lines, limits.line_chars, tail=40, skip=_NOISE)
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
            os.rename(work.target, deps)
    finally:
        reclaim(work)
        shutil.rmtree(work.root, ignore_errors=True)
