"""The supervisor: the container's first process, the only one that never runs function code.

It alone holds the container's stdout and stderr (Docker's log stream), writes the
START/END/REPORT/INIT_REPORT frames, and tags every line the function's processes write
with the request that process was serving (see logs.py for the format); started with
LAMBDA_LOG_CHANNEL=1 it sends those lines to lambdad over a connection lambdad opens on its
socket instead (ChannelOutput, logchannel.py), never waiting for it. It makes itself
non-dumpable, so a process of the same user cannot open /proc/1/fd/*, read its memory or
ptrace it, and it is the subreaper of every process below it (PID 1 in a container, and
PR_SET_CHILD_SUBREAPER when run elsewhere), so it alone learns how a worker ended.

Processes (worker.py runs the function's side):
- the zygote, forked from the supervisor at start before anything else: it imports the
  handler when told to, then forks workers on request and never serves one;
- up to one worker per request in flight (lambdad sends at most the function's
  concurrency at once), started on demand and kept; a worker that dies is replaced. A
  worker starts only if the instance's memory holds it (capacity.py: the cgroup's limit and
  use, what a worker was measured to take); else the request waits for the next free
  worker, first come first served, and REPORT says how long (`Memory Wait`).
If the zygote dies once the function is loaded, no worker can start any more: the supervisor
exits non-zero and lambdad discards the instance. On SIGTERM (lambdad stopping the instance)
every worker gets SIGTERM, as Lambda's runtime does at shutdown, and SHUTDOWN_GRACE_S to end
while its output is still read; then everything left is killed.

One thread does everything, on an epoll loop: lambdad's connections, the workers' channels
and pipes, the zygote's channel, SIGCHLD. No locks, and the order of the log lines is the
order in which the loop handles events: a worker's pipes are drained before its END.
"""

from __future__ import annotations

import collections
import gc
import heapq
import os
import select
import selectors
import signal
import socket
import sys
import time

from . import capacity, channel, events, http1, logchannel, logs
from .worker import LOAD_ERRORS, zygote_main

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

OUT, ERR = 0, 1
READ_SIZE = 65536
# Everything a worker wrote before its reply is in its pipes; a pipe holds at most 1 MiB
# unless privileged, so a drain that reads this much has seen all of it.
DRAIN_LIMIT = 2 << 20
SPAWN_TIMEOUT_S = 30.0
EXIT_WAIT_S = 2.0
# How long the workers have, after their SIGTERM, before everything left is killed: Lambda
# gives a runtime 300-500 ms of its shutdown phase. lambdad's docker stop waits 1 s.
SHUTDOWN_GRACE_S = 0.5
# How long the log channel may take, at exit, to deliver what is queued; the rest goes to
# the container's stdout and stderr.
LOG_CLOSE_S = 0.2
# The log channel sends what was queued this long after the first write, so the lines of a
# few requests (START and a print, END and REPORT) go out in one sendmsg instead of two per
# request; a queue past LOG_SEND_NOW_BYTES goes at once, so a flood fills no cap for it.
# lambdad reads the channel every 20 ms (channel_stream.BATCH_S): the delay costs it nothing.
LOG_SEND_DELAY_S = 0.002
LOG_SEND_NOW_BYTES = 64 * 1024
# REPORT's Max Memory Used (VmHWM) costs a read of /proc/PID/status, 25-30 us here: it is
# read again after a request that ran PEAK_READ_AFTER_NS or more, or when the last read is
# PEAK_FRESH_NS old. A shorter request can add little to the peak unnoticed (touching memory
# costs about 60 us per MiB here), and the next read shows it.
PEAK_READ_AFTER_NS = 1_000_000
PEAK_FRESH_NS = 50_000_000
MAX_WORKERS = 1000  # lambdad's highest per-instance concurrency
# A worker's cost (capacity.py) is read after its first request, then again only once its
# peak (VmHWM, as REPORT reads it) grew by this much: a slowly growing heap costs a
# smaps_rollup read per MiB, not one per request.
MEASURE_GROWTH_KB = 1024
# lambdad is told how many workers the instance's memory holds (`Lambda-Workers`, the first
# header of a response) when a worker's cost was measured or a worker ended, and otherwise
# at most once per WORKERS_EVERY_NS while memory caps the instance (a lambdad that restarted
# or lost a response learns it again): one cgroup read a second, no cost per response.
WORKERS_EVERY_NS = 1_000_000_000
# A request that waited for memory and is still waiting, or running, this long before its
# deadline is answered by the runtime (504, `Lambda-Wait-Timeout`), its worker (if it ran)
# killed: the runtime made it late, so lambdad fails only that request instead of stopping
# the instance and the requests running in it at its own timeout.
WAIT_MARGIN_S = 0.1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
_JSON_HEADERS = b"Content-Type: application/json\r\n"
_UNHANDLED = _JSON_HEADERS + b"Lambda-Function-Error: Unhandled\r\n"
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def _prctl(option: int, value: int) -> bool:
    import ctypes  # here only: the zygote was forked before, without it

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0)


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


class Output:
    """The container's stdout and stderr, written in whole lines (blocking: when Docker
    reads slowly, the supervisor waits, and so do the writers behind it)."""

    def __init__(self, fds: tuple[int, int] = (1, 2)) -> None:
        self.fds = fds

    def write(self, which: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fds[which], view):]
            except OSError:  # Docker stopped reading: nothing left to tell
                return


