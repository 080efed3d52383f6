"""Stem-cell cold starts only, for A/B runs of two trees on a busy machine (issue 16).

`bench/run.py --only cold` times the whole cold group (cells, new containers, unpause, burst)
and on a 2-core host shared with other work its stem-cell p50 follows the load average more
than the code (20-50 ms at load 8-14 for either tree). This runs only the stem-cell rounds,
each after the pool is full and settled, and prints per round: the time to the full response,
lambdad's Server-Timing `init` and `function` (the first request in the instance), and the
CPU that the daemon's containers and lambdad used during the request (cpuacct and schedstat:
the load does not change these).

With `--isolate` (root only, cgroup v1): lambdad (a child of this process, which must run
under `chrt -f 20`) and the ready cells' processes run SCHED_FIFO, the cells' tasks moved to
the root cpu cgroup (Docker's have no real-time budget), so the request's own processes
never wait behind other work: what is left is the cold path and what competes with it inside
lambdad and the cells (another thread's Docker call, the pool's refill). Docker's own
processes are not boosted. Only this run's own cells are touched.

    chrt -f 20 .venv/bin/python bench/coldcells.py --rounds 15 --isolate
    PYTHONPATH=/tmp/abA chrt -f 20 .venv/bin/python bench/coldcells.py --rounds 15 --isolate
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import time
from pathlib import Path

import cold
import coldparts
from harness import BenchDaemon

CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker")
SETTLE_S = 0.3  # after the pool is full: the new cell's start-up off the timed round


def containers_cpu_ns(ids: list[str]) -> int:
    total = 0
    for container_id in ids:
        with contextlib.suppress(OSError):
            total += int((CPUACCT / container_id / "cpuacct.usage").read_text())
    return total


def process_cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total


def isolate(container_id: str) -> None:
    """The container's tasks to the root cpu cgroup, SCHED_FIFO 20 (root, cgroup v1)."""
    tasks = (CPU_CGROUP / "docker" / container_id / "tasks").read_text().split()
    for tid in map(int, tasks):
        (CPU_CGROUP / "tasks").write_text(str(tid))
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--isolate", action="store_true")
    parser.add_argument("--label", default=os.environ.get("PYTHONPATH", "this tree"))
    args = parser.parse_args()
    if args.isolate and os.sched_getscheduler(0) != os.SCHED_FIFO:
        parser.error("--isolate: run under `chrt -f 20` (lambdad inherits it)")
    daemon = BenchDaemon(extra_args=["--cell-pool-size", "2", "--pause-after", "0.5",
                                     "--freeze-window", "0"])
    daemon.start()
    try:
        assert daemon.process is not None
        docker = coldparts.Containers(daemon)
        names = [f"bench-cell-{i}" for i in range(cold.CELL_FUNCTIONS)]
        infos = [coldparts.deploy(daemon, cold.GREET, name, *cold.SCALE_TO_ZERO) for name in names]
        cell_class = cold._cell_class(infos[0])
        totals: list[float] = []
        inits: list[float] = []
        firsts: list[float] = []
        cells_cpu: list[float] = []
        lambdad_cpu: list[float] = []
        isolated: set[str] = set()
        last = -1
        for round_ in range(args.rounds + 1):  # the first is a warm-up
            index, _ = coldparts.rotation(docker, names, last)
            last = index
            coldparts.wait(lambda: len(docker.ready_cells(cell_class)) >= 2, "a full pool")
            time.sleep(SETTLE_S)
            for cell in docker.ready_cells(cell_class):
                if args.isolate and cell["Id"] not in isolated:
                    isolated.add(cell["Id"])
                    isolate(cell["Id"])
            ids = [str(c["Id"]) for c in docker.all()]
            containers0 = containers_cpu_ns(ids)
            lambdad0 = process_cpu_ns(daemon.process.pid)
            reply = cold._request(daemon.gateway_port, names[index], cold.GREET_EXPECTED)
            containers1 = containers_cpu_ns(ids)
            lambdad1 = process_cpu_ns(daemon.process.pid)
            with contextlib.suppress(coldparts.ColdBenchError):
                coldparts.wait(functools.partial(cold._renamed, docker, names[index]),
                                "the specialized cell's rename", timeout=5)
            if round_ == 0 or reply.start != "cell":
                continue
            totals.append(reply.ns / 1e6)
            inits.append(reply.timing.get("init", float("nan")))
            firsts.append(reply.timing.get("function", float("nan")))
            cells_cpu.append((containers1 - containers0) / 1e6)
            lambdad_cpu.append((lambdad1 - lambdad0) / 1e6)
            print(f"  round {round_}: {totals[-1]:.1f} ms (init {inits[-1]:.1f}, first request "
                  f"{firsts[-1]:.1f}; CPU: cells {cells_cpu[-1]:.1f}, lambdad "
                  f"{lambdad_cpu[-1]:.1f} ms)", flush=True)
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"{args.label}: {len(totals)} rounds, p50 {statistics.median(totals):.2f} ms, "
              f"init p50 {statistics.median(inits):.2f} ms, first request p50 "
              f"{statistics.median(firsts):.2f} ms; CPU during the request p50: cells "
              f"{statistics.median(cells_cpu):.2f} ms, lambdad "
              f"{statistics.median(lambdad_cpu):.2f} ms; load {load}"
              + (" (isolated)" if args.isolate else ""), flush=True)
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
