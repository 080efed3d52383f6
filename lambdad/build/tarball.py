"""Validation of uploaded code archives, before a single byte is extracted.

Pure logic over `tarfile` headers: every member is checked against the rules and
the caps, and the first violation is an error that names the member. Extraction
re-applies Python's `data` filter as a second line of defence.

Memory is bounded whatever the archive says: `tarfile` reads a GNU long name or link
and a PAX record whole, in one read of the size its header claims (gigabytes, from a
few hundred compressed kilobytes). Validation therefore hands `tarfile` a stream of
its own (`_Guard`) that decompresses in bounded steps, refuses any single read larger
than an extended header may be (64 KiB), and caps the decompressed bytes in total and
relative to the upload's size. Later passes (the manifest, extraction) read only
archives that passed.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import lzma
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lambdad.errors import InvalidArgument, PayloadTooLarge

MANIFEST = "lambda.toml"
DOCKERFILE = "Dockerfile"
REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class TarLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 250 * 1024 * 1024
    max_name_bytes: int = 1024
    max_header_bytes: int = 64 * 1024  # one GNU long name/link or PAX record
    header_bytes_per_member: int = 4096  # headers' share of the decompressed stream
    max_ratio: int = 200  # decompressed / compressed, once past ratio_floor
    ratio_floor: int = 16 * 1024 * 1024

    @property
    def max_stream_bytes(self) -> int:
        """The most a valid archive can decompress to: its data plus its headers."""
        return (self.max_unpacked_bytes + self.max_members * self.header_bytes_per_member
                + 1024 * 1024)


class _Guard:
    """The decompressed archive as `tarfile` reads it, in bounded steps (see the module)."""

    CHUNK = 64 * 1024

    def __init__(self, inner: IO[bytes], compressed: int, limits: TarLimits) -> None:
        self._inner = inner
        self._compressed = max(1, compressed)
        self._limits = limits
        self._max_read = tarfile.BLOCKSIZE * -(-limits.max_header_bytes // tarfile.BLOCKSIZE)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._max_read:
            raise InvalidArgument(
                f"archive has an extended header (a GNU long name or link, or a PAX record) "
                f"of {size} bytes at offset {self._pos}; the limit is "
                f"{self._limits.max_header_bytes // 1024} KiB")
        data = self._inner.read(size)
        self._advance(len(data))
        return data

    def _advance(self, count: int) -> None:
        self._pos += count
        limits = self._limits
        if self._pos > limits.max_stream_bytes:
            raise PayloadTooLarge(
                f"archive decompresses to more than {limits.max_stream_bytes} bytes")
        if self._pos > limits.ratio_floor and self._pos > self._compressed * limits.max_ratio:
            raise PayloadTooLarge(
                f"archive decompresses to more than {limits.max_ratio} times its size")

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._pos + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._pos:
            raise OSError("the archive stream only moves forward")
        while self._pos < target:
            data = self._inner.read(min(self.CHUNK, target - self._pos))
            if not data:
                break
            self._advance(len(data))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._inner.close()


MAX_EXTENDED_CHAIN = 8  # extended headers before one member: a PAX record, long name, link


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile handles a chain of extended headers by recursion, each level holding its
    record: a chain of a thousand 64 KiB records is 64 MiB and a RecursionError. A member
    gets a few; more in a row are refused."""

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        with _chain(tarfile):
            return super()._proc_gnulong(tarfile)  # type: ignore[misc,no-any-return]

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        with _chain(tarfile):
            return super()._proc_pax(tarfile)  # type: ignore[misc,no-any-return]


@contextlib.contextmanager
def _chain(archive: tarfile.TarFile) -> Iterator[None]:
    depth = getattr(archive, "_lambda_chain", 0) + 1
    if depth > MAX_EXTENDED_CHAIN:
        raise InvalidArgument(
            f"archive has more than {MAX_EXTENDED_CHAIN} extended headers (GNU long names or "
            "links, PAX records) in a row")
    archive._lambda_chain = depth  # type: ignore[attr-defined]
    try:
        yield
    finally:
        archive._lambda_chain = depth - 1  # type: ignore[attr-defined]


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """The formats `tarfile.open(mode="r:*")` reads, recognised by their magic bytes."""
    magic = raw.read(6)
    raw.seek(0)
    opened: Any
    if magic.startswith(b"\x1f\x8b"):
        opened = gzip.GzipFile(fileobj=raw, mode="rb")
    elif magic.startswith(b"BZh"):
        opened = bz2.BZ2File(raw, "rb")
    elif magic.startswith(b"\xfd7zXZ\x00") or magic.startswith(b"\x5d\x00\x00"):
        opened = lzma.LZMAFile(raw, "rb")  # noqa: SIM115 (closed by the caller)
    else:
        opened = raw
    return opened  # type: ignore[no-any-return]


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
        with path.open("rb") as raw, _decompressed(raw) as stream:
            guard = _Guard(stream, path.stat().st_size, limits)
            archive = tarfile.TarFile(fileobj=guard, mode="r",  # type: ignore[arg-type]
                                      tarinfo=_BoundedTarInfo)
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
    except (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
        # truncated or corrupt compression, bad header fields
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
