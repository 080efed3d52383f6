"""A probe for the one-connection tail: what holds lambdad's event loop, and how long.

Not part of lambdad. Python imports `sitecustomize` at start-up from PYTHONPATH, and the
bench's lambdad inherits the bench's environment, so

    TAILPROBE=run1 PYTHONPATH=bench/tailprobe .venv/bin/python bench/run.py --only warm
    .venv/bin/python bench/tailprobe/sitecustomize.py run1

records, in the lambdad process only: every garbage collection (generation, wall and CPU
time of the thread that ran it, when), and every log-store flush (entries, wall and CPU
time of its synchronous part: encoding the entries on the loop). With
TAILPROBE_FLUSH=SECONDS the flush interval is changed, for the comparison. The second
command prints the summary. Files go to /tmp/tailprobe-TAG-PID.json, rewritten each second.
"""

from __future__ import annotations

import gc
import glob
import json
import os
import statistics
import sys
import threading
import time
from typing import Any


def _install(tag: str) -> None:
    collections: list[tuple[int, float, float, float]] = []
    flushes: list[tuple[int, float, float, float]] = []
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
        else:
            collections.append((info["generation"], time.perf_counter() - started[0],
                                time.thread_time() - started[1], time.monotonic()))

    gc.callbacks.append(on_gc)
    import lambdad.logs.store as store

    if os.environ.get("TAILPROBE_FLUSH"):
        store.FLUSH_INTERVAL_S = float(os.environ["TAILPROBE_FLUSH"])  # type: ignore[misc]
    flush = store.LogStore.flush

    async def timed_flush(self: Any) -> None:
        pending = sum(len(entries) for entries in self._pending.values())
        chunks, spent = self._chunks, [0.0, 0.0]

        def timed_chunks(entries: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return chunks(entries)
            finally:
                spent[0] += time.perf_counter() - wall
                spent[1] += time.thread_time() - cpu

        self._chunks = timed_chunks
        try:
            await flush(self)
        finally:
            del self._chunks
            if pending:
                flushes.append((pending, spent[0], spent[1], time.monotonic()))

    store.LogStore.flush = timed_flush  # type: ignore[method-assign]
    began = time.monotonic()

    def dump() -> None:
        while True:
            time.sleep(1.0)
            with open(f"/tmp/tailprobe-{tag}-{os.getpid()}.json", "w") as out:
                json.dump({"began": began, "gc": collections, "flushes": flushes}, out)

    threading.Thread(target=dump, daemon=True, name="tailprobe").start()


def _summary(tag: str) -> None:
    for path in sorted(glob.glob(f"/tmp/tailprobe-{tag}-*.json")):
        with open(path) as src:
            data = json.load(src)
        print(path)
        for generation in (0, 1, 2):
            rows = [r for r in data["gc"] if r[0] == generation]
            if rows:
                cpu = sorted(r[2] * 1000 for r in rows)
                at = [round(r[3] - data["began"], 1) for r in rows][:5]
                print(f"  gc gen {generation}: {len(rows)} collections, CPU ms median "
                      f"{statistics.median(cpu):.2f} max {cpu[-1]:.2f}; first at s {at}")
        big = [r for r in data["flushes"] if r[0] >= 20]
        if big:
            wall = sorted(r[1] * 1000 for r in big)
            cpu = sorted(r[2] * 1000 for r in big)
            entries = sorted(r[0] for r in big)
            per = sum(cpu) * 1000 / sum(entries)
            print(f"  log flushes of >= 20 entries: {len(big)}; entries median "
                  f"{statistics.median(entries)} max {entries[-1]}; loop held: wall ms median "
                  f"{statistics.median(wall):.2f} p90 {wall[int(len(wall) * 0.9)]:.2f} max "
                  f"{wall[-1]:.2f}, CPU ms median {statistics.median(cpu):.2f} max "
                  f"{cpu[-1]:.2f}; {per:.1f} us CPU per entry")


if __name__ == "__main__":
    _summary(sys.argv[1])
elif os.environ.get("TAILPROBE") and sys.argv and sys.argv[0].endswith("lambdad"):
    _install(os.environ["TAILPROBE"])
