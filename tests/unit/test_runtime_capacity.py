"""The worker-count policy in memory: how many workers the instance's memory holds, what a
worker costs, and the cgroup and /proc figures it is read from."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "packaging" / "runtime" / "python"))

from lambda_runtime import capacity
from lambda_runtime.capacity import (
    MIB,
    UNLIMITED,
    CgroupMemory,
    margin,
    parse_limit,
    parse_private,
    parse_stat,
    parse_status_kb,
    starts_allowed,
    worker_cost,
    workers_held,
)


def test_the_margin_is_a_sixteenth_of_the_limit_and_at_least_8_mib() -> None:
    assert margin(256 * MIB) == 16 * MIB
    assert margin(128 * MIB) == 8 * MIB
    assert margin(64 * MIB) == 8 * MIB


def test_only_the_workers_that_fit_with_the_margin_start() -> None:
    # FastAPI at 256 MiB: 100 MiB in use, each worker ~16 MiB, nothing pending:
    # 256 - 16 (margin) - 100 = 140 MiB of room, 8 workers.
    kw = {"limit": 256 * MIB, "used": 100 * MIB, "cost": 16 * MIB, "pending": 0, "workers": 5}
    assert starts_allowed(45, **kw) == 8
    assert starts_allowed(3, **kw) == 3  # never more than wanted
    assert starts_allowed(0, **kw) == 0


def test_what_started_workers_will_still_grow_by_counts_as_used() -> None:
    # A burst: the forks of a moment ago are still small; their growth is pending.
    assert starts_allowed(45, limit=256 * MIB, used=100 * MIB, cost=16 * MIB,
                          pending=7 * 16 * MIB, workers=12) == 1
    assert starts_allowed(45, limit=256 * MIB, used=100 * MIB, cost=16 * MIB,
                          pending=8 * 16 * MIB, workers=13) == 0


def test_a_full_instance_starts_none_but_an_empty_one_always_gets_one() -> None:
    full = {"limit": 128 * MIB, "used": 125 * MIB, "cost": 40 * MIB, "pending": 0}
    assert starts_allowed(4, **full, workers=2) == 0
    assert starts_allowed(4, **full, workers=0) == 1  # else nothing could ever be served
    over = {"limit": 128 * MIB, "used": 200 * MIB, "cost": 40 * MIB, "pending": 50 * MIB}
    assert starts_allowed(4, **over, workers=1) == 0  # never negative


def test_no_limit_or_no_cost_bounds_nothing() -> None:
    assert starts_allowed(50, limit=UNLIMITED, used=10 * MIB, cost=16 * MIB, pending=0,
                          workers=3) == 50
    assert starts_allowed(7, limit=256 * MIB, used=10 * MIB, cost=0, pending=0, workers=1) == 7


def test_a_worker_costs_its_private_pages_and_what_it_freed_since_its_peak() -> None:
    # FastAPI after its first request: 15.5 MiB private, resident near its peak.
    assert worker_cost(15 * MIB, 60 * MIB, 59 * MIB) == 16 * MIB
    # A handler that held 40 MiB during the request and dropped it: private is small now,
    # but the peak says what the next request will take again.
    assert worker_cost(1 * MIB, 52 * MIB, 12 * MIB) == 41 * MIB
    assert worker_cost(-1, 1, 2) == 0


def test_limits_of_cgroup_v2_and_v1_parse() -> None:
    assert parse_limit(b"268435456\n") == 256 * MIB
    assert parse_limit(b"max\n") == UNLIMITED
    assert parse_limit(b"9223372036854771712\n") == UNLIMITED  # v1 without a limit


def test_memory_stat_and_proc_figures_parse() -> None:
    stat = b"cache 774144\nrss 299008\ninactive_file 393216\ntotal_inactive_file 400000\n"
    assert parse_stat(stat, b"total_inactive_file") == 400000
    assert parse_stat(stat, b"inactive_file") == 393216
    assert parse_stat(stat, b"active_file") == 0
    smaps = (b"00400000-7ffd [rollup]\nRss:               52000 kB\nPss:               20000 kB\n"
             b"Shared_Clean:      30000 kB\nPrivate_Clean:       100 kB\n"
             b"Private_Dirty:     15772 kB\nSwap:                  0 kB\n")
    assert parse_private(smaps) == 15872 * 1024
    status = b"Name:\tpython3\nVmPeak:\t  90000 kB\nVmHWM:\t   53248 kB\nVmRSS:\t   52224 kB\n"
    assert parse_status_kb(status, b"VmHWM") == 52 * MIB
    assert parse_status_kb(status, b"VmRSS") == 51 * MIB
    assert parse_status_kb(status, b"VmSwap") == 0


def _cgroup(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cgroup_reader_takes_v2_and_leaves_out_the_inactive_page_cache(
        tmp_path: Path) -> None:
    _cgroup(tmp_path, {"/sys/fs/cgroup/memory.max": "268435456\n",
                       "/sys/fs/cgroup/memory.current": f"{100 * MIB}\n",
                       "/sys/fs/cgroup/memory.stat": f"anon 1\ninactive_file {10 * MIB}\n"})
    assert CgroupMemory(True, str(tmp_path)).read() == (256 * MIB, 90 * MIB)


def test_the_cgroup_reader_falls_back_to_v1(tmp_path: Path) -> None:
    _cgroup(tmp_path, {"/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{128 * MIB}\n",
                       "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{30 * MIB}\n",
                       "/sys/fs/cgroup/memory/memory.stat":
                       f"inactive_file 5\ntotal_inactive_file {4 * MIB}\n"})
    memory = CgroupMemory(True, str(tmp_path))
    assert memory.read() == (128 * MIB, 26 * MIB)
    # The limit is read each time: a stem cell gets its function's limit after it started.
    (tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text(f"{256 * MIB}\n")
    assert memory.read() == (256 * MIB, 26 * MIB)


def test_outside_a_container_or_without_cgroup_files_nothing_is_capped(tmp_path: Path) -> None:
    assert CgroupMemory(False).read() == (UNLIMITED, 0)
    assert CgroupMemory(True, str(tmp_path)).read() == (UNLIMITED, 0)
    _cgroup(tmp_path, {"/sys/fs/cgroup/memory.max": "garbage\n",
                       "/sys/fs/cgroup/memory.current": "1\n",
                       "/sys/fs/cgroup/memory.stat": ""})
    assert CgroupMemory(True, str(tmp_path)).read() == (UNLIMITED, 0)


def test_this_process_figures_read_from_proc() -> None:
    import os

    assert capacity.read_private(os.getpid()) > 0
    assert capacity.read_rss(os.getpid()) > 0
    assert capacity.read_rss(0) == 0


def test_workers_held_counts_those_that_exist_and_those_that_fit() -> None:
    """What lambdad is told: 128 MiB, 8 MiB margin, 20 MiB in use, one worker that will
    grow by 40 MiB more and costs 42 MiB: 60 MiB of room, one more worker, 2 in all."""
    assert workers_held(1, limit=128 * MIB, used=20 * MIB, cost=42 * MIB,
                        pending=40 * MIB, most=1000) == 2
    # Never below 1 (a full instance still serves one at a time), never above `most`.
    assert workers_held(0, limit=16 * MIB, used=16 * MIB, cost=MIB, pending=0,
                        most=1000) == 1
    assert workers_held(3, limit=UNLIMITED, used=0, cost=MIB, pending=0, most=1000) == 1000
    assert workers_held(5, limit=128 * MIB, used=120 * MIB, cost=MIB, pending=0,
                        most=1000) == 5  # those that exist count, memory or not
