"""What pip's process is given: its environment and its command line (pure but for
finding lambdad's pip and hashing the operator's pip.conf files).

pip gets only requirement strings that `requirements.parse_requirements` produced, as
arguments: never the uploaded file. Its environment holds PATH, the operator's pip
settings (PIP_* variables, the system and user pip.conf, proxies and CA bundles) and
nothing else of lambdad's; HOME, TMPDIR and the pip cache are in a private work folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lambdad.build.limits import BuildLimits
from lambdad.build.wheeltags import TargetPlatform
from lambdad.errors import BuildFailed

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
