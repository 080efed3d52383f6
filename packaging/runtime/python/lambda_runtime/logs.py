"""AWS-style framing of each invocation's log output, so the daemon can tag lines by request.

Formats (one physical line each; the daemon's parser relies on them exactly):

    START RequestId: <id> Version: <version>                       (stdout)
    <id>\\t<line>               every line the handler's thread writes (stdout or stderr)
    END RequestId: <id>                                             (stdout)
    REPORT RequestId: <id>\\tDuration: <ms.2f> ms\\tBilled Duration: <ceil ms> ms\\t
        Memory Size: <MB> MB\\tMax Memory Used: <MB> MB[\\tInit Duration: <ms.2f> ms]
        [\\tStart: warm|cell|unpaused|container]   (how the daemon got the instance)

sys.stdout and sys.stderr are replaced by `TaggedStream`s. The request id lives in a
thread-local, so concurrent invocations (one thread each) tag their own lines; every physical
line goes out in one locked write, so lines never interleave. A thread's partial line (a write
without a newline) waits for its newline; inside an invocation it is flushed, tagged and
newline-terminated, when the invocation ends. Output outside an invocation (import time, the
runtime's own messages, threads a handler starts) is written unchanged.
"""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False  # typing is not imported at run time (see events.py)
if TYPE_CHECKING:
    from typing import Any, TextIO


class _Current(threading.local):
    request_id: str | None = None


_current = _Current()


class _Pending(threading.local):
    text = ""


class TaggedStream:
    """A text stream that prefixes the current invocation's lines with its request id.

    TextIO-compatible enough for print, logging.StreamHandler, traceback and faulthandler;
    anything else is delegated to the wrapped stream. Bytes written to `.buffer` bypass it.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self._pending = _Pending()

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        pending = self._pending
        text = pending.text + s if pending.text else s
        nl = text.rfind("\n")
        if nl < 0:
            pending.text = text
            return len(s)
        pending.text = text[nl + 1 :]
        rid = _current.request_id
        if rid is None:
            self.emit(text[: nl + 1])
        else:
            prefix = rid + "\t"
            self.emit(prefix + text[:nl].replace("\n", "\n" + prefix) + "\n")
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def emit(self, text: str) -> None:
        """Writes `text` as is, in one write no other thread's output can split."""
        with self.lock:
            self.stream.write(text)
            self.stream.flush()

    def emit_quietly(self, text: str) -> None:
        """For the runtime's framing lines: a broken stream must not fail the invocation."""
        try:  # noqa: SIM105 (contextlib is not worth its import time here)
            self.emit(text)
        except (OSError, ValueError):  # ValueError: closed, or unencodable text
            pass

    def flush_line(self, rid: str | None) -> None:
        """Ends this thread's partial line, tagged with `rid` unless it is None."""
        text = self._pending.text
        if text:
            self._pending.text = ""
            self.emit_quietly(f"{rid}\t{text}\n" if rid is not None else text + "\n")

    def flush(self) -> None:
        # Inside an invocation a partial line waits for its newline (or the invocation's end):
        # flushing it now would split one logical line into two tagged ones.
        text = self._pending.text
        if text and _current.request_id is None:
            self._pending.text = ""
            self.emit(text)
        else:
            with self.lock:
                self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """Ignored: the process's stdout/stderr stay open for the runtime's own lines."""
        self.flush()

    @property
    def closed(self) -> bool:
        return self.stream.closed

    @property
    def encoding(self) -> str:
        return self.stream.encoding

    @property
    def errors(self) -> str | None:
        return self.stream.errors

    @property
    def buffer(self) -> Any:
        return self.stream.buffer

    def __getattr__(self, name: str) -> Any:
        if name == "stream":  # not set yet (e.g. copy.copy): no endless recursion
            raise AttributeError(name)
        return getattr(self.stream, name)

    def __repr__(self) -> str:
        return f"<TaggedStream {self.stream!r}>"


class Framer:
    """Writes START/END/REPORT around invocations and sets the thread's request id."""

    def __init__(self, version: str, memory_mb: int) -> None:
        self.version = version
        self.memory_mb = memory_mb
        self.init_ms: list[float] = []  # popped by the first invocation (list.pop is atomic)
        self.stdout = _tagged(sys.stdout)
        self.stderr = _tagged(sys.stderr)

    def start(self, request_id: str, start: str = "") -> Invocation:
        for stream in (self.stdout, self.stderr):
            stream.flush_line(None)  # this thread's own untagged partial line, if any
        try:
            init_ms: float | None = self.init_ms.pop()
        except IndexError:
            init_ms = None
        self.stdout.emit_quietly(f"START RequestId: {request_id} Version: {self.version}\n")
        _current.request_id = request_id
        return Invocation(self, request_id, init_ms, start)


class Invocation:
    __slots__ = ("framer", "init_ms", "request_id", "start", "started_ns")

    def __init__(self, framer: Framer, request_id: str, init_ms: float | None,
                 start: str = "") -> None:
        self.framer = framer
        self.request_id = request_id
        self.init_ms = init_ms
        self.start = start  # how the daemon got this instance: warm, cell, unpaused, container
        self.started_ns = time.perf_counter_ns()

    def end(self) -> None:
        """Flushes the handler's partial lines, then writes END and REPORT (once only)."""
        if _current.request_id != self.request_id:
            return
        elapsed_ns = time.perf_counter_ns() - self.started_ns
        framer = self.framer
        rid = self.request_id
        for stream in (framer.stdout, framer.stderr):
            stream.flush_line(rid)
        _current.request_id = None
        import resource  # after the socket is up: the cold start does not pay for it

        max_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
        report = (
            f"REPORT RequestId: {rid}\tDuration: {elapsed_ns / 1e6:.2f} ms"
            f"\tBilled Duration: {-(-elapsed_ns // 1_000_000)} ms"
            f"\tMemory Size: {framer.memory_mb} MB\tMax Memory Used: {max_mb} MB"
        )
        if self.init_ms is not None:
            report += f"\tInit Duration: {self.init_ms:.2f} ms"
        if self.start:
            report += f"\tStart: {self.start}"
        framer.stdout.emit_quietly(f"END RequestId: {rid}\n{report}\n")


def _tagged(stream: TextIO) -> TaggedStream:
    if isinstance(stream, TaggedStream):
        return stream
    return TaggedStream(stream)


def install() -> None:
    """Replaces sys.stdout and sys.stderr with tagging wrappers (idempotent)."""
    if sys.stdout is not None:  # None when the process was started without one
        sys.stdout = _tagged(sys.stdout)
    if sys.stderr is not None:
        sys.stderr = _tagged(sys.stderr)
