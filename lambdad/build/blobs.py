"""Content-addressed blobs in the shared database (cluster mode): a standard-runtime
version's artifact folder as a tar, or a Dockerfile function's validated build context.

A node that never ran a version fetches its blob on first use (build/localize.py), so
what it unpacks came from the database, which it trusts no more than an upload: the
download is verified (size and sha256) before the tar is opened, every member is checked
before anything is written (regular files and folders only, relative names without
`..`, under the artifact's own top-level names), and extraction creates each file
itself (O_EXCL | O_NOFOLLOW) in a fresh folder, modes normalized afterwards.

Packing is deterministic (sorted names, mtime 0, uid/gid 0, no links), so one tree always
gives one sha256 and a config-only version or a redeploy of the same code shares a blob.

`BlobStore` moves blobs over its own short-lived connection, in a worker thread, never on
the store thread: a 50 MiB transfer must not hold up queue cycles behind it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from lambdad.build.artifacts import DEPS, RUNTIME_IMAGE, TASK, ArtifactStore, normalize_modes
from lambdad.errors import BlobRefused, Unavailable

CHUNK = 1 << 20  # bytes per blob_chunks row
KINDS = ("artifact", "context")
# What an artifact blob may hold at its top level: ArtifactStore's layout.
ARTIFACT_PARTS = (TASK, DEPS, RUNTIME_IMAGE)
_ALLOWED_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)


def pack(root: Path, out: IO[bytes], parts: Iterable[str] = ARTIFACT_PARTS) -> tuple[str, int]:
    """Writes `root`'s `parts` (folders or files) to `out` as a deterministic tar; returns
    (sha256, size). A link or any other special file is refused: an artifact holds none."""
    hashing = _Hashing(out)
    with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for part in parts:
            path = root / part
            if not os.path.lexists(path):
                continue
            _add(tar, path, part)
    return hashing.digest.hexdigest(), hashing.size


def _add(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = os.lstat(path)
    member = tarfile.TarInfo(name)
    member.mtime = 0
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    if stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
        member.mode = 0o755
        tar.addfile(member)
        for child in sorted(os.listdir(path)):
            _add(tar, path / child, f"{name}/{child}")
    elif stat.S_ISREG(info.st_mode):
        member.type = tarfile.REGTYPE
        member.mode = 0o755 if info.st_mode & 0o111 else 0o644
        member.size = info.st_size
        with open(path, "rb") as source:  # a hard link is packed as the file it is
            tar.addfile(member, source)
    else:
        raise BlobRefused(f"{name}: only regular files and folders can be shared")


def check_members(members: list[tarfile.TarInfo], parts: Iterable[str] | None) -> None:
    """Refuses the whole tar for one bad member: anything but a regular file or a folder,
    an absolute name, a `..`, a name outside `parts` (None: any), or a name twice."""
    allowed = None if parts is None else set(parts)
    seen: set[str] = set()
    for member in members:
        name = member.name
        if member.type not in _ALLOWED_TYPES:
            raise BlobRefused(f"blob member {name!r} is not a regular file or a folder")
        if not name or "\0" in name or name.startswith("/") or "\\" in name:
            raise BlobRefused(f"blob member {name!r} has an absolute or invalid name")
        parts_of = [p for p in name.split("/") if p not in ("", ".")]
        if not parts_of or ".." in parts_of:
            raise BlobRefused(f"blob member {name!r} leaves its folder")
        if allowed is not None and parts_of[0] not in allowed:
            raise BlobRefused(f"blob member {name!r} is not part of an artifact")
        clean = posixpath.join(*parts_of)
        if clean in seen:
            raise BlobRefused(f"blob member {name!r} appears twice")
        seen.add(clean)


def unpack(blob: Path, dest: Path, parts: Iterable[str] | None = ARTIFACT_PARTS) -> None:
    """Extracts a verified blob into `dest`, which must not exist yet. Every member is
    checked first; on a refusal nothing has been written."""
    try:
        with tarfile.open(blob, mode="r:") as tar:
            members = tar.getmembers()
            check_members(members, parts)
            os.mkdir(dest, 0o755)
            try:
                for member in members:
                    _extract(tar, member, dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except tarfile.TarError as exc:
        raise BlobRefused(f"blob is not a valid tar: {exc}") from None
    normalize_modes(dest)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    relative = posixpath.join(*[p for p in member.name.split("/") if p not in ("", ".")])
    target = dest / relative
    if member.type == tarfile.DIRTYPE:
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o755 if member.mode & 0o111 else 0o644)
    with os.fdopen(fd, "wb") as out:
        source = tar.extractfile(member)
        assert source is not None  # a regular member
        shutil.copyfileobj(source, out, CHUNK)


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def verify(path: Path, sha256: str, size: int) -> None:
    """A downloaded blob must be exactly the one asked for."""
    found_sha, found_size = file_digest(path)
    if found_size != size:
        raise BlobRefused(f"blob {sha256[:12]} has {found_size} bytes, not {size}")
    if found_sha != sha256:
        raise BlobRefused(f"blob {sha256[:12]} does not match its sha256")


class BlobStore:
    """Blobs in PostgreSQL's `blobs` and `blob_chunks`; blocking, each call on a short-lived
    connection of its own (run it in a worker thread)."""

    def __init__(self, url: str, node_id: str = "") -> None:
        self._url = url
        self._name = f"lambdad:{node_id}:blobs" if node_id else "lambdad:blobs"
        # Called after each chunk a fetch writes (tests slow a fetch down to kill it).
        self.on_chunk: Callable[[int], None] | None = None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        """A connection of its own for one call, committed at the end; a lost database
        (at connect or midway) is Unavailable, named without the URL's password."""
        import psycopg

        from lambdad.store.database import connect_params, redacted, scrub

        try:
            with psycopg.connect(self._url, **connect_params(self._url, self._name)) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            reason = scrub(str(exc).strip().replace("\n", " "), self._url)
            raise Unavailable(f"the database ({redacted(self._url)}) is unavailable: "
                              f"{reason}; try again") from None

    def has(self, sha256: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM blobs WHERE sha256 = %s", (sha256,)).fetchone()
            return row is not None

    def put(self, kind: str, path: Path) -> str:
        """Stores the file at `path` (once: a blob already there is not written again);
        returns its sha256. Chunks first, the `blobs` row last, in one transaction."""
        if kind not in KINDS:
            raise ValueError(kind)
        sha256, size = file_digest(path)
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM blobs WHERE sha256 = %s", (sha256,)).fetchone():
                return sha256
            seq = 0
            with open(path, "rb") as source:
                while block := source.read(CHUNK):
                    conn.execute("INSERT INTO blob_chunks (sha256, seq, data) VALUES "
                                 "(%s, %s, %s) ON CONFLICT DO NOTHING", (sha256, seq, block))
                    seq += 1
            conn.execute("INSERT INTO blobs (sha256, kind, size, chunks, created_at) VALUES "
                         "(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (sha256, kind, size, seq, datetime.now(UTC)))
        return sha256

    def fetch(self, sha256: str, target: Path) -> None:
        """Streams the blob into `target` (created or truncated) chunk by chunk and
        verifies its size and sha256; a mismatch or a missing chunk is refused."""
        with self._connect() as conn:
            row = conn.execute("SELECT size, chunks FROM blobs WHERE sha256 = %s",
                               (sha256,)).fetchone()
            if row is None:
                raise Unavailable(f"blob {sha256[:12]} is not in the database")
            size, chunks = int(row[0]), int(row[1])
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                for seq in range(chunks):
                    found = conn.execute("SELECT data FROM blob_chunks WHERE sha256 = %s "
                                         "AND seq = %s", (sha256, seq)).fetchone()
                    if found is None:
                        raise BlobRefused(f"blob {sha256[:12]} lacks chunk {seq}")
                    out.write(bytes(found[0]))
                    if self.on_chunk is not None:
                        out.flush()
                        self.on_chunk(seq)
        verify(target, sha256, size)


    def collect(self, older_than_s: float = 3600.0) -> int:
        """Deletes the blobs no unpruned version names, stored more than `older_than_s`
        ago (a deploy in progress stores its blob before its row); returns how many. For
        the cluster's singleton housekeeping. (A put writes its chunks and its row in one
        transaction, so there are no chunks without a row to look for.)"""
        with self._connect() as conn:
            gone = conn.execute(
                "DELETE FROM blobs b WHERE b.created_at < now() - make_interval(secs => %s) "
                "AND NOT EXISTS (SELECT 1 FROM versions v WHERE NOT v.pruned AND "
                "(v.artifact_sha256 = b.sha256 OR v.context_sha256 = b.sha256)) "
                "RETURNING sha256", (older_than_s,)).fetchall()
            if gone:
                conn.execute("DELETE FROM blob_chunks WHERE sha256 = ANY(%s)",
                             ([row[0] for row in gone],))
            return len(gone)


def remove_quietly(*paths: Path) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def publish_artifact(blobs: BlobStore, artifact: Path, spool: Path) -> str:
    """Blocking: packs a committed artifact folder into a spool file and stores it; returns
    its sha256 (the spool file always goes)."""
    spool.mkdir(parents=True, exist_ok=True)
    packed = spool / f"blob-{os.urandom(8).hex()}.tar"
    try:
        with packed.open("wb") as out:
            pack(artifact, out)
        sha256 = blobs.put("artifact", packed)
        ArtifactStore.mark_blob(artifact, sha256)  # this copy is that blob (localize.py)
        return sha256
    finally:
        remove_quietly(packed)
