"""Validation of uploaded code archives, before a single byte is extracted.

Pure logic over `tarfile` headers: every member is checked against the rules and
the caps, and the first violation is an error that names the member. Extraction
re-applies Python's `data` filter as a second line of defence.
"""

from __future__ import annotations

import copy
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lambdad.errors import InvalidArgument, PayloadTooLarge

MANIFEST = "lambda.toml"
DOCKERFILE = "Dockerfile"
REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class TarLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 250 * 1024 * 1024
    max_name_bytes: int = 1024


@dataclass(frozen=True)
class TarSummary:
    members: int
    unpacked_bytes: int
    files: frozenset[str]


def normalize(name: str) -> str:
    """Strips a leading './' and trailing '/' the way tar writers differ on them."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def check_member(member: tarfile.TarInfo, seen_files: set[str]) -> str:
    """Returns the member's normalized name or raises InvalidArgument."""
    raw = member.name
    name = normalize(raw)
    if "\x00" in raw:
        raise InvalidArgument(f"archive member {raw!r}: NUL byte in name")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise InvalidArgument(f"archive member {raw!r}: absolute path")
    if ".." in raw.split("/"):
        raise InvalidArgument(f"archive member {raw!r}: '..' in path")
    if name in ("", ".") and not member.isdir():
        raise InvalidArgument(f"archive member {raw!r}: the folder itself must be a directory")
    if name and posixpath.normpath(name) != name:
        raise InvalidArgument(f"archive member {raw!r}: not a normalized path ('.' or '//')")
    if member.ischr() or member.isblk():
        raise InvalidArgument(f"archive member {raw!r}: device files are not allowed")
    if member.isfifo():
        raise InvalidArgument(f"archive member {raw!r}: fifos are not allowed")
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            raise InvalidArgument(
                f"archive member {raw!r}: symlink to absolute path {target!r}"
            )
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == ".." or resolved.startswith("../"):
            raise InvalidArgument(
                f"archive member {raw!r}: symlink {target!r} points outside the function folder"
            )
    elif member.islnk():
        target = normalize(member.linkname)
        if target.startswith("/") or ".." in target.split("/"):
            raise InvalidArgument(
                f"archive member {raw!r}: hardlink {member.linkname!r} points outside "
                "the function folder"
            )
        if target not in seen_files:
            raise InvalidArgument(
                f"archive member {raw!r}: hardlink to {member.linkname!r}, which is not an "
                "earlier file of the archive"
            )
    elif not (member.isfile() or member.isdir()):
        raise InvalidArgument(f"archive member {raw!r}: unsupported member type")
    return name


def validate(path: Path, limits: TarLimits = TarLimits()) -> TarSummary:
    """Reads every header of the (optionally compressed) tarball at `path`."""
    files: set[str] = set()
    count = 0
    unpacked = 0
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                count += 1
                if count > limits.max_members:
                    raise PayloadTooLarge(
                        f"archive has more than {limits.max_members} members"
                    )
                if len(member.name.encode()) > limits.max_name_bytes:
                    raise InvalidArgument(f"archive member name too long: {member.name[:80]!r}…")
                name = check_member(member, files)
                if member.isfile():
                    unpacked += member.size
                    if unpacked > limits.max_unpacked_bytes:
                        raise PayloadTooLarge(
                            f"archive unpacks to more than {limits.max_unpacked_bytes} bytes"
                        )
                    files.add(name)
    except tarfile.TarError as exc:
        raise InvalidArgument(f"not a valid tar archive: {exc}") from None
    except (EOFError, OSError, ValueError) as exc:  # truncated gzip, bad header fields
        raise InvalidArgument(f"not a valid tar archive: {exc}") from None
    if count == 0:
        raise InvalidArgument("archive is empty")
    return TarSummary(members=count, unpacked_bytes=unpacked, files=frozenset(files))


def read_member(path: Path, name: str, max_bytes: int = 1024 * 1024) -> str | None:
    """Returns the text of a top-level file such as lambda.toml, or None."""
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            if normalize(member.name) == name and member.isfile():
                if member.size > max_bytes:
                    raise InvalidArgument(f"{name} is larger than {max_bytes} bytes")
                handle = archive.extractfile(member)
                if handle is None:
                    return None
                try:
                    return handle.read().decode()
                except UnicodeDecodeError:
                    raise InvalidArgument(f"{name} is not UTF-8 text") from None
    return None


# Extraction filters came in 3.11.4; Debian 12's system Python is 3.11.2.
HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def extract(path: Path, dest: Path, *, use_filter: bool = HAS_DATA_FILTER) -> None:
    """Extracts an archive that `validate` accepted."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, mode="r:*") as archive:
            if use_filter:
                archive.extractall(dest, filter="data")
            else:
                archive.extractall(dest, members=_sanitized(archive, dest),
                                   numeric_owner=True)
    except (OSError, tarfile.TarError) as exc:  # a shape validate() let through
        raise InvalidArgument(f"cannot extract the archive: {exc}") from None


def _sanitized(archive: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """What the `data` filter does, for Pythons without it.

    `check_member` judges names on paper; here each member is checked against what is
    already on disk (extraction is lazy, so earlier members exist): its path and, for a
    link, its target must resolve inside `dest` with every symlink followed. A chain such
    as `a -> .`, `b -> a/a/a/../../..` passes on paper but not here. Members are then
    owned by us, without setuid/setgid/sticky bits or group/world write.
    """
    root = os.path.realpath(dest)
    seen: set[str] = set()
    for member in archive.getmembers():
        name = check_member(member, seen)
        _must_stay_inside(root, os.path.join(root, name), member.name)
        if member.issym():
            target = os.path.join(root, os.path.dirname(name), member.linkname)
            _must_stay_inside(root, target, member.name)
        elif member.islnk():
            _must_stay_inside(root, os.path.join(root, normalize(member.linkname)), member.name)
        if member.isfile():
            seen.add(name)
        safe = copy.copy(member)
        safe.uid, safe.gid, safe.uname, safe.gname = os.getuid(), os.getgid(), "", ""
        if safe.isdir():
            safe.mode = 0o755
        elif safe.isfile() or safe.islnk():
            safe.mode = (safe.mode & 0o755) | 0o600
        yield safe


def _must_stay_inside(root: str, path: str, member: str) -> None:
    resolved = os.path.realpath(path)
    if resolved != root and not resolved.startswith(root + os.sep):
        raise InvalidArgument(
            f"archive member {member!r}: resolves outside the function folder"
        )
