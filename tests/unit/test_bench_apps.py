"""The `apps` bench group's pure figures (bench/appstats.py): memory read from
/proc/<pid>/smaps_rollup, the scale-out sample rule, REPORT durations and the verdicts, so the
figures docs/performance.md quotes for issue 17 come from tested code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import appstats
from appstats import ProcMemory

# A real smaps_rollup (Linux 5.x/6.x), numbers changed.
ROLLUP = """\
55d0c0a00000-7ffd6a9fe000 ---p 00000000 00:00 0                          [rollup]
Rss:               15872 kB
Pss:                6021 kB
Pss_Anon:           4100 kB
Pss_File:           1921 kB
Pss_Shmem:             0 kB
Shared_Clean:       9000 kB
Shared_Dirty:        800 kB
Private_Clean:       272 kB
Private_Dirty:      5800 kB
Referenced:        15000 kB
Anonymous:          6000 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""


def test_smaps_rollup_is_parsed_in_kb_without_the_header() -> None:
    fields = appstats.parse_smaps_rollup(ROLLUP)
    assert fields["Rss"] == 15872
    assert fields["Private_Dirty"] == 5800
    assert fields["Pss_Anon"] == 4100
    assert not any("rollup" in name or "-" in name for name in fields)


def test_uss_is_the_private_pages_only() -> None:
    memory = ProcMemory.of(ROLLUP)
    assert memory == ProcMemory(rss_kb=15872, pss_kb=6021, uss_kb=272 + 5800)


@pytest.mark.parametrize("text", ["", "Rss: 12 kB\n", "Pss: x kB\nRss: 1 kB\n",
                                  "not a rollup at all"])
def test_a_file_that_is_not_a_rollup_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ProcMemory.of(text)


def test_odd_lines_are_skipped() -> None:
    assert appstats.parse_smaps_rollup("Rss: 5 kB\nVmFlags: rd wr\nPss: 3 MB\nFoo: 1 kB x\n") \
        == {"Rss": 5}


def mem(rss: int, pss: int, uss: int) -> ProcMemory:
    return ProcMemory(rss_kb=rss, pss_kb=pss, uss_kb=uss)


SUPERVISOR = 100
ZYGOTE, WORKER = appstats.ZYGOTE_OOM_SCORE, appstats.WORKER_OOM_SCORE


def test_worker_memory_tells_the_roles_apart_by_score_and_parent() -> None:
    processes = [
        (SUPERVISOR, 90, 0, mem(9000, 4000, 1000)),
        (130, SUPERVISOR, WORKER, mem(30000, 9000, 6000)),  # a later worker, listed first
        (101, SUPERVISOR, ZYGOTE, mem(40000, 20000, 2000)),
        (120, SUPERVISOR, WORKER, mem(41000, 21000, 3000)),  # the first worker: lowest pid
        (125, SUPERVISOR, WORKER, mem(30000, 9000, 5000)),
        (131, 101, ZYGOTE, mem(40000, 100, 50)),  # a middle process of a fork, exiting
    ]
    got = appstats.worker_memory(processes, SUPERVISOR)
    assert got.first_kb == 20000 + 21000
    assert got.extra_uss_kb == [5000, 6000]
    assert got.supervisor_pss_kb == 4000
    assert got.first_worker_rss_kb == 41000
    assert got.total_pss_kb == 4000 + 9000 + 20000 + 21000 + 9000 + 100


@pytest.mark.parametrize("processes", [
    [(SUPERVISOR, 1, 0, mem(1, 1, 1)), (101, SUPERVISOR, ZYGOTE, mem(1, 1, 1))],  # no worker
    [(SUPERVISOR, 1, 0, mem(1, 1, 1)), (120, SUPERVISOR, WORKER, mem(1, 1, 1))],  # no zygote
    [(101, SUPERVISOR, ZYGOTE, mem(1, 1, 1)), (102, SUPERVISOR, ZYGOTE, mem(1, 1, 1)),
     (120, SUPERVISOR, WORKER, mem(1, 1, 1))],  # two zygotes: not this runtime
])
def test_worker_memory_refuses_an_instance_it_cannot_read(
        processes: list[tuple[int, int, int, ProcMemory]]) -> None:
    with pytest.raises(ValueError):
        appstats.worker_memory(processes, SUPERVISOR)


def test_extra_share_is_the_largest_extra_worker_against_the_first() -> None:
    assert appstats.extra_share(10000, [1000, 4000, 2000]) == pytest.approx(0.4)
    assert appstats.extra_share(10000, []) == 0.0
    assert appstats.extra_share(0, [5]) == 0.0


def test_a_scale_out_step_counts_only_when_one_worker_was_forked() -> None:
    assert appstats.fresh_sample(9_000_000, workers_before=1, workers_after=2) == 9_000_000
    assert appstats.fresh_sample(9_000_000, workers_before=3, workers_after=3) is None
    assert appstats.fresh_sample(9_000_000, workers_before=3, workers_after=5) is None
    assert appstats.fresh_sample(9_000_000, workers_before=2, workers_after=1) is None


def test_from_zero_overhead_is_init_minus_import() -> None:
    assert appstats.from_zero_overhead(1226.9, 1210.5) == pytest.approx(16.4)


def test_report_durations_by_request_id() -> None:
    logs = ("2026-11-28T06:40:00Z v1 abc out START RequestId: abc Version: 1\n"
            "2026-11-28T06:40:00Z v1 abc out END RequestId: abc\n"
            "2026-11-28T06:40:00Z v1 abc out REPORT RequestId: abc\tDuration: 61.25 ms\t"
            "Billed Duration: 62 ms\tMemory Size: 256 MB\tMax Memory Used: 40 MB\n"
            "REPORT RequestId: def\tDuration: 0.40 ms\tBilled Duration: 1 ms\n"
            "greeting World (request REPORT RequestId)\n")
    assert appstats.report_durations(logs) == {"abc": 61.25, "def": 0.40}


def test_memory_waits_and_caps_from_the_logs() -> None:
    logs = ("2026-11-28T06:40:00Z v1 - err [WARNING] memory caps this instance at 1 worker "
            "(limit 128 MiB, ...)\n"
            "2026-11-28T06:40:00Z v1 abc out REPORT RequestId: abc\tDuration: 61.25 ms\t"
            "Billed Duration: 62 ms\tMemory Size: 256 MB\tMax Memory Used: 40 MB\t"
            "Start: warm\tMemory Wait: 456.79 ms\n"
            "REPORT RequestId: def\tDuration: 0.40 ms\tBilled Duration: 1 ms\n"
            "v1 - err [WARNING] memory caps this instance at 12 workers (limit 256 MiB)\n"
            "v1 ghi out ghi\tprint('Memory Wait: 3 ms') memory caps this instance at 7\n")
    assert appstats.memory_waits(logs) == {"abc": 456.79}
    assert appstats.memory_caps(logs) == [1, 12]


def test_verdict() -> None:
    assert appstats.verdict(True) == "PASS"
    assert appstats.verdict(False) == "MISS"
