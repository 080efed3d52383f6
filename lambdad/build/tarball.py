"""Reading an uploaded code archive: validation before a single byte is extracted, and
the members lambdad reads itself (lambda.toml).

Every member is judged by `tarrules` (each header, and the tree they build together).
`validate` reports the archive's format (by magic bytes); `extraction.extract` and
`read_member` are handed it and read the same stream (`judged`), judged by the same rules
again, so what is written is what was judged.

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
import gzip
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lambdad.build.tarrules import (
    BZIP2,
    DEFAULT_LIMITS,
    FORMATS,
    GZIP,
    TAR,
    XZ,
    TarLimits,
    TarSummary,
    Tree,
    check_member,
    detect_format,
)
from lambdad.errors import InvalidArgument, PayloadTooLarge

MANIFEST = "lambda.toml"
DOCKERFILE = "Dockerfile"
REQUIREMENTS = "requirements.txt"


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


def _decompressed(raw: IO[bytes], fmt: str) -> IO[bytes]:
    """`raw` decompressed as `fmt`, and only as `fmt`."""
    opened: Any
    if fmt == GZIP:
        opened = gzip.GzipFile(fileobj=raw, mode="rb")
    elif fmt == BZIP2:
        opened = bz2.BZ2File(raw, "rb")
    elif fmt == XZ:
        opened = lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_XZ)  # noqa: SIM115 (closed by the caller)
    elif fmt == TAR:
        opened = raw
    else:
        raise InvalidArgument(f"unknown archive format {fmt!r}; expected one of "
                              f"{', '.join(FORMATS)}")
    return opened  # type: ignore[no-any-return]


@contextlib.contextmanager
def opened(path: Path, fmt: str, limits: TarLimits) -> Iterator[tarfile.TarFile]:
    """The archive at `path` read as `fmt`, through the bounded stream; every error of a
    corrupt or truncated archive becomes InvalidArgument."""
    try:
        with path.open("rb") as raw, _decompressed(raw, fmt) as stream:
            guard = _Guard(stream, path.stat().st_size, limits)
            yield tarfile.TarFile(fileobj=guard, mode="r",  # type: ignore[arg-type]
                                  tarinfo=_BoundedTarInfo)
    except tarfile.TarError as exc:
        raise InvalidArgument(f"not a valid tar archive: {exc}") from None
    except (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
        # truncated or corrupt compression, bad header fields
        raise InvalidArgument(f"not a valid tar archive: {exc}") from None


def judged(archive: tarfile.TarFile, limits: TarLimits) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Every member with its normalized name, each after every rule and cap; the one
    judgement `validate`, `extraction.extract` and `read_member` share."""
    tree = Tree()
    unpacked = 0
    for count, member in enumerate(archive, 1):
        if count > limits.max_members:
            raise PayloadTooLarge(f"archive has more than {limits.max_members} members")
        if len(member.name.encode()) > limits.max_name_bytes:
            raise InvalidArgument(f"archive member name too long: {member.name[:80]!r}…")
        name = check_member(member)
        tree.add(member, name)
        if member.isfile():
            unpacked += member.size
            if unpacked > limits.max_unpacked_bytes:
                raise PayloadTooLarge(
                    f"archive unpacks to more than {limits.max_unpacked_bytes} bytes")
        yield member, name


def validate(path: Path, limits: TarLimits = DEFAULT_LIMITS) -> TarSummary:
    """Reads every header of the (optionally compressed) tarball at `path`."""
    with path.open("rb") as raw:
        fmt = detect_format(raw.read(6))
    files: set[str] = set()
    links: set[str] = set()
    count = 0
    unpacked = 0
    with opened(path, fmt, limits) as archive:
        for member, name in judged(archive, limits):
            count += 1
            if member.isfile():
                unpacked += member.size
                files.add(name)
            elif member.issym():
                links.add(name)
    if count == 0:
        raise InvalidArgument("archive is empty")
    return TarSummary(members=count, unpacked_bytes=unpacked, files=frozenset(files),
                      format=fmt, links=frozenset(links))


def read_member(path: Path, name: str, fmt: str, limits: TarLimits = DEFAULT_LIMITS,
                max_bytes: int = 1024 * 1024) -> str | None:
    """The text of a file such as lambda.toml, read from the archive as `validate` judged
    it (format and rules), or None; a member of that name that is not a regular file is
    refused, never followed."""
    with opened(path, fmt, limits) as archive:
        for member, found in judged(archive, limits):
            if found != name:
                continue
            if not member.isreg():
                raise InvalidArgument(f"{name} must be a regular file, not a "
                                      f"{'symlink' if member.issym() else 'link or folder'}")
            if member.size > max_bytes:
                raise InvalidArgument(f"{name} is larger than {max_bytes} bytes")
            handle = archive.extractfile(member)
            if handle is None:
                return None
            data = b""
            while len(data) < member.size and (chunk := handle.read(_CHUNK)):
                data += chunk
            try:
                return data.decode()
            except UnicodeDecodeError:
                raise InvalidArgument(f"{name} is not UTF-8 text") from None
    return None


_CHUNK = 32 * 1024  # below _Guard's largest read
