"""The build cache of resolved requirements: its key, its evictions, its files."""

from __future__ import annotations

import os
from pathlib import Path

from lambdad.build.depcache import (
    MIN_CHARGE,
    DepsCache,
    Entry,
    cache_key,
    choose_evictions,
    tree_size,
)
from lambdad.build.wheeltags import TargetPlatform

BOOKWORM = TargetPlatform(python=(3, 11), machine="x86_64", libc="glibc", libc_version=(2, 36))


def _key(**changes: object) -> str:
    args: dict[str, object] = {"function": "app", "requirements": ["flask>=3"], "target": BOOKWORM,
                               "wheelhouse": "", "pip_settings": {}, "pip_version": "23.2"}
    args.update(changes)
    return cache_key(args.pop("function"), args.pop("requirements"),  # type: ignore[arg-type]
                     args.pop("target"), **args)  # type: ignore[arg-type]


def test_the_key_changes_with_everything_that_changes_what_pip_installs() -> None:
    base = _key()
    assert base == _key()
    others = [
        _key(function="other"),
        _key(requirements=["flask>=3.1"]),
        _key(target=TargetPlatform((3, 12), "x86_64", "glibc", (2, 36))),
        _key(target=TargetPlatform((3, 11), "aarch64", "glibc", (2, 36))),
        _key(target=TargetPlatform((3, 11), "x86_64", "glibc", (2, 31))),
        _key(wheelhouse="/w\nflask-3.whl:10:1"),
        _key(pip_settings={"PIP_INDEX_URL": "https://mirror/simple"}),
        _key(pip_version="24.0"),
    ]
    assert len({base, *others}) == len(others) + 1


def test_evictions_take_the_least_recently_used_until_the_total_fits() -> None:
    entries = [Entry("new", 50, 30.0), Entry("old", 40, 10.0), Entry("mid", 30, 20.0)]
    assert choose_evictions(entries, 200) == []
    assert choose_evictions(entries, 80) == ["old"]
    assert choose_evictions(entries, 55) == ["old", "mid"]
    assert choose_evictions(entries, 0) == ["old", "mid", "new"]


def _tree(folder: Path, size: int) -> Path:
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_bytes(b"x" * size)
    (folder / "pkg-1.0.dist-info").mkdir()
    return folder


def test_a_stored_tree_comes_back_as_links_and_a_miss_leaves_nothing(tmp_path: Path) -> None:
    cache = DepsCache(tmp_path / "cache", max_bytes=1024 * 1024)
    assert not cache.take("k1", tmp_path / "miss") and not (tmp_path / "miss").exists()
    source = _tree(tmp_path / "deps", 100)
    cache.put("k1", source)
    assert cache.take("k1", tmp_path / "out")
    taken = tmp_path / "out" / "pkg" / "__init__.py"
    assert taken.read_bytes() == b"x" * 100
    assert taken.stat().st_ino == (source / "pkg" / "__init__.py").stat().st_ino
    assert (tmp_path / "out" / "pkg-1.0.dist-info").is_dir()
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"


def test_the_least_recently_taken_entry_goes_when_the_cache_is_full(tmp_path: Path) -> None:
    # Each entry counts 28 KiB (4 KiB for each of its 4 files and folders and 3 of its
    # own): the cache has room for two.
    cache = DepsCache(tmp_path / "cache", max_bytes=60_000)
    for key in ("a", "b"):
        cache.put(key, _tree(tmp_path / f"src-{key}", 100))
    os.utime(tmp_path / "cache" / "a" / "used", (1, 1))
    os.utime(tmp_path / "cache" / "b" / "used", (2, 2))
    assert cache.take("a", tmp_path / "took-a")  # a is now the most recent
    cache.put("c", _tree(tmp_path / "src-c", 100))
    assert sorted(e.key for e in cache.entries()) == ["a", "c"]
    cache.put("huge", _tree(tmp_path / "src-huge", 70_000))  # larger than the cache: not kept
    assert sorted(e.key for e in cache.entries()) == ["a", "c"]


def test_a_crash_mid_store_leaves_a_folder_the_next_start_removes(tmp_path: Path) -> None:
    (tmp_path / "cache" / "tmp-abc" / "tree").mkdir(parents=True)
    DepsCache(tmp_path / "cache", max_bytes=100)
    assert list((tmp_path / "cache").iterdir()) == []


def test_size_zero_disables_the_cache(tmp_path: Path) -> None:
    cache = DepsCache(tmp_path / "cache", max_bytes=0)
    cache.put("k", _tree(tmp_path / "deps", 10))
    assert not cache.take("k", tmp_path / "out")
    assert not (tmp_path / "cache").exists()


def test_empty_files_and_folders_count_for_the_disk_they_take(tmp_path: Path) -> None:
    # A wheel of empty modules, each in its own package: 0 bytes of content, but a block
    # per folder and an inode per file. Counted by content alone such entries weighed
    # nothing, so every new key kept another.
    hollow = tmp_path / "hollow"
    for i in range(50):
        (hollow / f"p{i}").mkdir(parents=True)
        (hollow / f"p{i}" / "__init__.py").touch()
    assert tree_size(hollow) == (1 + 50 + 50) * MIN_CHARGE
    big = tmp_path / "big"
    big.mkdir()
    (big / "data").write_bytes(b"x" * 100_000)
    assert tree_size(big) == MIN_CHARGE + max(100_000, (big / "data").stat().st_blocks * 512)
    cache = DepsCache(tmp_path / "cache", max_bytes=500 * 1024)
    for key in ("a", "b", "c"):
        cache.put(key, hollow)
    assert [e.key for e in cache.entries()] == ["c"]
