"""Finding a container's freezer file (runtime/cgroups.py): which mounts count, which
cgroup paths are the container's own, v1 over v2 on a hybrid host, and every case where
the answer is None so that the Docker API thaws instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdad.runtime import cgroups
from lambdad.runtime.cgroups import FreezerFile, Mounts, freezer_file, own_cgroup, parse_mounts

ID = "f2f6b4188e3381485f8cecf821244c52ce77d2cf8bb95913ee0f765abb6f1292"
OTHER = "0" * 64

HYBRID_MOUNTS = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 24 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
35 33 0:31 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
39 33 0:35 / /sys/fs/cgroup/freezer rw,nosuid,nodev shared:15 - cgroup cgroup rw,freezer
40 33 0:36 / /sys/fs/cgroup/memory rw,nosuid,nodev shared:16 - cgroup cgroup rw,memory
"""
V2_MOUNTS = ("26 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 "
             "- cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")


def _v1(path: str) -> str:
    return (f"9:name=systemd:{path}\n6:freezer:{path}\n4:memory:{path}\n"
            f"1:cpu,cpuacct:{path}\n0::{path}\n")


def test_the_mounts_of_a_hybrid_host_and_of_a_v2_host() -> None:
    assert parse_mounts(HYBRID_MOUNTS) == Mounts(freezer=Path("/sys/fs/cgroup/freezer"),
                                                 unified=Path("/sys/fs/cgroup/unified"))
    assert parse_mounts(V2_MOUNTS) == Mounts(unified=Path("/sys/fs/cgroup"))
    assert parse_mounts("") == Mounts()


def test_a_mount_of_a_sub_tree_does_not_count() -> None:
    """lambdad in a container sees its own cgroup mounted at /sys/fs/cgroup: the paths
    of /proc/<pid>/cgroup do not map onto it."""
    inner = ("26 21 0:23 /docker/abc /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
             "27 21 0:24 /docker/abc /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n")
    assert parse_mounts(inner) == Mounts()


def test_escaped_mount_points_are_read_back() -> None:
    line = "34 33 0:30 / /mnt/c\\040g rw - cgroup2 cgroup2 rw\n"
    assert parse_mounts(line).unified == Path("/mnt/c g")


def test_cgroupfs_driver_on_v1_uses_freezer_state() -> None:
    found = freezer_file(_v1(f"/docker/{ID}"), parse_mounts(HYBRID_MOUNTS), ID)
    assert found == FreezerFile(Path(f"/sys/fs/cgroup/freezer/docker/{ID}/freezer.state"), 1)
    assert (found.thawed, found.frozen) == (b"THAWED", b"FROZEN")


def test_systemd_driver_on_v2_uses_cgroup_freeze() -> None:
    path = f"/system.slice/docker-{ID}.scope"
    found = freezer_file(f"0::{path}\n", parse_mounts(V2_MOUNTS), ID)
    assert found == FreezerFile(Path(f"/sys/fs/cgroup{path}/cgroup.freeze"), 2)
    assert (found.thawed, found.frozen) == (b"0", b"1")


def test_cgroupfs_driver_on_v2_and_a_cgroup_parent() -> None:
    found = freezer_file(f"0::/lambda/{ID}\n", parse_mounts(V2_MOUNTS), ID)
    assert found is not None and found.path == Path(f"/sys/fs/cgroup/lambda/{ID}/cgroup.freeze")


def test_on_a_hybrid_host_the_v1_freezer_wins_over_the_empty_v2_tree() -> None:
    found = freezer_file(_v1(f"/docker/{ID}"), parse_mounts(HYBRID_MOUNTS), ID)
    assert found is not None and found.version == 1


def test_v1_without_a_mounted_freezer_falls_back() -> None:
    """Docker freezes through v1 there: writing the v2 tree would not thaw anything."""
    mounts = Mounts(unified=Path("/sys/fs/cgroup/unified"))
    assert freezer_file(_v1(f"/docker/{ID}"), mounts, ID) is None


def test_no_cgroup_v2_mount_falls_back() -> None:
    assert freezer_file(f"0::/docker/{ID}\n", Mounts(), ID) is None


def test_a_cgroup_that_is_not_the_containers_own_is_refused() -> None:
    """A reused pid (another container, a host process), a sub-cgroup, another cgroup
    namespace (`..`), a name that only contains the id: none is written."""
    mounts = parse_mounts(V2_MOUNTS)
    for path in (f"/docker/{OTHER}", "/user.slice/session-1.scope", "/",
                 f"/docker/{ID}/{OTHER}", f"/../docker/{ID}", f"/docker/../docker/{ID}",
                 f"/docker/x{ID}", f"/docker/docker-{ID}", f"docker/{ID}", f"/docker//{ID}"):
        assert freezer_file(f"0::{path}\n", mounts, ID) is None, path
    assert freezer_file(f"0::/docker/{ID}\n", mounts, "") is None


def test_own_cgroup_names() -> None:
    assert own_cgroup(f"/docker/{ID}", ID)
    assert own_cgroup(f"/system.slice/docker-{ID}.scope", ID)
    assert own_cgroup(f"/a.slice/b.slice/docker-{ID}.scope", ID)
    assert not own_cgroup(f"/docker/{ID}/.", ID)
    assert not own_cgroup(f"/docker/{ID[:12]}", ID)


def test_damaged_lines_are_skipped() -> None:
    text = f"garbage\n6:freezer\n0::/docker/{ID}\n"
    found = freezer_file(text, parse_mounts(V2_MOUNTS), ID)
    assert found is not None and found.version == 2


def test_a_freeze_left_freezing_by_a_forking_task_is_written_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Attack: a function forking in a loop escapes a v1 freeze now and then (the kernel
    walks the tasks once per write): the cgroup stays FREEZING, the settle failed after a
    second and the instance stayed unsettled. Here the kernel freezes on the third write."""
    writes: list[bytes] = []
    monkeypatch.setattr(cgroups, "write", lambda _f, value: writes.append(value))
    monkeypatch.setattr(cgroups, "is_frozen",
                        lambda _f: writes.count(cgroups.V1_FROZEN) >= 3 and writes[-1]
                        == cgroups.V1_FROZEN)
    freezer = FreezerFile(tmp_path / "freezer.state", 1)
    assert cgroups.freeze(freezer, timeout=0.5)
    assert cgroups.V1_THAWED not in writes
