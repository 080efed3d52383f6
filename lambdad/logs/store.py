"""Durable per-function log files with rotation, and live subscribers for `logs -f`.

Layout: STATE_DIR/logs/<function>/current.jsonl plus rotated 1.jsonl (newest) .. N.jsonl.
Appends are encoded as they arrive (a few microseconds each, spread over the requests that
made them), buffered in memory and written by one flush task in a worker thread, so the
event loop never waits on the disk nor stalls on a flush's worth of encoding; followers get
entries the moment they arrive. The buffer
is bounded (`max_pending_bytes`): past it, entries are dropped and counted, and the count is
written as a `LOGS_DROPPED` entry of stream `runtime` with the next flush (lambdad's words,
as for a runtime's DROPPED record). Log channels stop reading while it is half full
(`congested`), so a standard runtime's flood waits, and is dropped, in its own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lambdad.logs.channel import dropped_message
from lambdad.logs.entry import RUNTIME_STREAM, LogEntry, LogQuery

log = logging.getLogger("lambdad.logs")

FLUSH_INTERVAL_S = 0.2
# What the buffer between flushes may hold (messages plus ENTRY_BYTES each); while one flush
# writes, the next buffer fills, so the entries in memory stay under twice this.
MAX_PENDING_BYTES = 16 << 20
ENTRY_BYTES = 160  # an entry's object and its other fields, roughly
# One function's lines may fill a quarter of the buffer: a flood of one function (many
# instances, or a Dockerfile function's Docker stream, which cannot be paused) never drops
# another's lines.
FUNCTION_SHARE = 4

OnDropped = Callable[[str, int, int], None]  # function, lines, bytes


class LogStore:
    def __init__(self, root: Path, *, max_file_bytes: int = 4 * 1024 * 1024,
                 files_kept: int = 5, max_pending_bytes: int = MAX_PENDING_BYTES,
                 function_share: int = FUNCTION_SHARE,
                 on_dropped: OnDropped | None = None) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.files_kept = files_kept
        self.max_pending_bytes = max_pending_bytes
        self.max_function_bytes = max_pending_bytes // function_share
        self.on_dropped = on_dropped  # told at each flush what the full buffer dropped
        self._pending: dict[str, list[bytes]] = {}  # function: its encoded lines
        self._pending_sizes: dict[str, int] = {}  # function: what its lines count against
        self._pending_bytes = 0
        self._dropped: dict[str, list[int]] = {}  # function: [lines, bytes] since the flush
        self._subscribers: dict[str, set[asyncio.Queue[LogEntry]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._flusher = asyncio.create_task(self._flush_forever(), name="log-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    # Writing

    @property
    def congested(self) -> bool:
        """The buffer is half full."""
        return self._pending_bytes * 2 >= self.max_pending_bytes

    def congested_for(self, function: str) -> bool:
        """Whether `function`'s log channels should wait: its own share is half used, or
        the whole buffer is nearly full. Another function's flood pauses only its own."""
        return (self._pending_sizes.get(function, 0) * 2 >= self.max_function_bytes
                or self._pending_bytes * 10 >= self.max_pending_bytes * 9)

    def append(self, entry: LogEntry) -> None:
        size = len(entry.message) + ENTRY_BYTES
        if (self._pending_bytes + size > self.max_pending_bytes
                or self._pending_sizes.get(entry.function, 0) + size > self.max_function_bytes):
            dropped = self._dropped.setdefault(entry.function, [0, 0])
            dropped[0] += 1
            dropped[1] += len(entry.message)
            return
        self._pending_bytes += size
        self._pending_sizes[entry.function] = self._pending_sizes.get(entry.function, 0) + size
        self._pending.setdefault(entry.function, []).append(entry.to_json().encode() + b"\n")
        for queue in self._subscribers.get(entry.function, ()):
            if queue.qsize() < 10_000:  # a stuck follower must not hold the daemon's memory
                queue.put_nowait(entry)

    def follows(self, function: str) -> bool:
        """Someone follows `function`'s logs live (`logs -f`): its entries are wanted as
        objects, not only as the file's lines."""
        return function in self._subscribers

    def append_encoded(self, function: str, lines: list[bytes], sizes: list[int],
                       entries: list[LogEntry] | None = None) -> None:
        """`append` for lines a log channel encoded already (`RecordDecoder.take_encoded`:
        `LogEntry.to_json` and a newline, and each message's length), with their entries
        only when someone `follows` the function: the same caps, drops and order."""
        pending: list[bytes] = []
        own = self._pending_sizes.get(function, 0)
        total = self._pending_bytes
        kept: list[LogEntry] | None = [] if entries is not None else None
        for index, line in enumerate(lines):
            size = sizes[index] + ENTRY_BYTES
            if total + size > self.max_pending_bytes or own + size > self.max_function_bytes:
                dropped = self._dropped.setdefault(function, [0, 0])
                dropped[0] += 1
                dropped[1] += sizes[index]
                continue
            total += size
            own += size
            pending.append(line)
            if kept is not None and entries is not None:
                kept.append(entries[index])
        if pending:
            self._pending_bytes = total
            self._pending_sizes[function] = own
            self._pending.setdefault(function, []).extend(pending)
        if kept:
            for queue in self._subscribers.get(function, ()):
                for entry in kept:
                    if queue.qsize() < 10_000:
                        queue.put_nowait(entry)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
            except OSError as exc:
                log.error("writing function logs failed: %s", exc)

    async def flush(self) -> None:
        async with self._write_lock:
            pending, self._pending = self._pending, {}
            self._pending_bytes = 0
            self._pending_sizes = {}
            self._note_drops(pending)
            if not pending:
                return
            # Encoded at append, joined here, written there: a worker thread that loops over
            # lines in Python holds the GIL in bursts, and encoding a whole flush here held
            # the loop for 2-40 ms every 0.2 s (both seen as p99 spikes).
            chunks = {function: self._chunks(lines) for function, lines in pending.items()}
            await asyncio.to_thread(self._write, chunks)

    def _note_drops(self, pending: dict[str, list[bytes]]) -> None:
        """What the full buffer dropped since the last flush: an entry per function, after
        the entries that were kept, and the metric."""
        dropped, self._dropped = self._dropped, {}
        now = datetime.now(UTC)
        for function, (lines, size) in dropped.items():
            entry = LogEntry(now, function, 0, "", RUNTIME_STREAM, "",
                             dropped_message(lines, size))
            pending.setdefault(function, []).append(entry.to_json().encode() + b"\n")
            for queue in self._subscribers.get(function, ()):
                if queue.qsize() < 10_000:
                    queue.put_nowait(entry)
            if self.on_dropped is not None:
                self.on_dropped(function, lines, size)

    def _chunks(self, lines: list[bytes]) -> list[bytes]:
        """Encoded lines as file-sized blobs, so a flood still rotates at the size cap."""
        chunks: list[bytes] = []
        start = size = 0
        for index, line in enumerate(lines):
            size += len(line)
            if size >= self.max_file_bytes // 2:
                chunks.append(b"".join(lines[start:index + 1]))
                start, size = index + 1, 0
        if start < len(lines):
            chunks.append(b"".join(lines[start:]))
        return chunks

    def _write(self, pending: dict[str, list[bytes]]) -> None:
        for function, chunks in pending.items():
            folder = self.root / function
            folder.mkdir(parents=True, exist_ok=True)
            current = folder / "current.jsonl"
            for chunk in chunks:
                with current.open("ab") as out:
                    out.write(chunk)
                    size = out.tell()
                if size > self.max_file_bytes:
                    self._rotate(folder)

    def _rotate(self, folder: Path) -> None:
        """current -> 1 -> 2 ...; the oldest beyond files_kept is dropped."""
        oldest = folder / f"{self.files_kept - 1}.jsonl"
        oldest.unlink(missing_ok=True)
        for number in range(self.files_kept - 2, 0, -1):
            source = folder / f"{number}.jsonl"
            if source.exists():
                source.rename(folder / f"{number + 1}.jsonl")
        (folder / "current.jsonl").rename(folder / "1.jsonl")

    # Reading

    async def read(self, query: LogQuery) -> list[LogEntry]:
        await self.flush()
        return await asyncio.to_thread(self._read, query)

    def _read(self, query: LogQuery) -> list[LogEntry]:
        folder = self.root / query.function
        if not folder.is_dir():
            return []
        files = [folder / f"{n}.jsonl" for n in range(self.files_kept - 1, 0, -1)]
        files.append(folder / "current.jsonl")
        found: list[LogEntry] = []
        for path in files:
            if not path.exists():
                continue
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    try:
                        entry = LogEntry.from_json(line)
                    except (ValueError, KeyError):
                        continue  # a line cut by a crash mid-write
                    if query.matches(entry):
                        found.append(entry)
        # stdout and stderr are captured by separate readers, so the files hold them in
        # arrival order; Docker's timestamps give the order they were written in.
        found.sort(key=lambda entry: entry.time)
        return found[-query.tail:] if query.tail else found

    def subscribe(self, function: str) -> asyncio.Queue[LogEntry]:
        queue: asyncio.Queue[LogEntry] = asyncio.Queue()
        self._subscribers.setdefault(function, set()).add(queue)
        return queue

    def unsubscribe(self, function: str, queue: asyncio.Queue[LogEntry]) -> None:
        subscribers = self._subscribers.get(function)
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del self._subscribers[function]

    def subscriber_count(self) -> int:
        return sum(len(queues) for queues in self._subscribers.values())

    async def delete(self, function: str) -> None:
        async with self._write_lock:
            self._pending.pop(function, None)
            self._pending_bytes -= self._pending_sizes.pop(function, 0)
            self._dropped.pop(function, None)
            await asyncio.to_thread(shutil.rmtree, self.root / function, True)
