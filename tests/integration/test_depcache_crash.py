"""The build cache after lambdad is killed (SIGKILL) while it replaces or evicts an entry:
the next start must see each entry whole or not at all, never a tree with files missing
(a build would take it as a hit and ship a function that cannot import its packages).

A child process stores into the cache and kills itself with SIGKILL after its Nth file
removal: the real cache code, the real file system, a real kill at a known point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lambdad.build.depcache import DepsCache
from tests.support.daemon import ROOT

FILES = 120
MIB = 1024 * 1024

_CHILD = """\
import os, signal, sys
from pathlib import Path
from lambdad.build.depcache import DepsCache

root, key, tree, max_bytes, kill_at = sys.argv[1:6]
cache = DepsCache(Path(root), int(max_bytes))
real_unlink, removed = os.unlink, [0]

def unlink(*args, **kwargs):
    removed[0] += 1
    if removed[0] == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(*args, **kwargs)

os.unlink = unlink
cache.put(key, Path(tree))
"""


def _tree(folder: Path, text: str) -> Path:
    for i in range(FILES):
        package = folder / f"pkg{i:03d}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(text)
    return folder


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _put_and_die(root: Path, key: str, tree: Path, max_bytes: int, kill_at: int) -> None:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(root), key, str(tree),
                           str(max_bytes), str(kill_at)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == -9, done.stderr  # it did die mid-removal


def _whole_or_missing(cache: DepsCache, key: str, expected: list[dict[str, str]],
                      out: Path) -> None:
    if cache.take(key, out):
        assert _files(out) in expected, f"entry {key} came back with files missing"


@pytest.mark.parametrize("kill_at", [1, 30, FILES])
def test_a_kill_while_an_entry_is_replaced_leaves_it_whole_or_gone(
    tmp_path: Path, kill_at: int,
) -> None:
    # A `deploy --no-cache` stores again under the key it already has.
    root = tmp_path / "cache"
    old = _tree(tmp_path / "old", "old = 1\n")
    DepsCache(root, 64 * MIB).put("k", old)
    new = _tree(tmp_path / "new", "new = 1\n")
    _put_and_die(root, "k", new, 64 * MIB, kill_at)

    restarted = DepsCache(root, 64 * MIB)
    _whole_or_missing(restarted, "k", [_files(old), _files(new)], tmp_path / "out")
    assert not [p for p in root.iterdir() if p.name.startswith("tmp-")]


def test_a_kill_while_an_entry_is_evicted_leaves_it_whole_or_gone(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    first = _tree(tmp_path / "first", "first = 1\n")
    cache = DepsCache(root, 64 * MIB)
    cache.put("first", first)
    size = sum(e.size for e in cache.entries())
    os.utime(root / "first" / "used", (1, 1))  # the least recently used
    # A cache with room for one of the two: storing the second evicts the first.
    second = _tree(tmp_path / "second", "second = 1\n")
    _put_and_die(root, "second", second, size + size // 2, 30)

    restarted = DepsCache(root, size + size // 2)
    _whole_or_missing(restarted, "first", [_files(first)], tmp_path / "out-first")
    _whole_or_missing(restarted, "second", [_files(second)], tmp_path / "out-second")
