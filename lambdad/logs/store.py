"""Durable per-function log files with rotation, and live subscribers for `logs -f`.

Layout: STATE_DIR/logs/<function>/current.jsonl plus rotated 1.jsonl (newest) .. N.jsonl.
Appends are buffered in memory and written by one flush task in a worker thread, so the
event loop never waits on the disk; followers get entries the moment they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

from lambdad.logs.entry import LogEntry, LogQuery

log = logging.getLogger("lambdad.logs")

FLUSH_INTERVAL_S = 0.2


class LogStore:
    def __init__(self, root: Path, *, max_file_bytes: int = 4 * 1024 * 1024,
                 files_kept: int = 5) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.files_kept = files_kept
        self._pending: dict[str, list[LogEntry]] = {}
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

    def append(self, entry: LogEntry) -> None:
        self._pending.setdefault(entry.function, []).append(entry)
        for queue in self._subscribers.get(entry.function, ()):
            if queue.qsize() < 10_000:  # a stuck follower must not hold the daemon's memory
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
            if not pending:
                return
            # Encoded here, written there: a worker thread that loops over lines in Python
            # holds the GIL in bursts and stalls the event loop (seen as p99 spikes).
            chunks = {function: self._chunks(entries) for function, entries in pending.items()}
            await asyncio.to_thread(self._write, chunks)

    def _chunks(self, entries: list[LogEntry]) -> list[bytes]:
        """Entries as file-sized blobs, so a flood still rotates at the size cap."""
        chunks: list[bytes] = []
        lines: list[str] = []
        size = 0
        for entry in entries:
            line = entry.to_json() + "\n"
            lines.append(line)
            size += len(line)
            if size >= self.max_file_bytes // 2:
                chunks.append("".join(lines).encode())
                lines, size = [], 0
        if lines:
            chunks.append("".join(lines).encode())
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
            await asyncio.to_thread(shutil.rmtree, self.root / function, True)
