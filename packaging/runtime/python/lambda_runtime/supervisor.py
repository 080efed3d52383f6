"""The supervisor: the container's first process, the only one that never runs function code.

It alone holds the container's stdout and stderr (Docker's log stream), writes the
START/END/REPORT/INIT_REPORT frames, and tags every line the function's processes write
with the request that process was serving (see logs.py for the format). It makes itself
non-dumpable, so a process of the same user cannot open /proc/1/fd/*, read its memory or
ptrace it, and it is the subreaper of every process below it (PID 1 in a container, and
PR_SET_CHILD_SUBREAPER when run elsewhere), so it alone learns how a worker ended.

Processes (worker.py runs the function's side):
- the zygote, forked from the supervisor at start before any thread exists: it imports the
  handler when told to, then forks workers on request and never serves one;
- up to one worker per request in flight (lambdad sends at most the function's
  concurrency at once), started on demand and kept; a worker that dies is replaced.
If the zygote dies once the function is loaded, no worker can start any more: the supervisor
exits non-zero and lambdad discards the instance.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time

from . import channel, events, logs
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
MAX_WORKERS = 1000  # lambdad's highest per-instance concurrency
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_JSON_HEADERS = b"Content-Type: application/json\r\n"


class NoWorker(Exception):
    """No worker process can be started (e.g. the pids limit) and none is running."""


class _Gone(Exception):
    """The worker's end of the channel closed: it ended, or is ending."""


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread that never takes SIGTERM/SIGINT: those go to the main thread."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return thread


def _prctl(option: int, value: int) -> bool:
    import ctypes  # here only: the zygote was forked before, without it

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0)


class Output:
    """The container's stdout and stderr: whole lines, one writer at a time per stream."""

    def __init__(self, fds: tuple[int, int] = (1, 2)) -> None:
        self.fds = fds
        self.locks = (threading.Lock(), threading.Lock())

    def write(self, which: int, data: bytes) -> None:
        if not data:
            return
        with self.locks[which]:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.fds[which], view):]
                except OSError:  # Docker stopped reading: nothing left to tell
                    return


class OutsideText:
    """sys.stdout/sys.stderr of the supervisor: its own messages (which may quote a
    function's words) as untagged lines, never raw."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, output: Output, which: int) -> None:
        self.output = output
        self.which = which
        self.tagger = logs.LineTagger()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        with self.lock:
            self.output.write(self.which, self.tagger.feed(data, logs.OUTSIDE))
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.output.write(self.which, self.tagger.flush(logs.OUTSIDE))

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class Pipes:
    """One process's stdout and stderr, read by the supervisor and written out tagged.

    A pump thread reads whatever arrives and tags it with the current tag; `end` drains
    both pipes first, so every line a worker wrote before its reply lands in its request.
    A request's START goes out with its first line, or with its END: a request that wrote
    nothing costs one write. Only the pump closes the descriptors (a
    closed number could be reused while its poll still watches it).
    """

    def __init__(self, out_r: int, err_r: int, output: Output, name: str) -> None:
        self.fds = (out_r, err_r)
        for fd in self.fds:
            os.set_blocking(fd, False)
        self.output = output
        self.taggers = (logs.LineTagger(), logs.LineTagger())
        self.eof = [False, False]
        self.tag = logs.OUTSIDE
        self.start = b""  # the current request's START, until its first line or its END
        self.lock = threading.Lock()
        self.ready = select.poll()  # for drains: which pipe has something, in one call
        for fd in self.fds:
            self.ready.register(fd, select.POLLIN)
        self.done = threading.Event()  # both pipes reached their end
        start_thread(self._pump, f"pipes-{name}")

    def _emit(self, which: int, data: bytes) -> None:
        if data:
            if self.start:
                self.output.write(OUT, self.start)
                self.start = b""
            self.output.write(which, data)

    def _read(self, which: int) -> int:
        """Bytes read (tagged and written out); 0: nothing now; -1: the pipe ended."""
        if self.eof[which]:
            return -1
        try:
            data = os.read(self.fds[which], READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        tagger = self.taggers[which]
        if not data:
            self.eof[which] = True
            self.ready.unregister(self.fds[which])
            self._emit(which, tagger.flush(self.tag))
            return -1
        self._emit(which, tagger.feed(data, self.tag))
        return len(data)

    def _flush_partial(self) -> None:
        for which in (OUT, ERR):
            self._emit(which, self.taggers[which].flush(self.tag))

    def begin(self, line_tag: bytes, start: bytes) -> None:
        """Later lines are `line_tag`'s. (What the pump has not read yet by now was written
        by this worker's process a moment before its request, by a thread of its own: it
        may count as the request's.)"""
        with self.lock:
            self._flush_partial()
            self.tag = line_tag
            self.start = start

    def end(self, writes: tuple[tuple[int, bytes], ...] = ()) -> None:
        """Everything the process wrote so far goes out under the current tag, then its
        START if no line came, then `writes` (END and REPORT, a note); later lines are
        outside any request."""
        with self.lock:
            if not all(self.eof):
                for fd, _ in self.ready.poll(0):
                    which = 0 if fd == self.fds[0] else 1
                    budget = DRAIN_LIMIT
                    while budget > 0:
                        n = self._read(which)
                        if n <= 0:
                            break
                        budget -= n
            self._flush_partial()
            start, self.start = self.start, b""
            for which, data in writes:
                if start and which == OUT:  # START, END and REPORT in one write
                    data, start = start + data, b""
                if start:
                    self.output.write(OUT, start)
                    start = b""
                self.output.write(which, data)
            if start:
                self.output.write(OUT, start)
            self.tag = logs.OUTSIDE

    def _pump(self) -> None:
        poller = select.poll()
        index = {fd: i for i, fd in enumerate(self.fds)}
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        while index:
            for fd, _ in poller.poll():
                which = index.get(fd)
                if which is None:
                    continue
                with self.lock:
                    ended = self._read(which) < 0
                if ended:
                    poller.unregister(fd)
                    del index[fd]
                    os.close(fd)
        self.done.set()


