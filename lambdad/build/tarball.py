"""Validation of uploaded code archives, before a single byte is extracted.

Pure logic over `tarfile` headers: every member is checked against the rules and
the caps, and the first violation is an error that names the member. The rules cover the
tree the members build together (`Tree`): links only to earlier files and folders, never
chained, nothing written twice or through a link. `validate` reports the archive's format
(by magic bytes); `extract` and `read_member` are handed it and read the same stream,
judged by the same rules again, and extraction never follows a link (directory fds,
`O_NOFOLLOW`, `O_EXCL`), so what is written is what was judged.

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
import errno
import gzip
import lzma
import os
import posixpath
import stat
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


# What an upload may be: a plain tar, or one compressed with gzip, bzip2 or xz, recognised
# by magic bytes. Nothing is guessed (no LZMA-alone, whose header has no magic): what
# `validate` judged is the format every later pass is handed and decompresses alike.
TAR, GZIP, BZIP2, XZ = "tar", "gzip", "bzip2", "xz"
FORMATS = (TAR, GZIP, BZIP2, XZ)


def detect_format(magic: bytes) -> str:
    """The archive's format from its first bytes (pure); anything else is a plain tar,
    which `tarfile` then accepts or refuses by its header checksums."""
    if magic.startswith(b"\x1f\x8b"):
        return GZIP
    if magic.startswith(b"BZh"):
        return BZIP2
    if magic.startswith(b"\xfd7zXZ\x00"):
        return XZ
    return TAR


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
def _opened(path: Path, fmt: str, limits: TarLimits) -> Iterator[tarfile.TarFile]:
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


@dataclass(frozen=True)
class TarSummary:
    members: int
    unpacked_bytes: int
    files: frozenset[str]  # regular files
    format: str = TAR  # what `extract` and `read_member` must be told
    links: frozenset[str] = frozenset()  # symlinks

    def require_regular(self, *names: str) -> None:
        """lambdad reads these files itself and never through a link: one that is a
        symlink is refused now, with its name, rather than found missing later."""
        for name in names:
            if name in self.links:
                raise InvalidArgument(f"{name} must be a regular file, not a symlink")


def normalize(name: str) -> str:
    """Strips a leading './' and trailing '/' the way tar writers differ on them."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def check_member(member: tarfile.TarInfo) -> str:
    """The rules one member's own header must meet (its name and type); returns the
    normalized name or raises InvalidArgument. What it may refer to is `Tree`'s business."""
    raw = member.name
    name = normalize(raw)
    if "\x00" in raw or "\x00" in member.linkname:
        raise InvalidArgument(f"archive member {raw!r}: NUL byte in name")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise InvalidArgument(f"archive member {raw!r}: absolute path")
    if ".." in raw.split("/"):
        raise InvalidArgument(f"archive member {raw!r}: '..' in path")
    if name in ("", ".") and not member.isdir():
        raise InvalidArgument(f"archive member {raw!r}: the folder itself must be a directory")
    if name and (name.startswith("/") or posixpath.normpath(name) != name):  # './/x'
        raise InvalidArgument(f"archive member {raw!r}: not a normalized path ('.' or '//')")
    if member.ischr() or member.isblk():
        raise InvalidArgument(f"archive member {raw!r}: device files are not allowed")
    if member.isfifo():
        raise InvalidArgument(f"archive member {raw!r}: fifos are not allowed")
    if member.issym():
        if not member.linkname:
            raise InvalidArgument(f"archive member {raw!r}: symlink with an empty target")
        if member.linkname.startswith("/"):
            raise InvalidArgument(
                f"archive member {raw!r}: symlink to absolute path {member.linkname!r}")
    elif member.islnk():
        target = normalize(member.linkname)
        if member.linkname.startswith("/") or ".." in target.split("/"):
            raise InvalidArgument(
                f"archive member {raw!r}: hardlink {member.linkname!r} points outside "
                "the function folder")
    elif not (member.isfile() or member.isdir()):
        raise InvalidArgument(f"archive member {raw!r}: unsupported member type")
    return "" if name == "." else name


_DIR, _FILE, _LINK = "folder", "file", "symlink"