class ChannelOutput:
    """The log lines for lambdad's log channel (LAMBDA_LOG_CHANNEL=1; logchannel.py), with
    Output's interface: queued, sent as the channel's socket takes them, never waited for.
    Until lambdad's log request arrives they wait in the queue (within its caps); at exit,
    what could not be delivered goes to the container's stdout and stderr (`fallback`)."""

    def __init__(self, fallback: Output) -> None:
        self.fallback = fallback
        self.queue = logchannel.Queue()
        self.sock: socket.socket | None = None
        self.sel: selectors.BaseSelector | None = None
        self.later: Callable[[float, Callable[[], None]], None] | None = None
        self.armed = False  # a send is due LOG_SEND_DELAY_S after the first write
        self.head: bytes | memoryview = b""  # the log request's answer, until sent
        self.watching = 0
        self.closed = False

    def write(self, which: int, data: bytes) -> None:
        if self.closed:
            self.fallback.write(which, data)
            return
        self.queue.put(which + 1, data, time.time_ns())
        if self.sock is None or self.watching & _WRITE:
            return  # not attached yet, or EPOLLOUT says when the socket takes more
        if self.later is None or self.queue.size >= LOG_SEND_NOW_BYTES:
            self._send()
        elif not self.armed:
            self.armed = True
            self.later(LOG_SEND_DELAY_S, self._due)

    def _due(self) -> None:
        self.armed = False
        if self.sock is not None and not self.watching & _WRITE:
            self._send()

    def attach(self, sock: socket.socket, sel: selectors.BaseSelector,
               later: Callable[[float, Callable[[], None]], None] | None = None) -> None:
        """`sock` carried lambdad's log request: from now on it is the channel. A previous
        reader (lambdad before a restart) is dropped. With `later` (the loop's timers),
        writes are sent in batches (LOG_SEND_DELAY_S); without, each at once."""
        self.detach()
        sock.setblocking(False)
        self.sock, self.sel, self.later = sock, sel, later
        self.head = logchannel.RESPONSE_HEAD
        self.watching = _READ
        sel.register(sock, _READ, (self._event, sock))
        self._send()

    def detach(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.sel is not None:
            try:  # noqa: SIM105
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
        sock.close()
        self.watching = 0
        self.head = b""
        self.queue.cut()

    def _event(self, sock: socket.socket) -> None:
        if sock is not self.sock:
            return
        if self.watching & _WRITE:
            self._send()
        if self.sock is None:
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # lambdad closed it (or went away)
            self.detach()
        # Anything lambdad sends after its request is ignored.

    def _send(self) -> None:
        sock = self.sock
        queue = self.queue
        while sock is not None:
            if not queue and not self.head:
                queue.report_drops(time.time_ns())  # the queue emptied: say what it lost
                if not queue:
                    break
            chunks = queue.pending()
            if self.head:
                chunks.insert(0, self.head)
            total = sum(map(len, chunks))
            try:
                sent = sock.sendmsg(chunks)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.detach()
                return
            full = sent < total
            if self.head:
                took = min(sent, len(self.head))
                self.head = self.head[took:]
                sent -= took
            queue.sent(sent)
            if full:
                break  # the socket takes no more now: EPOLLOUT says when it does
        if sock is None or self.sel is None:
            return
        want = _READ | _WRITE if (self.head or queue) else _READ
        if want != self.watching:
            self.watching = want
            self.sel.modify(sock, want, (self._event, sock))

    def close(self, timeout: float) -> None:
        """At exit: up to `timeout` s to deliver the queue, the rest to stdout and stderr;
        later writes go there directly."""
        deadline = time.monotonic() + timeout
        self.queue.report_drops(time.time_ns())
        while self.sock is not None and (self.head or self.queue):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            poll = select.poll()
            poll.register(self.sock, select.POLLOUT)
            if poll.poll(int(left * 1000) + 1):
                self._send()
        self.detach()
        self.closed = True
        records, _ = logchannel.split(self.queue.take_all())
        for kind, stream, payload, _ in records:
            if kind == logchannel.LINES and stream in logchannel.STREAMS:
                self.fallback.write(stream - 1, payload)
            elif kind == logchannel.DROPPED:
                lines, size = logchannel.COUNTS.unpack(payload)
                self.fallback.write(ERR, logs.outside(
                    f"[WARNING] {lines} log lines ({size} bytes) were dropped: the function "
                    "wrote faster than lambdad read its log channel"))


class OutsideText:
    """sys.stdout/sys.stderr of the supervisor: its own messages (which may quote a
    function's words) as untagged lines, never raw."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, output: Output, which: int) -> None:
        self.output = output
        self.which = which
        self.tagger = logs.LineTagger()

    def write(self, text: str) -> int:
        data = self.tagger.feed(text.encode("utf-8", "backslashreplace"), logs.OUTSIDE)
        if data:
            self.output.write(self.which, data)
        return len(text)

    def flush(self) -> None:
        data = self.tagger.flush(logs.OUTSIDE)
        if data:
            self.output.write(self.which, data)

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class Pipes:
    """One process's stdout and stderr as the supervisor reads them, tagged with the
    request that process serves. A request's START goes out with its first line, or with
    its END: a request that wrote nothing costs one write."""

    def __init__(self, loop: Loop, out_r: int, err_r: int) -> None:
        self.loop = loop
        self.fds = [out_r, err_r]
        self.taggers = (logs.LineTagger(), logs.LineTagger())
        self.tag = logs.OUTSIDE
        self.start = b""  # the current request's START, until its first line or its END
        self.poll = select.poll()  # for drains: which pipe has something, in one call
        for which, fd in enumerate(self.fds):
            os.set_blocking(fd, False)
            self.poll.register(fd, select.POLLIN)
            loop.sel.register(fd, _READ, (self._readable, which))

    @property
    def ended(self) -> bool:
        return self.fds == [-1, -1]

    def _emit(self, which: int, data: bytes) -> None:
        if data:
            if self.start:
                if which == OUT:  # START and the first lines in one write
                    data = self.start + data
                else:
                    self.loop.output.write(OUT, self.start)
                self.start = b""
            self.loop.output.write(which, data)

    def _readable(self, which: int) -> None:
        self._read(which)

    def _read(self, which: int) -> int:
        """Bytes read (tagged and written out); 0: nothing now; -1: the pipe ended."""
        fd = self.fds[which]
        if fd < 0:
            return -1
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        tagger = self.taggers[which]
        if data:
            self._emit(which, tagger.feed(data, self.tag))
            return len(data)
        self._emit(which, tagger.flush(self.tag))
        self.loop.sel.unregister(fd)
        self.poll.unregister(fd)
        os.close(fd)
        self.fds[which] = -1
        return -1

    def drain(self) -> None:
        """Everything written so far, then partial lines ended, under the current tag."""
        if not self.ended:
            for fd, _ in self.poll.poll(0):
                which = self.fds.index(fd)
                budget = DRAIN_LIMIT
                while budget > 0:
                    n = self._read(which)
                    if n <= 0:
                        break
                    budget -= n
        for which in (OUT, ERR):
            self._emit(which, self.taggers[which].flush(self.tag))

    def wait_end(self, timeout: float) -> None:
        """Reads until both pipes end (a process that is exiting), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while not self.ended and time.monotonic() < deadline:
            if self.poll.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                self.drain()

    def begin(self, line_tag: bytes, start: bytes) -> None:
        """Later lines are `line_tag`'s. (What the loop has not read yet by now was written
        by this worker's process a moment before its request, by a thread of its own: it
        may count as the request's.)"""
        for which in (OUT, ERR):
            self._emit(which, self.taggers[which].flush(self.tag))
        self.tag = line_tag
        self.start = start

    def end(self, writes: tuple[tuple[int, bytes], ...] = ()) -> None:
        """The current request's lines, its START if no line came, then `writes` (END and
        REPORT, a note); later lines are outside any request."""
        self.drain()
        start, self.start = self.start, b""
        for which, data in writes:
            if start and which == OUT:  # START, END and REPORT in one write
                data, start = start + data, b""
            if start:
                self.loop.output.write(OUT, start)
                start = b""
            self.loop.output.write(which, data)
        if start:
            self.loop.output.write(OUT, start)
        self.tag = logs.OUTSIDE


def peak_due(now_ns: int, read_ns: int | None, elapsed_ns: int) -> bool:
    """Whether REPORT's peak memory must be read again now (pure): never read yet, read
    PEAK_FRESH_NS ago or more, or after a request that ran PEAK_READ_AFTER_NS or more."""
    return (read_ns is None or elapsed_ns >= PEAK_READ_AFTER_NS
            or now_ns - read_ns >= PEAK_FRESH_NS)


class Worker:
    """The supervisor's handle on one worker process."""

    def __init__(self, chan: socket.socket, pipes: Pipes) -> None:
        self.pid = 0  # known from its hello
        self.chan = chan
        self.pipes = pipes
        self.state = "starting"  # -> idle <-> busy; gone
        self.inbuf = bytearray()
        self.outbuf: bytes | memoryview = b""
        self.writing = False
        self.status: int | None = None  # os.wait4's status once it ended
        self.maxrss_kb = 0
        self.job: Job | None = None
        self.broken: Exception | None = None  # why its channel failed during a request
        self.status_fd = -1
        self.peak_kb = 0  # VmHWM when last read, at peak_read_ns (monotonic)
        self.peak_read_ns: int | None = None
        # capacity.worker_cost when last measured (after a request), the private bytes
        # then, and the VmHWM (kB) it was measured at: measured again when the peak grows.
        self.cost = 0
        self.private = 0
        self.cost_hwm_kb = -1

    def peak_mb(self, elapsed_ns: int = PEAK_READ_AFTER_NS) -> int:
        """The kernel's figure for this process's peak memory (VmHWM), not the worker's;
        after a short request, the figure read at most PEAK_FRESH_NS ago (peak_due)."""
        if self.status is not None or self.status_fd < 0:
            return self.maxrss_kb // 1024
        now = time.monotonic_ns()
        if not peak_due(now, self.peak_read_ns, elapsed_ns):
            return self.peak_kb // 1024
        try:
            # At a line's start: the Name line, first, is the worker's to choose (its comm).
            hwm = capacity.parse_status_kb(os.pread(self.status_fd, 4096, 0), b"VmHWM")
            if not hwm:
                raise ValueError("no VmHWM")
            self.peak_kb = max(self.peak_kb, hwm // 1024)
            self.peak_read_ns = now
        except (OSError, ValueError):
            return max(self.peak_kb, self.maxrss_kb) // 1024
        return self.peak_kb // 1024

    def kill(self, *, group: bool = False) -> None:
        """SIGKILL; with `group`, the processes it started in its process group too."""
        if self.pid > 1 and self.status is None:
            if group:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                    return
                except OSError:
                    pass
            try:  # noqa: SIM105
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass


class Job:
    """One request on its way through a worker."""

    __slots__ = ("conn", "deadline_ms", "hooks_ms", "init_ms", "memory_wait", "message",
                 "queued_ns", "request", "request_id", "start", "started_ns", "timed_out",
                 "waited_ns")

    def __init__(self, conn: Conn, request: http1.Request, message: bytes, request_id: str,
                 start: str) -> None:
        self.conn = conn
        self.request = request
        self.message = message
        self.request_id = request_id
        self.start = start
        self.init_ms: float | None = None
        self.hooks_ms = 0.0  # of init_ms, the before-snapshot hooks'
        self.started_ns = 0
        self.queued_ns = time.perf_counter_ns()
        self.waited_ns = 0  # for a worker, from queued_ns until it ran
        self.memory_wait = False  # a worker it needed was not started: memory was short
        self.deadline_ms = 0  # lambdad's deadline for it (Lambda-Deadline-Ms, wall clock)
        self.timed_out = False  # answered by _wait_expired; its worker was killed


class Conn:
    """One of lambdad's connections: requests in order, one at a time."""

    __slots__ = ("buf", "busy", "closed", "closing", "continue_sent", "out", "sock", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out: bytes | memoryview = b""  # not sent yet: watched for writing only
        self.busy = False  # a request of it is being served
        self.closing = False  # close once `out` is sent
        self.closed = False
        self.continue_sent = False
        self.writing = False  # watched for writing (while `out` waits), not reading


class Loop:
    """The selector, timers, callbacks to run next, and the container's output."""

    def __init__(self, output: Output | ChannelOutput) -> None:
        self.output = output
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.ready: collections.deque[Callable[[], None]] = collections.deque()
        self.seq = 0

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, callback))

    def soon(self, callback: Callable[[], None]) -> None:
        """After the current event (no recursion through a connection's pipelined requests)."""
        self.ready.append(callback)

    def once(self) -> None:
        timeout = 0.0 if self.ready else None
        if self.timers and timeout is None:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, _ in self.sel.select(timeout):
            callback, arg = key.data
            self._call(callback, arg)
        for _ in range(len(self.ready)):
            self._call(self.ready.popleft(), None)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            self._call(heapq.heappop(self.timers)[2], None)

    @staticmethod
    def _call(callback: Callable[..., None], arg: object) -> None:
        try:
            if arg is None:
                callback()
            else:
                callback(arg)
        except Exception:  # a runtime bug: logged (untagged), and the instance goes on
            import traceback

            print(f"[ERROR] runtime: {traceback.format_exc()}", end="", file=sys.stderr)


def hooks_duration(value: object, init_ms: float) -> float:
    """The zygote's before-snapshot hooks' time (ms) as it claims it, within 0..init_ms: the
    zygote runs the function's code, so its word is bounded by what the supervisor timed."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return 0.0
    return min(float(value), init_ms)


def describe_exit(status: int | None, oom: bool, memory_mb: int) -> tuple[str, str]:
    """(errorType, what happened) of a worker that ended during a request."""
    if status is None:
        return "Runtime.ExitError", "stopped answering"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL and oom:
            return "Runtime.OutOfMemory", f"out of memory: limit {memory_mb} MiB"
        return "Runtime.ExitError", f"killed by signal {sig}"
    return "Runtime.ExitError", f"exited with code {os.waitstatus_to_exitcode(status)}"


class _OomCounter:
    """The container's count of OOM kills (cgroup v2 or v1), read when a worker was killed.
    Only meaningful when the supervisor is the container's first process."""

    PATHS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")

    def __init__(self, enabled: bool) -> None:
        self.path = next((p for p in self.PATHS if enabled and os.path.exists(p)), "")
        self.seen = self.read()

    def read(self) -> int:
        if not self.path:
            return 0
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    if line.startswith(b"oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def new_kill(self) -> bool:
        """Whether an OOM kill is not yet blamed on a worker: each kill is claimed once, so
        several workers killed at once are each reported as out of memory."""
        count = self.read()
        if count > self.seen:
            self.seen += 1
            return True
        return False

    def claim(self, status: int | None) -> bool:
        """Whether a process that ended with `status` was the OOM killer's: only a
        SIGKILL may claim one of its kills (a crash at the same moment claims none)."""
        return (status is not None and os.WIFSIGNALED(status)
                and os.WTERMSIG(status) == signal.SIGKILL and self.new_kill())


class Pool:
    """Which worker serves which request, and when to start one (pure bookkeeping).

    A request that finds no idle worker waits, first come first served; a worker is
    started for each waiting request that the starts under way do not cover (lambdad sends
    at most the function's concurrency at once, so there are never more workers than
    that), up to the cap. A start that fails while no worker lives and none is starting
    fails the requests that wait.
    """

    def __init__(self, cap: int = MAX_WORKERS) -> None:
        self.cap = cap
        self.idle: list[Worker] = []
        self.live = 0  # idle or busy
        self.starting = 0
        self.waiting: collections.deque[Job] = collections.deque()

    def starts_wanted(self) -> int:
        return max(0, min(len(self.waiting) - self.starting,
                          self.cap - self.live - self.starting))

    def pairs(self) -> list[tuple[Worker, Job]]:
        """Idle workers matched with waiting requests (the most recently used first)."""
        matched = []
        while self.idle and self.waiting:
            matched.append((self.idle.pop(), self.waiting.popleft()))
        return matched

    def hopeless(self) -> bool:
        return self.live == 0 and self.starting == 0 and bool(self.waiting)


class Supervisor:
    """Loads the function into the zygote, runs each request on a worker, frames the logs."""

    def __init__(self, env: dict[str, str]) -> None:
        output: Output | ChannelOutput = Output()
        # The log channel is lambdad's choice, made when it starts the runtime.
        self.channel = ChannelOutput(output) if env.get("LAMBDA_LOG_CHANNEL") == "1" else None
        if self.channel is not None:
            output = self.channel
        # First, while this process has nothing else: the zygote gets a clean copy.
        self.zygote_pid, self.ctl, out_r, err_r = _fork_zygote()
        sys.stdout = OutsideText(output, OUT)
        sys.stderr = OutsideText(output, ERR)
        if not (_prctl(PR_SET_DUMPABLE, 0) and _prctl(PR_SET_CHILD_SUBREAPER, 1)):
            raise OSError("prctl failed: the log channel cannot be protected")
        self.loop = Loop(output)
        self.zygote_pipes = Pipes(self.loop, out_r, err_r)
        self.ctl_buf = bytearray()
        self.ctl_open = True
        self.state = "idle"  # -> initializing -> ready | failed; stopping at the end
        self.init_job: tuple[tuple[Conn, http1.Request] | None, float] | None = None
        self.init_result: dict[str, Any] | None = None
        self.pool = Pool()
        self.by_pid: dict[int, Worker] = {}
        self.early: dict[int, tuple[int, int]] = {}  # exits of pids not registered yet
        self.oom = _OomCounter(os.getpid() == 1)
        self.memory = capacity.CgroupMemory(os.getpid() == 1)
        self.capped_at = 0  # the worker count memory capped the instance at, as last logged
        self.capped_logged = 0.0  # when (monotonic)
        self.workers_told = 0  # the Lambda-Workers figure last sent (0: none yet)
        self.workers_told_ns = 0  # when it was worked out (perf_counter_ns)
        self.workers_due = True  # a cost was measured or a worker ended since
        self.version = "$LATEST"
        self.memory_mb = 128
        self._configure(env)
        self.init_ms: float | None = None  # reported by the first REPORT only
        self.hooks_ms = 0.0  # of which the before-snapshot hooks (snapshot_restore_py)
        self.listener: socket.socket | None = None
        self.outside_only = os.getpid() == 1
        self.fatal_code: int | None = None
        self.terminating = False  # SIGTERM or SIGINT came: the loop ends, shutdown follows
        self.socket_path = ""
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the loop
        self.loop.sel.register(wake_r, _READ, (self._woken, wake_r))
        self.loop.sel.register(self.ctl, _READ, (self._ctl_readable, self.ctl))

    def _configure(self, env: dict[str, str]) -> None:
        self.version = env.get("AWS_LAMBDA_FUNCTION_VERSION", self.version)
        try:  # noqa: SIM105
            self.memory_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", self.memory_mb))
        except ValueError:
            pass

    @property
    def output(self) -> Output | ChannelOutput:
        return self.loop.output

    # --- running -------------------------------------------------------------------------------

    def serve(self, listener: socket.socket, socket_path: str) -> None:
        """Serves lambdad until a signal handler raises (SIGTERM) or the instance fails."""
        self.listener = listener
        self.socket_path = socket_path
        listener.setblocking(False)
        self.loop.sel.register(listener, _READ, (self._accept, listener))
        # What start-up made lives as long as the process: out of the collector's sight, a
        # full collection under load scans only what requests left. (No gc.collect() first:
        # it costs ~7 ms here, before the first request; start-up leaves few cycles.)
        gc.freeze()
        while self.fatal_code is None and not self.terminating:
            self.loop.once()

    def load(self, spec: str, task_root: str, env: dict[str, str], started: float
             ) -> dict[str, Any]:
        """Loads the handler before the socket exists (not a stem cell); the result."""
        self._begin_init(spec, task_root, env, chdir=False, started=started, conn=None)
        while self.init_result is None and self.fatal_code is None and not self.terminating:
            self.loop.once()
        return self.init_result or {"ok": False}

    def terminate(self, signum: int, frame: object) -> None:
        """The SIGTERM/SIGINT handler: only a flag (the wakeup fd wakes the loop, which
        ends after the event it is handling, never halfway through one)."""
        self.terminating = True

    def shutdown(self, grace: float) -> None:
        """The instance stops: each worker gets SIGTERM, as Lambda's runtime does at its
        shutdown, so a handler the function set at import runs (in every worker, never in
        the zygote, which served nothing); their output is read and tagged as usual for up
        to `grace` seconds, then every process left, the zygote included, is killed.
        Requests still waiting get 503. After a fatal error, everything is killed at once."""
        if self.fatal_code is None and self.state != "stopping":
            self.state = "stopping"  # no worker starts from now on
            while self.pool.waiting:
                job = self.pool.waiting.popleft()
                self._fault(job.conn, job.request, events.ShuttingDown("the instance is stopping"))
            for worker in list(self.by_pid.values()):
                if worker.status is None:
                    try:  # noqa: SIM105
                        os.kill(worker.pid, signal.SIGTERM)
                    except OSError:
                        pass
            deadline = time.monotonic() + grace
            self.loop.later(grace, lambda: None)  # bounds the loop's wait
            while self.by_pid and time.monotonic() < deadline:
                self.loop.once()
        self.stop()

    def stop(self) -> None:
        """Ends every process of the function at once (the caller exits next)."""
        self.state = "stopping"
        for pid in (self.zygote_pid, *self.by_pid):
            try:  # noqa: SIM105
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _fatal(self, code: int) -> None:
        self.fatal_code = code
        self.stop()

    # --- lambdad's connections -----------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError:  # e.g. EMFILE: pause accepting instead of spinning
                self.loop.sel.unregister(listener)
                self.loop.later(0.01, lambda: self.loop.sel.register(
                    listener, _READ, (self._accept, listener)))
                return
            try:
                allowed = not self.outside_only or http1.from_outside(sock)
            except OSError:
                allowed = False
            if not allowed:
                sock.close()
                continue
            sock.setblocking(False)
            conn = Conn(sock)
            self.loop.sel.register(sock, _READ, (self._conn_event, conn))

    def _conn_event(self, conn: Conn) -> None:
        if conn.out:  # writable again
            self._flush(conn)
            return
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        if not conn.busy:
            self._next_request(conn)
        elif len(conn.buf) > http1.MAX_HEAD + http1.MAX_BODY:  # lambdad never sends so much
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        if not conn.closed:
            conn.closed = True
            self.loop.sel.unregister(conn.sock)
            conn.sock.close()

    def _send(self, conn: Conn, data: bytes, *, close: bool = False) -> None:
        if conn.closed:
            return
        conn.closing = conn.closing or close
        conn.out = memoryview(bytes(conn.out) + data if conn.out else data)
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            if not conn.writing:
                conn.writing = True
                self.loop.sel.modify(conn.sock, _WRITE, (self._conn_event, conn))
            return
        if conn.closing:
            self._close(conn)
            return
        if conn.writing:
            conn.writing = False
            self.loop.sel.modify(conn.sock, _READ, (self._conn_event, conn))
        if conn.buf and not conn.busy:  # pipelined requests, read while it was busy
            self.loop.soon(lambda: self._next_request(conn))

    def _respond(self, conn: Conn, request: http1.Request, status: int, headers: bytes,
                 body: bytes) -> None:
        """Answers `request`; then the next request on the connection, if any."""
        if conn.closed:
            return
        data = http1.response(status, headers, body, head_only=request.method == "HEAD",
                              close=request.close, http10=request.http10)
        conn.busy = False
        conn.continue_sent = False
        self._send(conn, data, close=request.close)

    def _next_request(self, conn: Conn) -> None:
        if conn.closed or conn.busy:
            return
        try:
            parsed = http1.take_request(conn.buf)
        except http1.BadRequest as exc:
            # Framing is lost: the stream cannot be reused.
            message = f"{http1.reason(exc.status)}: {exc}".encode()
            self._send(conn, http1.response(
                exc.status, b"Content-Type: text/plain; charset=utf-8\r\n", message,
                head_only=False, close=True, http10=False), close=True)
            return
        if parsed is None:
            return
        request, body = parsed
        if body is None:  # the head is here, the body is coming
            if (request.get("Expect").lower() == "100-continue" and not request.http10
                    and not conn.continue_sent):
                conn.continue_sent = True
                self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        conn.busy = True
        self._dispatch(conn, request, body)

    def _fault(self, conn: Conn, request: http1.Request, fault: events.RuntimeFault) -> None:
        """A runtime error of the request itself, before any function code ran."""
        self._respond(conn, request, fault.status, _JSON_HEADERS, events.error_body(fault))

    def _dispatch(self, conn: Conn, request: http1.Request, body: bytes) -> None:
        if request.get(logchannel.HEADER_NAME):  # only lambdad can send it (see logchannel)
            self._log_request(conn, request)
            return
        if self.state == "stopping":
            self._fault(conn, request, events.ShuttingDown("the instance is stopping"))
            return
        if self.state != "ready":
            self._specialize(conn, request, body)
            return
        request_id = request.get("Lambda-Request-Id")
        if not logs.valid_request_id(request_id):
            request_id = http1.random_request_id()
        now_ms = int(time.time() * 1000)
        try:
            deadline_ms = int(request.get("Lambda-Deadline-Ms"))
        except ValueError:
            deadline_ms = now_ms + http1.DEFAULT_TIMEOUT_MS
        kind = (request.get("Lambda-Invocation-Type") or "http").strip().lower()
        if kind not in http1.KINDS:
            self._fault(conn, request, events.InvalidPayload(
                f"unknown Lambda-Invocation-Type {kind!r}"))
            return
        start = request.get("Lambda-Start").strip().lower()
        if not start.isalpha() or len(start) > 16:
            start = ""
        message = channel.encode_request((kind, request.method, request.target, request.headers,
                                          body, request_id, deadline_ms, now_ms))
        job = Job(conn, request, message, request_id, start)
        job.deadline_ms = deadline_ms
        self.pool.waiting.append(job)
        self._schedule()

    def _log_request(self, conn: Conn, request: http1.Request) -> None:
        """lambdad asks for the log channel: this connection carries it from now on, in
        whatever state the instance is (a generic cell, loading, serving, stopping)."""
        if (self.channel is None or self.channel.closed or request.method != "GET"
                or request.target != logchannel.PATH):
            self._fault(conn, request, events.LogChannelOff(
                "this runtime writes its logs to stdout and stderr"))
            return
        conn.closed = True  # the connection is the channel's now
        self.loop.sel.unregister(conn.sock)
        self.channel.attach(conn.sock, self.loop.sel, self.loop.later)

    def close_logs(self) -> None:
        """The last step before exit: the log channel delivers what it can."""
        if self.channel is not None:
            self.channel.close(LOG_CLOSE_S)

    def _specialize(self, conn: Conn, request: http1.Request, body: bytes) -> None:
        """A stem cell's one control request: become this function, or report why not."""
        if request.method != "POST" or request.target != http1.INIT_PATH or self.state != "idle":
            self._fault(conn, request,
                        events.NotInitialized("this stem cell is not specialized yet"))
            return
        started = time.monotonic()
        try:
            init = events.json.loads(body)
            spec, task_root, env = init["handler"], init["task_root"], init["env"]
            if not (isinstance(spec, str) and isinstance(task_root, str)
                    and isinstance(env, dict)):
                raise TypeError("handler, task_root and env have the wrong types")
        except Exception as exc:  # the daemon's bug, not the function's: refuse, stay generic
            self._fault(conn, request, events.InvalidPayload(f"bad init request: {exc}"))
            return
        self._begin_init(spec, task_root, {str(k): str(v) for k, v in env.items()},
                         chdir=True, started=started, conn=(conn, request))

    # --- loading the function ------------------------------------------------------------------

    def _begin_init(self, spec: str, task_root: str, env: dict[str, str], *, chdir: bool,
                    started: float, conn: tuple[Conn, http1.Request] | None) -> None:
        self.state = "initializing"
        self._configure(env)
        self.init_job = (conn, started)
        data = events.json.dumps(
            {"handler": spec, "task_root": task_root, "env": env, "chdir": chdir}).encode()
        try:
            self.ctl.setblocking(True)
            self.ctl.sendall(b"I" + channel.LENGTH.pack(len(data)) + data)
        except OSError:
            pass  # the zygote is gone: its channel's end says so next
        finally:
            self.ctl.setblocking(False)

    def _ctl_readable(self, _: socket.socket) -> None:
        """The zygote's answer to INIT (nothing else is expected on its channel)."""
        while self.ctl_open:
            try:
                data = self.ctl.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data or len(self.ctl_buf) + len(data) > 1 << 16:  # gone, or too talkative
                self.ctl_open = False
                self.loop.sel.unregister(self.ctl)
                if self.state == "initializing":
                    self._init_done(None)
                return
            self.ctl_buf += data
            head = channel.LENGTH.size
            if len(self.ctl_buf) >= head:
                size = channel.LENGTH.unpack(self.ctl_buf[:head])[0]
                if len(self.ctl_buf) >= head + size:
                    reply = bytes(self.ctl_buf[head:head + size])
                    del self.ctl_buf[:head + size]
                    try:
                        answer = events.json.loads(reply)
                    except ValueError:
                        answer = None
                    self._init_done(answer)

    def _init_done(self, answer: object) -> None:
        if self.state != "initializing" or self.init_job is None:
            return  # the zygote speaks out of turn: ignored
        conn_request, started = self.init_job
        self.init_job = None
        init_ms = (time.monotonic() - started) * 1000
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            answer = {"ok": False, "type": "Runtime.ExitError",
                      "message": "the function's process ended while loading the handler"}
        if answer["ok"]:
            self.state = "ready"
            self.init_ms = init_ms
            self.hooks_ms = hooks_duration(answer.get("hooksMs"), init_ms)
            self.init_result = {"ok": True, "ms": init_ms}
            self._start_worker()  # the first worker, before the first request asks
            if conn_request is not None:
                conn, request = conn_request
                self._respond(conn, request, 200, _JSON_HEADERS, events.json.dumps(
                    {"initDurationMs": round(init_ms, 2),
                     "hooksDurationMs": round(self.hooks_ms, 2)}).encode())
            return
        self.state = "failed"
        error_type = answer.get("type")
        if error_type not in LOAD_ERRORS and error_type != "Runtime.ExitError":
            error_type = "Runtime.Unknown"
        message = answer.get("message")
        message = message[:4096] if isinstance(message, str) else "unknown error"
        self.zygote_pipes.wait_end(1.0)  # the zygote exits: its last lines come first
        self.zygote_pipes.end(((ERR, logs.init_report(init_ms, error_type)),))
        self.init_result = {"ok": False, "type": error_type, "message": message, "ms": init_ms}
        if conn_request is not None:
            conn, request = conn_request
            payload = {"errorType": error_type, "errorMessage": message,
                       "initDurationMs": round(init_ms, 2)}
            try:  # the last words of a failed cell, which is never reused
                conn.sock.setblocking(True)
                conn.sock.sendall(http1.response(
                    502, _JSON_HEADERS, events.json.dumps(payload).encode(), head_only=False,
                    close=True, http10=False))
            except OSError:
                pass
            self._fatal(1)

    # --- workers -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Pairs idle workers with waiting requests; starts the workers the waiting need
        and the instance's memory holds (the others wait for the next free worker)."""
        pool = self.pool
        for worker, job in pool.pairs():
            self._run(worker, job)
        wanted = pool.starts_wanted()
        if wanted and self.state == "ready":
            allowed = self._memory_allows(wanted)
            for _ in range(allowed):
                self._start_worker()
            if allowed < wanted:
                self._memory_capped()
        if pool.hopeless():
            while pool.waiting:
                job = pool.waiting.popleft()
                self._fault(job.conn, job.request,
                            events.RuntimeFault("could not start a process for the function"))

    def _worker_cost(self) -> int:
        """What one worker takes at its peak: the most any live worker was measured to
        take; before any was measured, the zygote's resident size (capacity.py)."""
        measured = [w.cost for w in self.by_pid.values() if w.cost_hwm_kb >= 0
                    and w.state in ("idle", "busy")]
        if measured:
            return max(measured)
        return capacity.read_rss(self.zygote_pid)

    def _pending(self, cost: int) -> int:
        """What the workers that exist will still grow by before each takes `cost`."""
        return cost * self.pool.starting + sum(
            max(0, cost - w.private) for w in self.by_pid.values() if w.state in ("idle", "busy"))

    def _memory_allows(self, wanted: int) -> int:
        """How many of `wanted` more workers the instance's memory holds now."""
        limit, used = self.memory.read()
        if limit >= capacity.UNLIMITED:
            return wanted
        cost = self._worker_cost()
        return capacity.starts_allowed(wanted, limit=limit, used=used, cost=cost,
                                       pending=self._pending(cost),
                                       workers=self.pool.live + self.pool.starting)

    def _workers_held(self) -> int:
        """How many workers the instance's memory holds in all (MAX_WORKERS: no limit)."""
        limit, used = self.memory.read()
        if limit >= capacity.UNLIMITED:
            return MAX_WORKERS
        cost = self._worker_cost()
        return capacity.workers_held(self.pool.live + self.pool.starting, limit=limit,
                                     used=used, cost=cost, pending=self._pending(cost),
                                     most=MAX_WORKERS)

    def _workers_line(self, now_ns: int) -> bytes:
        """The `Lambda-Workers` header line for the response being sent, or b"": only when
        a cost was measured or a worker ended since the last figure, or once per
        WORKERS_EVERY_NS while memory caps the instance. A figure of MAX_WORKERS (no cap)
        is sent only to lift a cap sent before."""
        if not self.workers_due and now_ns - self.workers_told_ns < WORKERS_EVERY_NS:
            return b""
        self.workers_due = False
        self.workers_told_ns = now_ns
        held = self._workers_held()
        if held >= MAX_WORKERS and self.workers_told in (0, MAX_WORKERS):
            return b""
        self.workers_told = held
        return b"Lambda-Workers: %d\r\n" % held

    def _memory_capped(self) -> None:
        """A worker a waiting request needed was not started: the requests that wait
        beyond the starts under way say so in their REPORT (Memory Wait), and a line
        outside any request says at how many workers memory capped the instance (once per
        change, at most once a second)."""
        pool = self.pool
        self.workers_due = True  # lambdad sent more than fits: it learns the figure again
        now_ms = int(time.time() * 1000)
        for job in list(pool.waiting)[pool.starting:]:
            if not job.memory_wait:
                job.memory_wait = True
                delay = max(0.0, (job.deadline_ms - now_ms) / 1000 - WAIT_MARGIN_S)
                self.loop.later(delay, lambda job=job: self._wait_expired(job))
        cap = pool.live + pool.starting
        now = time.monotonic()
        if cap == self.capped_at or now - self.capped_logged < 1.0:
            return
        self.capped_at, self.capped_logged = cap, now
        limit, used = self.memory.read()
        self.output.write(ERR, logs.outside(
            f"[WARNING] memory caps this instance at {cap} worker{'s' if cap != 1 else ''} "
            f"(limit {limit / capacity.MIB:.0f} MiB, in use {used / capacity.MIB:.0f} MiB, "
            f"a worker takes up to {self._worker_cost() / capacity.MIB:.1f} MiB): requests "
            "wait for a free worker instead of another one starting"))

    def _wait_expired(self, job: Job) -> None:
        """A request that waited for memory, WAIT_MARGIN_S before its deadline: if it is
        still waiting or running, a timeout of that request alone (504, as lambdad's own
        timeout; a running one's worker is killed, as Lambda resets an environment that
        timed out), said with `Lambda-Wait-Timeout` (first in the head, which no function
        can send) so that lambdad keeps the instance and the requests running in it."""
        pool = self.pool
        if self.state != "ready":
            return
        now_ns = time.perf_counter_ns()
        if job in pool.waiting:
            pool.waiting.remove(job)
            waited_ms = (now_ns - job.queued_ns) / 1e6
            ran_ms = 0.0
        else:
            worker = next((w for w in self.by_pid.values()
                           if w.job is job and w.state == "busy" and w.broken is None), None)
            if worker is None:
                return  # answered already
            job.timed_out = True
            # Answered here: its channel is not read again, so a reply it (or a child of it
            # holding the channel) writes from now on is no second answer, and the killed
            # worker never goes back among the idle ones. Its end (_crashed) writes the
            # request's END and REPORT.
            self._broke(worker, TimeoutError("timed out waiting for a worker"))
            worker.kill(group=True)  # what it started goes too, as with lambdad's timeout
            waited_ms, ran_ms = job.waited_ns / 1e6, (now_ns - job.started_ns) / 1e6
        held = self._workers_held()
        self.workers_told, self.workers_told_ns = held, now_ns
        message = (f"RequestId: {job.request_id} Error: Task timed out after "
                   f"{(waited_ms + ran_ms) / 1000:.2f} seconds, {waited_ms / 1000:.2f} of them "
                   f"waiting for a worker (the instance's memory holds {held})")
        if not job.timed_out:
            self.output.write(OUT, logs.start_line(job.request_id, self.version))
            self.output.write(ERR, logs.in_request(job.request_id, message))
            self.output.write(OUT, logs.end_lines(job.request_id, 0, self.memory_mb, 0, None,
                                                  job.start, 0.0, waited_ms))
        headers = (b"Lambda-Workers: %d\r\nLambda-Wait-Timeout: %d\r\n" % (held, waited_ms)
                   + _JSON_HEADERS)
        self._respond(job.conn, job.request, 504, headers, events.json.dumps(
            {"errorMessage": message, "errorType": "Sandbox.Timedout"}).encode())

    def _measure(self, worker: Worker) -> None:
        """After a request: the worker's cost, read again (~120 us) if its peak grew by
        MEASURE_GROWTH_KB since (or never read). Only when memory caps workers (in the
        instance's container)."""
        if self.memory.fds is None or worker.status_fd < 0:
            return
        if (worker.cost_hwm_kb >= 0
                and worker.peak_kb < worker.cost_hwm_kb + MEASURE_GROWTH_KB):
            return
        try:
            private = capacity.read_private(worker.pid)
            status = os.pread(worker.status_fd, 4096, 0)
            hwm = capacity.parse_status_kb(status, b"VmHWM")
            rss = capacity.parse_status_kb(status, b"VmRSS")
        except (OSError, ValueError):
            return
        worker.private = private
        worker.cost = capacity.worker_cost(private, hwm, rss)
        self.workers_due = True
        worker.cost_hwm_kb = max(worker.peak_kb, hwm // 1024)
        worker.peak_kb = worker.cost_hwm_kb

    def _replace(self) -> None:
        """A worker ended: another takes its place now if none is left or memory holds it
        (a worker the OOM killer ended may be replaced only when memory allows)."""
        if self.pool.live + self.pool.starting == 0 or self._memory_allows(1):
            self._start_worker()

    def _start_worker(self) -> None:
        """Asks the zygote for a worker; it is ready once it says hello."""
        if self.state != "ready" or self.pool.live + self.pool.starting >= self.pool.cap:
            return
        try:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return
        try:
            socket.send_fds(self.ctl, [b"S"], [out_w, err_w, theirs.fileno()])
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            return
        finally:
            for fd in (out_w, err_w):
                os.close(fd)
            theirs.close()
        mine.setblocking(False)
        worker = Worker(mine, Pipes(self.loop, out_r, err_r))
        self.pool.starting += 1
        self.loop.sel.register(mine, _READ, (self._chan_event, worker))
        self.loop.later(SPAWN_TIMEOUT_S, lambda: self._spawn_failed(worker, retry=True))

    def _spawn_failed(self, worker: Worker, why: str = "ended before its first request", *,
                      retry: bool = False) -> None:
        """A worker did not start. One that ended (or spoke garbage) before its hello would
        end again in its replacement (an after-restore hook that exits, a zygote that
        cannot fork: the pids limit), and a replacement per failure looped forks until
        lambdad's timeout, which then discarded the instance without a word. So no start
        follows such a failure: with no worker left, the requests that wait fail now
        (Runtime.ExitError); with workers, they wait for one of those; the next request
        tries a start again. One that is slow (`retry`: SPAWN_TIMEOUT_S passed, perhaps
        frozen meanwhile) is replaced, as before."""
        if worker.state != "starting":
            return
        worker.state = "gone"
        self.pool.starting -= 1
        self._drop(worker)
        pool = self.pool
        if retry:
            self._schedule()
            return
        if pool.live + pool.starting > 0 or not pool.waiting:
            return
        error_type, detail = "Runtime.ExitError", (
            f"the function's worker process {why} (after-restore hooks run there; or no "
            "process could be forked)")
        if self.oom.new_kill():  # the kernel's OOM killer ended it (its pid is not known)
            error_type, detail = "Runtime.OutOfMemory", (
                f"out of memory: limit {self.memory_mb} MiB (a worker process was killed "
                "before its first request)")
        self.output.write(ERR, logs.outside(
            f"[ERROR] {detail}: {len(pool.waiting)} waiting request(s) failed"))
        while pool.waiting:
            job = pool.waiting.popleft()
            message = f"RequestId: {job.request_id} Error: Runtime exited with error: {detail}"
            self._respond(job.conn, job.request, 502, _UNHANDLED, events.json.dumps(
                {"errorMessage": message, "errorType": error_type}).encode())

    def _hello(self, worker: Worker) -> None:
        if len(worker.inbuf) < channel.HELLO.size:
            return
        pid = channel.HELLO.unpack(worker.inbuf[:channel.HELLO.size])[0]
        del worker.inbuf[:channel.HELLO.size]
        # Only a process the supervisor adopts is one whose end it will learn of: its child,
        # or a child of the zygote's child (the middle process, exiting now).
        parent = _parent_of(pid)
        if (worker.inbuf or pid <= 1 or pid == os.getpid() or pid in self.by_pid
                or not (parent == os.getpid() or _parent_of(parent) == self.zygote_pid)):
            self._spawn_failed(worker, "sent an invalid hello")
            return
        worker.pid = pid
        early = self.early.pop(pid, None)
        if early is not None:  # it ended before it was registered
            self._spawn_failed(worker)
            return
        self.by_pid[pid] = worker
        try:  # noqa: SIM105
            worker.status_fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        except OSError:
            pass
        worker.state = "idle"
        self.pool.starting -= 1
        self.pool.live += 1
        self.pool.idle.append(worker)
        self._schedule()

    def _run(self, worker: Worker, job: Job) -> None:
        worker.state = "busy"
        worker.job = job
        job.init_ms, self.init_ms = self.init_ms, None
        job.hooks_ms, self.hooks_ms = self.hooks_ms, 0.0
        job.waited_ns = time.perf_counter_ns() - job.queued_ns
        worker.pipes.begin(job.request_id.encode("ascii") + b"\t",
                           logs.start_line(job.request_id, self.version))
        job.started_ns = time.perf_counter_ns()
        worker.outbuf = memoryview(job.message)
        self._chan_write(worker)

    def _chan_write(self, worker: Worker) -> None:
        try:
            sent = worker.chan.send(worker.outbuf)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._broke(worker, exc)
            return
        worker.outbuf = worker.outbuf[sent:]
        if bool(worker.outbuf) != worker.writing:  # watched for writing only while it waits
            worker.writing = not worker.writing
            self.loop.sel.modify(worker.chan, _WRITE if worker.writing else _READ,
                                 (self._chan_event, worker))

    def _chan_event(self, worker: Worker) -> None:
        if worker.outbuf:
            self._chan_write(worker)
            if worker.outbuf or worker.state == "gone":
                return
        try:
            data = worker.chan.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._broke(worker, None)
            return
        worker.inbuf += data
        if worker.state == "starting":
            self._hello(worker)
        elif worker.state == "busy":
            self._reply(worker)
        else:  # an idle worker has nothing to say: it is not trusted again
            self._broke(worker, channel.ProtocolError("spoke between requests"))

    def _reply(self, worker: Worker) -> None:
        buf = worker.inbuf
        if len(buf) < channel.REPLY.size:
            return
        try:
            status, header_len, body_len = channel.reply_sizes(bytes(buf[:channel.REPLY.size]))
        except channel.ProtocolError as exc:
            self._broke(worker, exc)
            return
        total = channel.REPLY.size + header_len + body_len
        if len(buf) < total:
            return
        if len(buf) > total:
            self._broke(worker, channel.ProtocolError("bytes after the reply"))
            return
        job = worker.job
        assert job is not None
        elapsed = time.perf_counter_ns() - job.started_ns
        head_end = channel.REPLY.size + header_len
        headers, body = bytes(buf[channel.REPLY.size:head_end]), bytes(buf[head_end:])
        buf.clear()
        checked = channel.checked_headers(headers)
        if checked is None:
            fault = events.MarshalError("Invalid response header")
            status, checked, body = fault.status, _UNHANDLED, events.error_body(fault)
        if self.memory.fds is not None:  # in the instance's container: memory may cap it
            if worker.cost_hwm_kb < 0:
                # A worker's first cost, before its answer: lambdad learns what the memory
                # holds with this response, before it sends the next burst.
                self._measure(worker)
            line = self._workers_line(job.started_ns + elapsed)
            if line:
                checked = line + checked  # first: lambdad looks at the first header only
        # The caller first, then the logs: the drain of the pipes, END and REPORT are off
        # the request's path (the worker gets no new request before its END is written).
        self._respond(job.conn, job.request, status, checked, body)
        worker.pipes.end(((OUT, logs.end_lines(job.request_id, elapsed, self.memory_mb,
                                               worker.peak_mb(elapsed), job.init_ms,
                                               job.start, job.hooks_ms,
                                               _memory_wait(job))),))
        self._measure(worker)
        worker.job = None
        worker.state = "idle"
        self.pool.idle.append(worker)
        self._schedule()

    def _broke(self, worker: Worker, exc: Exception | None) -> None:
        """The worker's channel closed (it ended, or is ending) or carried garbage."""
        if worker.state == "starting":
            self._spawn_failed(worker)
            return
        if worker.state == "idle":
            self._lost(worker)
            return
        if worker.state != "busy" or worker.broken is not None:
            return
        worker.broken = exc or ConnectionError("closed")
        self.loop.sel.unregister(worker.chan)
        if isinstance(exc, channel.ProtocolError):
            worker.kill()  # alive, but not to be trusted again
        if worker.status is not None:
            self._crashed(worker)
        else:  # its exit status comes with SIGCHLD
            self.loop.later(EXIT_WAIT_S, lambda: self._crashed(worker))

    def _crashed(self, worker: Worker) -> None:
        """The worker died (or broke the channel) during the request: its output is kept in
        the request's lines, the caller gets AWS's Runtime.ExitError shape."""
        job = worker.job
        if worker.state != "busy" or job is None:
            return
        worker.job = None
        elapsed = time.perf_counter_ns() - job.started_ns
        error_type, detail = describe_exit(worker.status, self.oom.claim(worker.status),
                                           self.memory_mb)
        if isinstance(worker.broken, channel.ProtocolError):
            error_type, detail = "Runtime.ExitError", f"sent an invalid reply ({worker.broken})"
        message = f"RequestId: {job.request_id} Error: Runtime exited with error: {detail}"
        if job.timed_out:  # _wait_expired killed it and answered the request
            message = (f"RequestId: {job.request_id} Error: Task timed out after waiting "
                       f"{job.waited_ns / 1e9:.2f} seconds for a worker: its worker was stopped")
            error_type = "Sandbox.Timedout"
        worker.pipes.end((
            (ERR, logs.in_request(job.request_id, f"{message}\n{error_type}")),
            (OUT, logs.end_lines(job.request_id, elapsed, self.memory_mb, worker.peak_mb(),
                                 job.init_ms, job.start, job.hooks_ms,
                                 _memory_wait(job))),
        ))
        self.pool.live -= 1
        self._drop(worker)
        if job.timed_out:  # answered already; its connection may carry another request now
            self._replace()
            self._schedule()
            return
        if self.state == "stopping":
            # Its end came with the instance's stop (SIGTERM, sent because lambdad stops the
            # instance, e.g. for another request's timeout): not the function's crash. No
            # answer; the closed connection lets lambdad tell the caller why it stopped it.
            self._close(job.conn)
            return
        body = events.json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        self._respond(job.conn, job.request, 502, _UNHANDLED, body)
        self._replace()  # a fresh fork takes its place
        self._schedule()

    def _lost(self, worker: Worker) -> None:
        """An idle worker ended (or spoke out of turn): forgotten, and replaced."""
        if worker in self.pool.idle:
            self.pool.idle.remove(worker)
            self.pool.live -= 1
        worker.kill()
        if worker.status is None:  # not reaped yet: may be the OOM killer's
            self.oom.new_kill()  # not to be blamed on a later request
        else:
            self.oom.claim(worker.status)
        worker.pipes.end()
        self._drop(worker)
        self._replace()
        self._schedule()

    def _drop(self, worker: Worker) -> None:
        """Releases the supervisor's side of a worker; its pipes stay read until they end
        (a child of it may still hold them)."""
        worker.state = "gone"
        self.workers_due = True  # the memory it held may hold another worker now
        if worker.chan.fileno() >= 0:
            try:  # noqa: SIM105
                self.loop.sel.unregister(worker.chan)
            except KeyError:
                pass
            worker.chan.close()
        if worker.status_fd >= 0:
            os.close(worker.status_fd)
            worker.status_fd = -1
        if worker.status is None and worker.pid > 1:
            worker.kill()  # if it lives, it is not the supervisor's worker any more

    # --- processes -----------------------------------------------------------------------------

    def _woken(self, fd: int) -> None:
        """A signal arrived (SIGCHLD: reap every child that ended)."""
        try:
            while os.read(fd, 512):
                pass
        except OSError:
            pass
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            self._exited(pid, status, usage.ru_maxrss)

    def _exited(self, pid: int, status: int, maxrss_kb: int) -> None:
        if pid == self.zygote_pid:
            if self.state == "initializing":  # its reply may be waiting, unread
                self._ctl_readable(self.ctl)
                if self.state == "initializing":
                    self._init_done(None)
            if self.state in ("idle", "ready"):
                self._zygote_died(status)
            return
        worker = self.by_pid.pop(pid, None)
        if worker is None:
            self.early[pid] = (status, maxrss_kb)
            while len(self.early) > 256:  # other orphans' exits, never claimed
                del self.early[next(iter(self.early))]
            return
        worker.status, worker.maxrss_kb = status, maxrss_kb
        if worker.state == "busy" and worker.broken is None:
            while worker.state == "busy" and not worker.writing:  # a reply sent before the end
                try:
                    data = worker.chan.recv(READ_SIZE)
                except OSError:  # nothing more (BlockingIOError), or the channel failed
                    break
                if not data:
                    break
                worker.inbuf += data
                self._reply(worker)
        if worker.state == "busy":
            if worker.broken is not None:
                self._crashed(worker)
            else:  # its channel may stay open (a child of it holds it): it is over anyway
                self._broke(worker, None)
        elif worker.state == "idle":
            self._lost(worker)

    def _zygote_died(self, status: int) -> None:
        _, detail = describe_exit(status, self.oom.claim(status), self.memory_mb)
        self.zygote_pipes.wait_end(1.0)
        self.zygote_pipes.end(((ERR, logs.outside(
            f"[ERROR] the function's zygote process {detail}: no worker can start, "
            "the instance stops")),))
        code = os.waitstatus_to_exitcode(status)
        self._fatal(code if code > 0 else (128 - code if code < 0 else 1))


def _memory_wait(job: Job) -> float | None:
    """REPORT's Memory Wait (ms): only for a request that waited because memory capped
    the workers."""
    return job.waited_ns / 1e6 if job.memory_wait else None


def _fork_zygote() -> tuple[int, socket.socket, int, int]:
    """The zygote: nothing of the supervisor's but its channel and its output pipes."""
    ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(theirs.detach(), 3)
            ctl.detach()  # no socket object may close a number reused later
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))
            zygote_main(3)
        finally:
            os._exit(1)
    theirs.close()
    os.close(out_w)
    os.close(err_w)
    ctl.setblocking(False)
    return pid, ctl, out_r, err_r
