"""How many workers the instance's memory holds: the supervisor's worker-count policy.

Every worker is a fork of the zygote: it costs what it writes (its private pages), which
for an import-heavy app is many MiB once it served its first request (FastAPI: ~15 MiB of
refcounts and lazy caches). The instance's container has one memory limit for all of
them; forking a worker per waiting request up to the function's concurrency made the
kernel's OOM killer end workers in the middle of requests. So before the supervisor forks
another worker, it asks `starts_allowed`: the memory in use (the cgroup's figure, the page
cache the kernel can drop excluded), plus what the workers already started will still
grow by, plus one more worker and a margin, must fit the limit. When it does not, the
request waits for the next free worker (FIFO, in the supervisor's queue) instead: it is
late, never failed. At least one worker is always allowed.

A worker's cost is measured, not guessed: its private pages (smaps_rollup's Private_Clean
+ Private_Dirty) plus what it freed since its peak (VmHWM - VmRSS: a handler that
allocates 40 MiB and drops it returns the pages to the kernel, but will take them again
next time). Until one worker was measured after a request, a worker is assumed to cost as
much as the zygote's resident memory (what it could copy by writing to everything it
shares), so a burst at a fresh instance cannot outrun the first measurement by much.

Pure functions and parsers (bytes in, numbers out) first; `CgroupMemory`, the reader of
the container's cgroup files (v2 or v1), last.
"""

from __future__ import annotations

import os

MIB = 1 << 20
# Kept free of workers: the supervisor's and zygote's own growth (log queues, buffers, a
# request's body), the kernel's per-process memory that smaps does not show (page tables,
# kernel stacks), and the error of measuring a worker after its request rather than
# during it.
MIN_MARGIN = 8 * MIB
MARGIN_SHARE = 16  # 1/16 of the limit (16 MiB of 256 MiB), at least MIN_MARGIN
# No memory figure: the cgroup has no limit (or none is readable), e.g. a runtime run
# outside a container. Then the workers are bounded by lambdad's concurrency only.
UNLIMITED = 1 << 62


def margin(limit: int) -> int:
    """The bytes of the limit that no worker may be started into."""
    return max(MIN_MARGIN, limit // MARGIN_SHARE)


def worker_cost(private: int, hwm: int, rss: int) -> int:
    """A worker's cost at its peak: its private pages now plus what it freed since its
    peak resident size (both bytes)."""
    return max(0, private) + max(0, hwm - rss)


def starts_allowed(wanted: int, *, limit: int, used: int, cost: int, pending: int,
                   workers: int) -> int:
    """How many of `wanted` workers may be started now (0 <= n <= wanted).

    `limit` and `used` are the cgroup's bytes, `cost` what one worker takes at its peak,
    `pending` what the workers that exist (`workers`, live or starting) will still grow by
    before they reach `cost`. A first worker is always allowed: with none, no request
    could ever be served."""
    if wanted <= 0:
        return 0
    if limit >= UNLIMITED:
        return wanted
    room = limit - margin(limit) - used - pending
    fits = room // cost if cost > 0 else wanted
    allowed = max(0, min(wanted, fits))
    if workers == 0:
        allowed = max(1, allowed)
    return allowed


def workers_held(workers: int, *, limit: int, used: int, cost: int, pending: int,
                 most: int) -> int:
    """How many workers the instance's memory holds in all, 1 <= n <= `most`: those that
    exist (`workers`, live or starting) plus the starts it allows now. This is what lambdad
    is told (`Lambda-Workers`), so it sends no more requests at once than workers fit."""
    more = starts_allowed(max(0, most - workers), limit=limit, used=used, cost=cost,
                          pending=pending, workers=workers)
    return max(1, min(most, workers + more))


def parse_limit(text: bytes) -> int:
    """memory.max (v2: bytes or "max") or memory.limit_in_bytes (v1: bytes, a huge number
    when there is no limit)."""
    value = text.strip()
    if value == b"max":
        return UNLIMITED
    number = int(value)
    return UNLIMITED if number >= UNLIMITED else number


def parse_stat(text: bytes, key: bytes) -> int:
    """One field of memory.stat (or /proc/PID/status-like "key value" lines); 0 if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(b" ")
        if name == key:
            return int(value.split()[0])
    return 0


def parse_private(smaps_rollup: bytes) -> int:
    """A process's private bytes (USS) from /proc/PID/smaps_rollup (figures in kB)."""
    total = 0
    for line in smaps_rollup.splitlines():
        if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def parse_status_kb(status: bytes, key: bytes) -> int:
    """A "Key:   N kB" figure of /proc/PID/status, in bytes; 0 if absent."""
    at = status.find(b"\n" + key + b":")
    if at < 0:
        return 0
    start = at + len(key) + 2
    return int(status[start:status.index(b"kB", start)]) * 1024


class CgroupMemory:
    """The container's memory limit and use, read from its cgroup (v2, else v1). Only
    meaningful in the instance's own container (the supervisor is PID 1 there); elsewhere
    `enabled=False` and the limit reads as UNLIMITED."""

    V2 = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
          "/sys/fs/cgroup/memory.stat", b"inactive_file")
    V1 = ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
          "/sys/fs/cgroup/memory/memory.usage_in_bytes",
          "/sys/fs/cgroup/memory/memory.stat", b"total_inactive_file")

    def __init__(self, enabled: bool, root: str = "") -> None:
        self.fds: tuple[int, int, int] | None = None
        self.cache_key = b""
        if not enabled:
            return
        for limit, usage, stat, key in (self.V2, self.V1):
            try:
                fds = tuple(os.open(root + p, os.O_RDONLY | os.O_CLOEXEC)
                            for p in (limit, usage, stat))
            except OSError:
                continue
            self.fds = (fds[0], fds[1], fds[2])
            self.cache_key = key
            return

    def read(self) -> tuple[int, int]:
        """(limit, used) in bytes; used leaves out the inactive page cache, which the kernel
        drops before it kills anything (as `docker stats` does)."""
        if self.fds is None:
            return UNLIMITED, 0
        try:
            limit = parse_limit(os.pread(self.fds[0], 64, 0))
            usage = int(os.pread(self.fds[1], 64, 0))
            cache = parse_stat(os.pread(self.fds[2], 16384, 0), self.cache_key)
        except (OSError, ValueError):
            return UNLIMITED, 0
        return limit, max(0, usage - cache)


def read_private(pid: int) -> int:
    """A live process's private bytes, from /proc (OSError if it ended meanwhile)."""
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        return parse_private(f.read())


def read_rss(pid: int) -> int:
    """A process's resident bytes (0 if unreadable): the zygote's, for the prior cost."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            return parse_status_kb(f.read(), b"VmRSS")
    except (OSError, ValueError):
        return 0