class Tree:
    """The tree an archive builds, member by member, judged as the kernel will walk it.

    Each symlink was judged alone, and a path that did not exist yet by its spelling, so
    links could chain through names that only later became links (`p -> s/d/../..`
    before `s/d -> ..`) and climb out of the folder. Here a link may only name, step by
    step, folders and files that are already in the archive and are not links; so its
    meaning can never change later, links never chain, and lexical resolution is the
    kernel's. Also refused: a member named twice (a later one would replace, or be written
    through, the earlier), a member below a symlink or a file, a hard link to anything but
    an earlier regular file. Pure and in memory: `validate` and `extract` both run it.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {"": _DIR}  # every path the archive makes, implicit too
        self._members: set[str] = set()

    def add(self, member: tarfile.TarInfo, name: str) -> None:
        """Records a member that `check_member` accepted, or raises InvalidArgument."""
        raw = member.name
        if name in self._members:
            raise InvalidArgument(f"archive member {raw!r}: {name or '.'!r} is in the archive "
                                  "more than once")
        parts = name.split("/") if name else []
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            kind = self._kinds.setdefault(above, _DIR)
            if kind != _DIR:
                raise InvalidArgument(f"archive member {raw!r}: its path goes through "
                                      f"{above!r}, which is a {kind}, not a folder")
        existing = self._kinds.get(name)
        if existing is not None and not (existing == _DIR and member.isdir()):
            raise InvalidArgument(f"archive member {raw!r}: {name!r} is already in the "
                                  f"archive as a {existing}")
        if member.issym():
            self._check_symlink(raw, parts[:-1], member.linkname)
            kind = _LINK
        elif member.islnk():
            target = normalize(member.linkname)
            if self._kinds.get(target) != _FILE or target not in self._members:
                raise InvalidArgument(
                    f"archive member {raw!r}: hardlink to {member.linkname!r}, which is not "
                    "an earlier regular file of the archive")
            kind = _FILE
        else:
            kind = _DIR if member.isdir() else _FILE
        self._kinds[name] = kind
        self._members.add(name)

    def _check_symlink(self, raw: str, folder: list[str], target: str) -> None:
        """Walks `target` from the link's folder as the kernel would: every name on the
        way must be an earlier folder (or, last, file) of the archive, never a link."""
        where = list(folder)
        steps = target.split("/")
        for index, step in enumerate(steps):
            if step in ("", "."):
                continue
            if step == "..":
                if not where:
                    raise InvalidArgument(f"archive member {raw!r}: symlink {target!r} points "
                                          "outside the function folder")
                where.pop()
                continue
            where.append(step)
            here = "/".join(where)
            kind = self._kinds.get(here)
            if kind is None:
                raise InvalidArgument(
                    f"archive member {raw!r}: symlink {target!r}: {here!r} is not an earlier "
                    "file or folder of the archive (a link may only name what precedes it)")
            if kind == _LINK:
                raise InvalidArgument(
                    f"archive member {raw!r}: symlink {target!r} goes through the symlink "
                    f"{here!r}; links may not chain")
            if kind == _FILE and index < len(steps) - 1:
                raise InvalidArgument(f"archive member {raw!r}: symlink {target!r} goes "
                                      f"through {here!r}, which is a file")
        if not where:
            raise InvalidArgument(f"archive member {raw!r}: symlink {target!r} points at the "
                                  "function folder itself")


def _judged(archive: tarfile.TarFile, limits: TarLimits) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Every member with its normalized name, each after every rule and cap; the one
    judgement `validate`, `extract` and `read_member` share."""
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


def validate(path: Path, limits: TarLimits = TarLimits()) -> TarSummary:
    """Reads every header of the (optionally compressed) tarball at `path`."""
    with path.open("rb") as raw:
        fmt = detect_format(raw.read(6))
    files: set[str] = set()
    links: set[str] = set()
    count = 0
    unpacked = 0
    with _opened(path, fmt, limits) as archive:
        for member, name in _judged(archive, limits):
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


def read_member(path: Path, name: str, fmt: str, limits: TarLimits = TarLimits(),
                max_bytes: int = 1024 * 1024) -> str | None:
    """The text of a file such as lambda.toml, read from the archive as `validate` judged
    it (format and rules), or None; a member of that name that is not a regular file is
    refused, never followed."""
    with _opened(path, fmt, limits) as archive:
        for member, found in _judged(archive, limits):
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