class Worker:
    """The supervisor's handle on one worker process."""

    def __init__(self, pid: int, chan: socket.socket, pipes: Pipes) -> None:
        self.pid = pid
        self.chan = chan
        self.pipes = pipes
        self.status: int | None = None  # os.wait4's status once it ended
        self.maxrss_kb = 0
        self.exited = threading.Event()
        self.counted = True  # still in the pool's count of live workers
        try:
            self._status_fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        except OSError:
            self._status_fd = -1

    def peak_mb(self) -> int:
        """The kernel's figure for this process's peak memory (VmHWM), not the worker's."""
        if self.exited.is_set() or self._status_fd < 0:
            return self.maxrss_kb // 1024
        try:
            status = os.pread(self._status_fd, 4096, 0)
        except OSError:
            return self.maxrss_kb // 1024
        at = status.find(b"VmHWM:")
        if at < 0:
            return 0
        return int(status[at + 6:status.index(b"kB", at)]) // 1024

    def kill(self) -> None:
        if not self.exited.is_set():
            try:  # noqa: SIM105
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self) -> None:
        self.chan.close()
        if self._status_fd >= 0:
            os.close(self._status_fd)
            self._status_fd = -1


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


class Zygote:
    """The supervisor's handle on the zygote: load the handler, fork workers."""

    def __init__(self, output: Output) -> None:
        ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the zygote: nothing of the supervisor's but its channel and pipes
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
        self.pid = pid
        self.ctl = ctl
        self.output = output
        self.pipes = Pipes(out_r, err_r, output, "zygote")
        self.lock = threading.Lock()  # one message on the channel at a time

    def initialize(self, init: dict[str, Any]) -> dict[str, Any]:
        """{"ok": True} or {"ok": False, "type", "message"}, as far as the zygote tells."""
        data = events.json.dumps(init).encode()
        with self.lock:
            try:
                self.ctl.sendall(b"I" + channel.LENGTH.pack(len(data)) + data)
                head = _recv_exact(self.ctl, channel.LENGTH.size)
                reply = None if head is None else _recv_exact(
                    self.ctl, min(channel.LENGTH.unpack(head)[0], 1 << 16))
                answer = events.json.loads(reply) if reply is not None else None
            except (OSError, ValueError):
                answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            return {"ok": False, "type": "Runtime.ExitError",
                    "message": "the function's process ended while loading the handler"}
        return answer

    def spawn(self) -> Worker | None:
        """A new worker, ready for a request; None when the zygote could not fork one."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.lock:
                socket.send_fds(self.ctl, [b"S"], [out_w, err_w, theirs.fileno()])
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            return None
        finally:
            os.close(out_w)
            os.close(err_w)
            theirs.close()
        try:
            pipes = Pipes(out_r, err_r, self.output, "worker")
        except RuntimeError:  # no thread for its pipes (the pids limit)
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            return None
        mine.settimeout(SPAWN_TIMEOUT_S)
        try:
            hello = _recv_exact(mine, channel.HELLO.size)
        except OSError:
            hello = None
        if hello is None:
            mine.close()
            return None
        mine.settimeout(None)
        pid = channel.HELLO.unpack(hello)[0]
        # Only a process the supervisor adopted is one whose end it will learn of.
        if pid <= 1 or pid == os.getpid() or _parent_of(pid) != os.getpid():
            mine.close()
            return None
        return Worker(pid, mine, pipes)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


class Workers:
    """Idle workers and the rule for starting more: a request that finds none idle waits for
    a prestarted one still starting (one request each), or else starts one for itself
    (lambdad sends at most the function's concurrency at once, so there are never more
    workers than that); at the cap, or when a start fails while others run, it waits for
    one to be released."""

    def __init__(self, spawn: Callable[[], Worker | None], cap: int = MAX_WORKERS) -> None:
        self._spawn = spawn
        self.cap = cap
        self.cond = threading.Condition()
        self.idle: list[Worker] = []
        self.live = 0
        self.spawning = 0
        self.prestarting = 0  # starts of which nobody is the owner: they go to idle
        self.waiting = 0
        self.closed = False

    def acquire(self) -> Worker:
        with self.cond:
            while True:
                if self.closed:
                    raise NoWorker("the runtime is stopping")
                if self.idle:
                    return self.idle.pop()
                if self.prestarting <= self.waiting and self.live + self.spawning < self.cap:
                    worker = self._start_locked()
                    if worker is not None:
                        return worker
                    if self.live + self.spawning == 0:
                        raise NoWorker("could not start a process for the function")
                self.waiting += 1
                try:
                    self.cond.wait()
                finally:
                    self.waiting -= 1

    def _start_locked(self) -> Worker | None:
        """Starts a worker for the caller, with the lock released meanwhile."""
        self.spawning += 1
        self.cond.release()
        try:
            worker = self._spawn()
        finally:
            self.cond.acquire()
            self.spawning -= 1
        if worker is not None:
            self.live += 1
        return worker

    def prestart(self) -> None:
        """One more worker, idle, in the background (after the import, or after a loss)."""

        def run() -> None:
            with self.cond:
                if self.closed or self.live + self.spawning >= self.cap:
                    return
                self.prestarting += 1
                try:
                    worker = self._start_locked()
                finally:
                    self.prestarting -= 1
                if worker is not None:
                    self.idle.append(worker)
                self.cond.notify_all()  # a waiter takes it, or starts its own after a failure

        try:  # noqa: SIM105 (no contextlib import in the runtime)
            start_thread(run, "prestart")
        except RuntimeError:  # no thread now: a request will start one
            pass

    def release(self, worker: Worker) -> None:
        with self.cond:
            if worker.exited.is_set() or self.closed:
                self._forget_locked(worker)
            else:
                self.idle.append(worker)
            self.cond.notify()

    def discard(self, worker: Worker) -> None:
        with self.cond:
            self._forget_locked(worker)
            self.cond.notify()

    def lost(self, worker: Worker) -> bool:
        """A worker ended; True when it was idle (no request will report it)."""
        with self.cond:
            if worker not in self.idle:
                return False
            self.idle.remove(worker)
            self._forget_locked(worker)
            self.cond.notify()
            return True

    def _forget_locked(self, worker: Worker) -> None:
        if worker.counted:
            worker.counted = False
            self.live -= 1

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


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
        count = self.read()
        new = count > self.seen
        self.seen = max(count, self.seen)
        return new


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


class Supervisor:
    """Loads the function into the zygote, runs each request on a worker, frames the logs."""

    def __init__(self, env: dict[str, str], on_fatal: Callable[[int], None]) -> None:
        self.output = Output()
        # First, while this process has one thread: the zygote gets a clean copy.
        self.zygote = Zygote(self.output)
        sys.stdout = OutsideText(self.output, OUT)
        sys.stderr = OutsideText(self.output, ERR)
        if not (_prctl(PR_SET_DUMPABLE, 0) and _prctl(PR_SET_CHILD_SUBREAPER, 1)):
            raise OSError("prctl failed: the log channel cannot be protected")
        self.on_fatal = on_fatal
        self.state = "idle"  # -> initializing -> ready | failed; stopping at the end
        self.lock = threading.Lock()
        self.workers = Workers(self._spawn)
        self.by_pid: dict[int, Worker] = {}
        self.early: dict[int, tuple[int, int]] = {}  # exits of pids not registered yet
        self.oom = _OomCounter(os.getpid() == 1)
        self.version = "$LATEST"
        self.memory_mb = 128
        self._configure(env)
        self.init_ms: float | None = None  # reported by the first REPORT only
        start_thread(self._reap, "reaper")

    def _configure(self, env: dict[str, str]) -> None:
        self.version = env.get("AWS_LAMBDA_FUNCTION_VERSION", self.version)
        try:  # noqa: SIM105
            self.memory_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", self.memory_mb))
        except ValueError:
            pass

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # --- loading -------------------------------------------------------------------------------

    def initialize(self, spec: str, task_root: str, env: dict[str, str], *, chdir: bool,
                   started: float) -> dict[str, Any]:
        """Loads the handler in the zygote: {"ok", "type", "message", "ms"}. On failure the
        zygote's output and the INIT_REPORT are written before this returns."""
        with self.lock:
            if self.state != "idle":
                return {"ok": False, "type": "Runtime.Unknown", "message": "already loaded"}
            self.state = "initializing"
        self._configure(env)
        answer = self.zygote.initialize(
            {"handler": spec, "task_root": task_root, "env": env, "chdir": chdir})
        init_ms = (time.monotonic() - started) * 1000
        if answer["ok"]:
            with self.lock:
                self.state = "ready"
            self.init_ms = init_ms
            self.workers.prestart()
            return {"ok": True, "ms": init_ms}
        with self.lock:
            self.state = "failed"
        error_type = answer.get("type")
        if error_type not in LOAD_ERRORS and error_type != "Runtime.ExitError":
            error_type = "Runtime.Unknown"
        message = answer.get("message")
        message = message[:4096] if isinstance(message, str) else "unknown error"
        self.zygote.pipes.done.wait(1.0)  # the zygote exits: its last lines come first
        self.zygote.pipes.end(((ERR, logs.init_report(init_ms, error_type)),))
        return {"ok": False, "type": error_type, "message": message, "ms": init_ms}

    # --- requests ------------------------------------------------------------------------------

    def _spawn(self) -> Worker | None:
        worker = self.zygote.spawn()
        if worker is None:
            return None
        with self.lock:
            early = self.early.pop(worker.pid, None)
            if early is None:
                self.by_pid[worker.pid] = worker
        if early is not None:  # it ended before it was registered
            worker.status, worker.maxrss_kb = early
            worker.exited.set()
            worker.close()
            return None
        return worker

    def invoke(self, request: channel.Request, start: str) -> tuple[int, bytes, bytes]:
        """Runs one request on a worker: (status, header lines, body). Raises NoWorker.
        The request id must be valid (logs.valid_request_id)."""
        request_id = request[5]
        line_tag = request_id.encode("ascii") + b"\t"
        worker = self.workers.acquire()
        with self.lock:
            init_ms, self.init_ms = self.init_ms, None
        worker.pipes.begin(line_tag, logs.start_line(request_id, self.version))
        started = time.perf_counter_ns()
        try:
            worker.chan.sendall(channel.encode_request(request))
            status, headers, body = self._read_reply(worker)
        except (OSError, _Gone, channel.ProtocolError) as exc:
            return self._crashed(worker, request_id, started, init_ms, start, exc)
        elapsed = time.perf_counter_ns() - started
        worker.pipes.end(((OUT, logs.end_lines(
            request_id, elapsed, self.memory_mb, worker.peak_mb(), init_ms, start)),))
        self.workers.release(worker)
        checked = channel.checked_headers(headers)
        if checked is None:
            fault = events.MarshalError("Invalid response header")
            return (fault.status, _JSON_HEADERS + b"Lambda-Function-Error: Unhandled\r\n",
                    events.error_body(fault))
        return status, checked, body

    def _read_reply(self, worker: Worker) -> tuple[int, bytes, bytes]:
        chan = worker.chan
        data = chan.recv(READ_SIZE)  # usually the whole reply
        while len(data) < channel.REPLY.size:
            more = chan.recv(READ_SIZE)
            if not more:
                raise _Gone
            data += more
        status, header_len, body_len = channel.reply_sizes(data[:channel.REPLY.size])
        total = channel.REPLY.size + header_len + body_len
        if len(data) > total:
            raise channel.ProtocolError("bytes after the reply")
        if len(data) < total:
            buf = bytearray(total)
            buf[:len(data)] = data
            view = memoryview(buf)
            got = len(data)
            while got < total:
                n = chan.recv_into(view[got:], total - got)
                if not n:
                    raise _Gone
                got += n
            data = bytes(buf)
        head_end = channel.REPLY.size + header_len
        return status, data[channel.REPLY.size:head_end], data[head_end:]

    def _crashed(self, worker: Worker, request_id: str, started: int, init_ms: float | None,
                 start: str, exc: Exception) -> tuple[int, bytes, bytes]:
        """The worker died (or broke the channel) during the request: its output is kept
        in the request's lines, the caller gets AWS's Runtime.ExitError shape."""
        worker.kill()
        worker.exited.wait(EXIT_WAIT_S)
        elapsed = time.perf_counter_ns() - started
        error_type, detail = describe_exit(worker.status, self.oom.new_kill(), self.memory_mb)
        if isinstance(exc, channel.ProtocolError):  # alive, but not to be trusted again
            error_type, detail = "Runtime.ExitError", f"sent an invalid reply ({exc})"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {detail}"
        worker.pipes.end((
            (ERR, logs.in_request(request_id, f"{message}\n{error_type}")),
            (OUT, logs.end_lines(request_id, elapsed, self.memory_mb, worker.peak_mb(),
                                 init_ms, start)),
        ))
        self.workers.discard(worker)
        worker.close()
        if self.state == "ready":
            self.workers.prestart()  # a fresh fork takes its place
        body = events.json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        return 502, _JSON_HEADERS + b"Lambda-Function-Error: Unhandled\r\n", body

    # --- processes -----------------------------------------------------------------------------

    def _reap(self) -> None:
        """Collects every child (workers are adopted; orphans of theirs too)."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, 0)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            except OSError:
                continue
            try:
                self._exited(pid, status, usage.ru_maxrss)
            except Exception as exc:  # never lose the reaper
                print(f"[ERROR] reaping {pid}: {exc!r}", file=sys.stderr)

    def _exited(self, pid: int, status: int, maxrss_kb: int) -> None:
        if pid == self.zygote.pid:
            with self.lock:
                fatal = self.state in ("idle", "ready")
            if fatal:
                self._zygote_died(status)
            return
        with self.lock:
            worker = self.by_pid.pop(pid, None)
            if worker is None:
                self.early[pid] = (status, maxrss_kb)
                while len(self.early) > 256:  # other orphans' exits, never claimed
                    del self.early[next(iter(self.early))]
                return
        worker.status, worker.maxrss_kb = status, maxrss_kb
        worker.exited.set()
        try:  # noqa: SIM105
            worker.chan.shutdown(socket.SHUT_RDWR)  # wakes a request waiting on it
        except OSError:
            pass
        if self.workers.lost(worker):  # it died between requests
            self.oom.new_kill()  # not to be blamed on a later request
            worker.pipes.end()
            worker.close()
            with self.lock:
                if self.state == "ready":
                    self.workers.prestart()

    def _zygote_died(self, status: int) -> None:
        _, detail = describe_exit(status, self.oom.new_kill(), self.memory_mb)
        self.zygote.pipes.done.wait(1.0)
        self.zygote.pipes.end(((ERR, logs.outside(
            f"[ERROR] the function's zygote process {detail}: no worker can start, "
            "the instance stops")),))
        code = os.waitstatus_to_exitcode(status)
        self.on_fatal(code if code > 0 else (128 - code if code < 0 else 1))

    def stop(self) -> None:
        """Ends every process of the function (the caller exits next)."""
        with self.lock:
            self.state = "stopping"
            pids = [self.zygote.pid, *self.by_pid]
        self.workers.close()
        for pid in pids:
            try:  # noqa: SIM105
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
