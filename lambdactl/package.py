"""Pack a function folder into a deterministic gzip tarball.

The same folder (same contents and mtimes) always gives the same bytes, so the
sha256 in the deploy header identifies the code. Owners are zeroed and modes
normalised to 0644/0755 because the image runs the code as a non-root user.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import stat
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lambdactl.exitcodes import CliError, ExitCode

IGNORE_FILE = ".lambdaignore"
MANIFEST = "lambda.toml"
ALWAYS_IGNORED_DIRS = frozenset({".git", "__pycache__"})
SPOOL_MAX = 8 * 1024 * 1024


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _translate(pattern: str) -> str:
    """gitignore glob -> regex over a relative posix path."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            if body[0] in "!^":
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            if pattern[i] == "\\" and i + 1 < n:
                i += 1
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def parse_ignore(lines: Iterable[str]) -> list[IgnoreRule]:
    """Parse .lambdaignore lines (gitignore syntax, minus trailing-space escapes)."""
    rules = []
    for raw in lines:
        line = raw.rstrip("\r\n").rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        elif line.startswith("\\"):
            line = line[1:]  # "\#file", "\!file"
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line  # a slash at the start or middle anchors to the folder
        line = line.lstrip("/")
        if not anchored and not line.startswith("**/"):
            line = "**/" + line
        rules.append(IgnoreRule(re.compile(_translate(line), re.DOTALL), negate, dir_only))
    return rules


def is_ignored(rules: list[IgnoreRule], rel: str, is_dir: bool) -> bool:
    """The last matching rule wins. Parents are handled by the walk, which prunes them."""
    ignored = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.regex.fullmatch(rel):
            ignored = not rule.negate
    return ignored


def load_ignore(root: Path) -> list[IgnoreRule]:
    try:
        text = (root / IGNORE_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {root / IGNORE_FILE}: {exc}", ExitCode.INVALID) from None
    return parse_ignore(text.splitlines())


@dataclass(frozen=True)
class Entry:
    rel: str
    path: Path
    kind: str  # "dir", "file" or "symlink"
    linkname: str = ""


def _symlink_target(root_real: str, path: Path, rel: str) -> tuple[str, str]:
    """(the link text to store, the path it names relative to the folder).

    The text names the link's final target directly, so a chain `a -> b -> c` is stored
    as `a -> c`: lambdad accepts only links to files and folders that come earlier in the
    archive and are not links themselves. Links that leave the folder are refused."""
    target = os.readlink(path)
    resolved = os.path.realpath(path)
    if not resolved.startswith(root_real + os.sep):
        where = "at the function folder itself" if resolved == root_real else (
            "outside the function folder")
        raise CliError(
            f"symlink {rel} -> {target} points {where}; "
            "copy the file in or list the link in .lambdaignore",
            ExitCode.INVALID,
        )
    return (os.path.relpath(resolved, os.path.realpath(path.parent)),
            os.path.relpath(resolved, root_real).replace(os.sep, "/"))


def walk(root: Path, rules: list[IgnoreRule] | None = None) -> Iterator[Entry]:
    """Entries to pack: folders and files sorted, parents before children, then the
    symlinks (sorted), each after what it names."""
    rules = load_ignore(root) if rules is None else rules
    root_real = os.path.realpath(root)
    links: list[tuple[Entry, str]] = []
    packed: set[str] = set()

    def visit(folder: Path, prefix: str) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise CliError(f"cannot read {folder}: {exc.strerror}", ExitCode.INVALID) from None
        for name in names:
            path = folder / name
            rel = prefix + name
            mode = path.lstat().st_mode
            is_dir = stat.S_ISDIR(mode)
            if is_dir and name in ALWAYS_IGNORED_DIRS:
                continue
            if rel != MANIFEST and is_ignored(rules, rel, is_dir):
                continue
            if stat.S_ISLNK(mode):
                linkname, names_path = _symlink_target(root_real, path, rel)
                links.append((Entry(rel, path, "symlink", linkname), names_path))
            elif is_dir:
                packed.add(rel)
                yield Entry(rel, path, "dir")
                yield from visit(path, rel + "/")
            elif stat.S_ISREG(mode):
                packed.add(rel)
                yield Entry(rel, path, "file")
            else:
                raise CliError(
                    f"{rel} is not a regular file, folder or symlink; "
                    "remove it or list it in .lambdaignore",
                    ExitCode.INVALID,
                )

    yield from visit(root, "")
    for entry, names_path in links:
        if names_path not in packed:
            raise CliError(
                f"symlink {entry.rel} -> {os.readlink(entry.path)} names {names_path}, which "
                "is not packed (missing, ignored, or not a file or folder); "
                "copy the file in or list the link in .lambdaignore",
                ExitCode.INVALID,
            )
        yield entry


@dataclass
class Package:
    file: IO[bytes]  # positioned at 0; the caller closes it
    size: int
    sha256: str
    entries: int


def _tarinfo(entry: Entry, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.rel)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif entry.kind == "symlink":
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.linkname
    else:
        info.type, info.size = tarfile.REGTYPE, st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def pack(root: Path) -> Package:
    """Tar + gzip the folder into a spooled temp file and digest it."""
    if not root.is_dir():
        raise CliError(f"{root} is not a folder", ExitCode.INVALID)
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)  # noqa: SIM115
    count = 0
    try:
        # mtime=0 and no file name keep the gzip header reproducible.
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for entry in walk(root):
                count += 1
                if entry.kind == "file":
                    with open(entry.path, "rb") as f:
                        tar.addfile(_tarinfo(entry, os.fstat(f.fileno())), f)
                else:
                    tar.addfile(_tarinfo(entry, entry.path.lstat()))
        digest = hashlib.sha256()
        out.seek(0)
        while chunk := out.read(1 << 16):
            digest.update(chunk)
        size = out.tell()
        out.seek(0)
    except OSError as exc:
        out.close()
        raise CliError(f"cannot package {root}: {exc}", ExitCode.INVALID) from None
    except BaseException:
        out.close()
        raise
    return Package(out, size, digest.hexdigest(), count)


def read_manifest(root: Path) -> dict[str, Any]:
    """lambda.toml as a dict ({} when absent); the daemon validates the rest."""
    try:
        with open(root / MANIFEST, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"invalid {root / MANIFEST}: {exc}", ExitCode.INVALID) from None
    except OSError as exc:
        raise CliError(f"cannot read {root / MANIFEST}: {exc.strerror}", ExitCode.INVALID) from None


def function_name(root: Path, explicit: str | None) -> str:
    """--name, else the manifest's `name`, else the folder's name."""
    if explicit:
        return explicit
    name = read_manifest(root).get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise CliError(
                f"`name` in {root / MANIFEST} must be a non-empty string", ExitCode.INVALID
            )
        return name
    return root.resolve().name