# Extraction: with directory fds, so no path lambdad writes is ever resolved through a
# link, whatever the rules above might have missed.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 32 * 1024  # below _Guard's largest read


def extract(path: Path, dest: Path, fmt: str, limits: TarLimits = TarLimits()) -> None:
    """Extracts the archive `validate` accepted, read as the `fmt` it reported and judged
    again by the same rules on the way.

    Nothing is opened by a path that could hold a link: every folder is entered with
    `O_DIRECTORY | O_NOFOLLOW` from the one above, files are created with
    `O_CREAT | O_EXCL | O_NOFOLLOW`, links are made with `symlinkat`/`linkat` and never
    followed. Files get the mode's owner and read/execute bits (0644 or 0755 as packed,
    no setuid/setgid/sticky, no group or world write), folders 0755, and lambdad as owner.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.open(dest, _DIR_FLAGS)
    folders: list[tuple[str, float]] = []
    try:
        with _opened(path, fmt, limits) as archive:
            for member, name in _judged(archive, limits):
                try:
                    _place(root, archive, member, name)
                except OSError as exc:
                    raise InvalidArgument(f"archive member {member.name!r}: cannot extract: "
                                          f"{exc.strerror or exc}") from None
                if member.isdir():
                    folders.append((name, member.mtime))
        for name, mtime in reversed(folders):  # after their contents changed them
            with contextlib.suppress(OSError, ValueError, OverflowError):
                fd = _descend(root, name.split("/") if name else [], create=False)
                try:
                    os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)
    finally:
        os.close(root)


def _descend(root: int, parts: list[str], *, create: bool) -> int:
    """A new fd of the folder `parts` below `root`, made (0755) where missing if
    `create`; a link on the way is an error (ELOOP or ENOTDIR), never followed."""
    fd = os.dup(root)
    try:
        for part in parts:
            try:
                below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                below = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.fchmod(below, 0o755)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _place(root: int, archive: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
    if not name:  # the folder itself
        os.fchmod(root, 0o755)
        return
    *above, base = name.split("/")
    parent = _descend(root, above, create=True)
    try:
        if member.isdir():
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=parent)
            fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
            try:
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
        elif member.islnk():
            *target_above, target = normalize(member.linkname).split("/")
            source = _descend(root, target_above, create=False)
            try:
                if not stat.S_ISREG(os.stat(target, dir_fd=source, follow_symlinks=False).st_mode):
                    raise InvalidArgument(f"archive member {member.name!r}: hardlink to "
                                          f"{member.linkname!r}, which is not a regular file")
                os.link(target, base, src_dir_fd=source, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                os.close(source)
        else:
            handle = archive.extractfile(member)
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                left = member.size
                while handle is not None and left > 0 and (chunk := handle.read(min(_CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
                if left > 0:
                    raise InvalidArgument(f"archive member {member.name!r}: truncated")
                os.fchmod(fd, (member.mode & 0o755) | 0o600)
                with contextlib.suppress(OSError, ValueError, OverflowError):
                    os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(parent)


def open_regular(folder: Path, name: str, max_bytes: int) -> bytes | None:
    """The bytes of `folder/name`, a file of an extracted tree, opened without following a
    link anywhere below `folder`; None if it is missing. A link, folder or anything but a
    regular file is refused (InvalidArgument naming it), as is one over `max_bytes`."""
    root = os.open(folder, _DIR_FLAGS)
    try:
        *above, base = name.split("/")
        try:
            parent = _descend(root, above, create=False)
        except FileNotFoundError:
            return None
        except OSError:
            raise InvalidArgument(f"{name}: a folder on its path is a link") from None
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            kind = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise InvalidArgument(f"{name} must be a regular file, not {kind}") from None
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidArgument(f"{name} must be a regular file")
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{name} is larger than {max_bytes} bytes")
        return data
    finally:
        os.close(root)


def create_new(path: Path, data: bytes) -> None:
    """Writes `data` to a file that this call creates (O_CREAT | O_EXCL | O_NOFOLLOW):
    never into one that exists, nor through a link."""
    fd = os.open(path, _NEW_FILE, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
