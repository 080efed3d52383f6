"""Pure figures of the `apps` group (bench/apps.py): memory from /proc, the verdicts.

Kept apart from the I/O so the numbers docs/performance.md quotes come from tested code
(tests/unit/test_bench_apps.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Issue 17's targets (printed as PASS/MISS, never asserted).
MAX_SCALE_OUT_P50_MS = 50.0
MAX_SCALE_OUT_P99_MS = 100.0
MAX_THAW_P50_MS = 25.0
MAX_FROM_ZERO_OVERHEAD_MS = 20.0
MAX_EXTRA_WORKER_SHARE = 0.40
MAX_BURST_P99_MS = 2000.0

# The runtime's oom_score_adj of its processes (lambda_runtime/worker.py): how the bench
# tells the zygote from a worker without entering the container.
ZYGOTE_OOM_SCORE = 200
WORKER_OOM_SCORE = 600


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup as {field: kB}; the header line (an address range) and
    anything not `Name: <n> kB` are skipped."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or len(parts) != 2 or parts[1] != "kB":
            continue
        try:
            fields[name.strip()] = int(parts[0])
        except ValueError:
            continue
    return fields


@dataclass(frozen=True)
class ProcMemory:
    """One process's memory, in kB: resident, proportional (shared pages split among
    their users) and unique (pages no other process maps: what it wrote, copy-on-write)."""

    rss_kb: int
    pss_kb: int
    uss_kb: int

    @classmethod
    def of(cls, text: str) -> ProcMemory:
        f = parse_smaps_rollup(text)
        if "Rss" not in f or "Pss" not in f:
            raise ValueError("not an smaps_rollup: no Rss or Pss line")
        uss = f.get("Private_Clean", 0) + f.get("Private_Dirty", 0) + f.get("Private_Hugetlb", 0)
        return cls(rss_kb=f["Rss"], pss_kb=f["Pss"], uss_kb=uss)


@dataclass(frozen=True)
class WorkerMemory:
    """An instance's memory by role: the first environment (zygote and first worker, the
    PSS sum: what one interpreter with the function imported costs) and each extra worker's
    USS (what it owns alone)."""

    first_kb: int
    extra_uss_kb: list[int]
    supervisor_pss_kb: int
    first_worker_rss_kb: int = 0

    total_pss_kb: int = 0  # every process of the instance


def worker_memory(processes: list[tuple[int, int, int, ProcMemory]], supervisor_pid: int
                  ) -> WorkerMemory:
    """From (pid, parent pid, oom_score_adj, memory) of an instance's processes. The zygote
    and the workers are the supervisor's children (a worker's middle process, exiting, is
    the zygote's child with the zygote's score); the first worker is the lowest pid (forked
    first; pids are not reused this soon)."""
    children = [(pid, score, m) for pid, ppid, score, m in processes if ppid == supervisor_pid]
    zygotes = [m for _, score, m in children if score == ZYGOTE_OOM_SCORE]
    workers = sorted((pid, m) for pid, score, m in children if score == WORKER_OOM_SCORE)
    supervisor = [m for pid, _, _, m in processes if pid == supervisor_pid]
    if len(zygotes) != 1 or not workers:
        raise ValueError(f"expected one zygote and a worker, found {len(zygotes)} zygote(s) "
                         f"and {len(workers)} worker(s)")
    first = zygotes[0].pss_kb + workers[0][1].pss_kb
    return WorkerMemory(first_kb=first, extra_uss_kb=[m.uss_kb for _, m in workers[1:]],
                        supervisor_pss_kb=supervisor[0].pss_kb if supervisor else 0,
                        first_worker_rss_kb=workers[0][1].rss_kb,
                        total_pss_kb=sum(m.pss_kb for _, _, _, m in processes))


def extra_share(first_kb: float, extra_uss_kb: list[int]) -> float:
    """The largest extra worker's USS against the first environment (0 with none)."""
    if not extra_uss_kb or first_kb <= 0:
        return 0.0
    return max(extra_uss_kb) / first_kb


def report_durations(log_text: str) -> dict[str, float]:
    """{request id: REPORT's Duration in ms} from `lambdactl logs` text: the time the
    handler ran in its worker, without the wait for a worker to be forked."""
    found: dict[str, float] = {}
    for match in _REPORT.finditer(log_text):
        found[match[1]] = float(match[2])
    return found


_REPORT = re.compile(r"REPORT RequestId: (\S+)\s+Duration: ([0-9.]+) ms")


def memory_waits(log_text: str) -> dict[str, float]:
    """{request id: REPORT's Memory Wait in ms}: the requests that waited for a worker
    because the instance's memory held no more (the runtime's worker cap)."""
    return {m[1]: float(m[2]) for m in _MEMORY_WAIT.finditer(log_text)}


def memory_caps(log_text: str) -> list[int]:
    """The worker counts the runtime said memory capped an instance at, in log order."""
    return [int(m[1]) for m in _CAP.finditer(log_text)]


_MEMORY_WAIT = re.compile(r"REPORT RequestId: (\S+)\t[^\n]*\tMemory Wait: ([0-9.]+) ms")
_CAP = re.compile(r"\[WARNING\] memory caps this instance at (\d+) workers?\b")


def from_zero_overhead(init_ms: float, import_ms: float) -> float:
    """What a cold start adds to the function's import: Server-Timing init minus import."""
    return init_ms - import_ms


def fresh_sample(probe_ns: int, workers_before: int, workers_after: int) -> int | None:
    """The probe of a scale-out step: sent while every worker of the instance was held busy
    (stopped), it waited for a worker forked for it, which the worker count confirms (one
    more). None when the count says otherwise (a worker died, or none was forked). A probe
    slower than the hold may have been served by a held worker once let go: its time is
    then still at least the hold (a MISS either way), so it counts as it was measured."""
    if workers_after != workers_before + 1:
        return None
    return probe_ns
