"""Resolved requirements kept between builds, so a redeploy does not run pip again.

The key is the function's name and everything that decides what pip installs: the parsed
requirement lines, the
runtime image's platform, the wheelhouse (and its files), pip's settings and pip's
version. Like Docker's layer cache (OpenFaaS's `pip install -r requirements.txt` step)
and `sam build --cached`, an unpinned requirement stays at the version first resolved
until requirements.txt changes, the entry ages out, or a deploy asks for `--no-cache`.

Entries live under the state folder, owned by lambdad: `<key>/tree` is the deps folder,
`<key>/size` its bytes, and the mtime of `<key>/used` the last time a build took it. An
entry appears by one rename and goes by one (out of the way, then deleted), so a crash
leaves either a whole entry or a `tmp-*` folder that the next start removes. Trees are
hard-linked in and out (the spool and the cache share the state folder's file system), so
a hit costs a directory walk, not a copy.
The least recently used entries go when the total passes `max_bytes`; every file and
folder counts for at least one 4 KiB block, so neither many keys nor many empty files
take more disk (or inodes) than the total says.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lambdad.build.wheeltags import TargetPlatform

log = logging.getLogger(__name__)

_TMP_PREFIX = "tmp-"


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    last_used: float


def cache_key(function: str, requirements: list[str], target: TargetPlatform, *,
              wheelhouse: str, pip_settings: Mapping[str, str], pip_version: str) -> str:
    """A digest of everything pip's answer depends on (pure), per function: a deployer
    learns nothing of another function's requirements from a hit, nor shares its files."""
    what = {
        "function": function,
        "requirements": requirements,
        "target": [list(target.python), target.machine, target.libc, list(target.libc_version)],
        "wheelhouse": wheelhouse,
        "pip": pip_version,
        "settings": sorted(pip_settings.items()),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def choose_evictions(entries: Iterable[Entry], max_bytes: int) -> list[str]:
    """The keys to remove, least recently used first, to bring the total to `max_bytes`."""
    ordered = sorted(entries, key=lambda e: e.last_used)
    total = sum(e.size for e in ordered)
    gone = []
    for entry in ordered:
        if total <= max_bytes:
            break
        gone.append(entry.key)
        total -= entry.size
    return gone


# The least one file or folder is charged: a block of the usual file systems. An empty
# file has no block but an inode, a folder a block of entries; counted by their sizes
# alone, an entry of thousands of them (one wheel of empty modules) weighed nothing, and
# every new key kept another.
MIN_CHARGE = 4096
# An entry's own folders and files beside its tree: the entry, `size`, `used`.
_ENTRY_OVERHEAD = 3 * MIN_CHARGE


def disk_charge(info: os.stat_result) -> int:
    """What one file, folder or link counts for: its size or its blocks, whichever is
    larger, and at least MIN_CHARGE."""
    return max(info.st_size, info.st_blocks * 512, MIN_CHARGE)


def tree_size(folder: Path) -> int:
    """What `folder` counts for against `max_bytes`: every file, folder and link in it."""
    total = 0
    with contextlib.suppress(OSError):
        total += disk_charge(os.lstat(folder))
    for top, dirs, files in os.walk(folder):  # each folder once, as its parent's entry
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += disk_charge(os.lstat(os.path.join(top, name)))
    return total


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:  # another file system
        shutil.copy2(source, destination, follow_symlinks=False)


class DepsCache:
    """Resolved deps folders by key; safe across the builder's threads."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        if self.enabled:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(root, 0o700)
            for leftover in root.glob(_TMP_PREFIX + "*"):  # a crash mid-store or mid-removal
                shutil.rmtree(leftover, ignore_errors=True)
            with self._lock:
                self._trim()  # a smaller build_cache_size, or a crash before the last trim

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def take(self, key: str, destination: Path) -> bool:
        """Links the entry's tree to `destination` (which must not exist); False on a miss."""
        if not self.enabled:
            return False
        entry = self.root / key
        with self._lock:
            if not (entry / "tree").is_dir():
                return False
            try:
                shutil.copytree(entry / "tree", destination, symlinks=True,
                                copy_function=_link_or_copy)
                (entry / "used").touch()
            except OSError as exc:
                log.warning("build cache entry %s is unusable (%s): resolving again", key, exc)
                shutil.rmtree(destination, ignore_errors=True)
                self._remove(key)
                return False
        return True

    def put(self, key: str, tree: Path) -> None:
        """Keeps a copy (hard links) of a resolved deps folder, then trims the cache."""
        if not self.enabled:
            return
        size = tree_size(tree) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        try:
            shutil.copytree(tree, staging / "tree", symlinks=True, copy_function=_link_or_copy)
            (staging / "size").write_text(str(size))
            (staging / "used").touch()
            with self._lock:
                self._remove(key)  # a concurrent build or --no-cache stored it: keep one
                os.rename(staging, self.root / key)
                self._trim()
        except OSError as exc:
            log.warning("could not keep resolved requirements in the build cache: %s", exc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def entries(self) -> list[Entry]:
        found = []
        for entry in self.root.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                continue
            try:
                size = int((entry / "size").read_text())
                used = (entry / "used").stat().st_mtime
            except (OSError, ValueError):
                size, used = 0, 0.0  # incomplete: goes first
            found.append(Entry(entry.name, size, used))
        return found

    def _trim(self) -> None:
        for key in choose_evictions(self.entries(), self.max_bytes):
            self._remove(key)

    def _remove(self, key: str) -> None:
        """Takes an entry out of the cache by one rename, then deletes it: a crash while
        its files go leaves a `tmp-*` folder the next start removes, never an entry with
        files missing that a build would take for a hit."""
        entry = self.root / key
        if not os.path.lexists(entry):
            return
        doomed = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        os.rename(entry, doomed / key)
        shutil.rmtree(doomed, ignore_errors=True)


def wheelhouse_fingerprint(wheelhouse: Path | None) -> str:
    """The wheelhouse's path and the names, sizes and mtimes of its files."""
    if wheelhouse is None:
        return ""
    listing = []
    with contextlib.suppress(OSError):
        for item in sorted(os.scandir(wheelhouse), key=lambda e: e.name):
            with contextlib.suppress(OSError):
                stat = item.stat(follow_symlinks=True)
                listing.append(f"{item.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{wheelhouse}\n" + "\n".join(listing)


