"""What lambdad asks Docker for and reads back about its containers (pure, no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdad import labels
from lambdad.runtime.cells import CellClass
from lambdad.runtime.docker_backend import ManagedContainer, managed_container
from lambdad.runtime.hostconfig import cleanup_options, instance_options, memory_in_use

SMALL = CellClass(memory_mb=128, network="none", cpu=0.5, pids_limit=64)


def test_an_instance_is_read_only_without_capabilities_within_its_limits() -> None:
    options = instance_options(SMALL, {"/s": {"bind": "/run/lambda", "mode": "rw"}},
                               init=False, tmp_size_mb=32)
    assert options["cap_drop"] == ["ALL"] and "cap_add" not in options
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["read_only"] is True
    assert options["mem_limit"] == options["memswap_limit"] == "128m"  # no swap
    assert (options["cpu_quota"], options["cpu_period"]) == (50_000, 100_000)
    assert (options["pids_limit"], options["network_mode"]) == (64, "none")
    assert options["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=32m"}
    assert options["init"] is False


def test_an_images_volumes_become_private_bounded_tmpfs() -> None:
    options = instance_options(SMALL, {}, init=True, volumes=("/data",))
    assert options["tmpfs"]["/data"].startswith("rw,nosuid,nodev,size=64m,uid=")
    assert options["tmpfs"]["/data"].endswith(",mode=0700")
    assert options["init"] is True


def test_the_cleanup_container_may_only_override_file_permissions(tmp_path: Path) -> None:
    options = cleanup_options(tmp_path)
    assert options["cap_drop"] == ["ALL"]
    assert options["cap_add"] == ["DAC_OVERRIDE", "FOWNER"]
    assert options["network_mode"] == "none" and options["read_only"] is True
    assert options["binds"] == {str(tmp_path): {"bind": "/folder", "mode": "rw"}}


@pytest.mark.parametrize(("stats", "expected"), [
    ({"memory_stats": {"usage": 100, "stats": {"total_inactive_file": 30}}}, 70),  # cgroup v1
    ({"memory_stats": {"usage": 100, "stats": {"inactive_file": 40}}}, 60),  # cgroup v2
    ({"memory_stats": {"usage": 10, "stats": {"inactive_file": 40}}}, 0),
    ({"memory_stats": {}}, None),  # a stopped container
    ({}, None),
])
def test_memory_in_use_leaves_out_the_droppable_page_cache(
    stats: dict[str, object], expected: int | None
) -> None:
    assert memory_in_use(stats) == expected


def test_labels_tell_instances_cells_and_leftovers_apart() -> None:
    ours = {labels.DAEMON: "d"}
    assert managed_container("c1", {**ours, labels.FUNCTION: "fn", labels.VERSION: "3",
                                    labels.INSTANCE: "i1"}, True) == ManagedContainer(
        "c1", "fn", 3, "i1", True)
    assert managed_container("c2", {**ours, labels.CELL: "128MiB", labels.INSTANCE: "k"},
                             False) == ManagedContainer("c2", "", 0, "k", False, cell=True)
    leftover = managed_container("c3", {**ours, labels.CLEANUP: "1", labels.FUNCTION: "fn",
                                        labels.VERSION: "1", labels.INSTANCE: "i"}, False)
    assert leftover == ManagedContainer("c3", "", 0, "i", False)
    assert not leftover.cell


@pytest.mark.parametrize("found", [
    {labels.FUNCTION: "fn", labels.VERSION: "x", labels.INSTANCE: "i"},
    {labels.FUNCTION: "fn", labels.INSTANCE: "i"},
    {labels.FUNCTION: "fn", labels.VERSION: "1"},
])
def test_a_container_with_damaged_labels_is_not_adopted(found: dict[str, str]) -> None:
    assert managed_container("c", found, True) is None
