"""The log channel to lambdad: records, and the bounded queue they wait in (pure).

When lambdad starts the runtime with LAMBDA_LOG_CHANNEL=1, the supervisor writes its log
lines (logs.py's tagged lines and frames, unchanged) not to the container's stdout and
stderr but to a connection lambdad opens on the runtime's own socket (GET /.lambda/logs
with `Lambda-Log-Channel: 1`, a header the gateway never forwards), as records:

    <u32 payload bytes> <u8 kind> <u8 stream> <u16 zero> <u64 unix time ns>
    kind LINES:   whole lines, each ending in a newline, as they would have gone to fd
                  `stream` (1 stdout, 2 stderr)
    kind DROPPED: <u64 lines> <u64 bytes> the queue dropped since the last such record

The supervisor never waits for lambdad: what the connection does not take waits here, text
up to TEXT_CAP bytes and frames (untagged START/END/REPORT/INIT_REPORT lines) up to
FRAME_CAP, so a flood of text cannot cost a request its frames. Beyond, lines are dropped
and counted, and a DROPPED record goes first once there is room again.
lambdad's reader is lambdad/logs/channel.py; docs/design-notes/log-channel.md says why.
"""

from __future__ import annotations

import collections
import struct

HEADER = struct.Struct("<IBBHQ")
COUNTS = struct.Struct("<QQ")
LINES = 1
DROPPED = 2
STREAMS = (1, 2)
MAX_PAYLOAD = 256 * 1024  # a record's payload; lines are shorter (logs.MAX_TEXT plus a tag)
TEXT_CAP = 1 << 20
FRAME_CAP = 2 << 20
FRAME_STARTS = (b"START ", b"END ", b"REPORT ", b"INIT_REPORT ")
PATH = "/.lambda/logs"
HEADER_NAME = "Lambda-Log-Channel"
CONTENT_TYPE = b"application/vnd.lambda.log-records"
RESPONSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE
                 + b"\r\nConnection: close\r\n\r\n")


def record(kind: int, stream: int, payload: bytes, time_ns: int) -> bytes:
    return HEADER.pack(len(payload), kind, stream, 0, time_ns) + payload


def lines_records(stream: int, data: bytes, time_ns: int) -> list[bytes]:
    """`data` (whole lines) as LINES records of at most MAX_PAYLOAD bytes, cut at line
    ends (a longer line, which the supervisor never writes, gets a record of its own)."""
    if len(data) <= MAX_PAYLOAD:
        return [record(LINES, stream, data, time_ns)]
    records = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + MAX_PAYLOAD) + 1
        if end <= start:  # no line end within the limit
            end = data.find(b"\n", start + MAX_PAYLOAD) + 1 or len(data)
        records.append(record(LINES, stream, data[start:end], time_ns))
        start = end
    return records


def is_frame(line: bytes) -> bool:
    """An untagged frame line: a tag never holds a space, so no tagged line starts so."""
    return line.startswith(FRAME_STARTS)


def split(blob: bytes) -> tuple[list[tuple[int, int, bytes, int]], bytes]:
    """(kind, stream, payload, time ns) of each whole record in `blob`, and what is left:
    the supervisor reads back its own records (what it could not deliver goes to fd 1/2)."""
    found = []
    at = 0
    while len(blob) - at >= HEADER.size:
        size, kind, stream, _, time_ns = HEADER.unpack_from(blob, at)
        end = at + HEADER.size + size
        if end > len(blob):
            break
        found.append((kind, stream, blob[at + HEADER.size:end], time_ns))
        at = end
    return found, blob[at:]


class Queue:
    """Records not yet sent, bounded; the first has been sent up to `offset`."""

    __slots__ = ("dropped_bytes", "dropped_lines", "frame_cap", "offset", "records", "size",
                 "text_cap")

    def __init__(self, text_cap: int = TEXT_CAP, frame_cap: int = FRAME_CAP) -> None:
        self.text_cap = text_cap
        self.frame_cap = frame_cap
        self.records: collections.deque[bytes] = collections.deque()
        self.size = 0  # bytes not sent yet (what the caps bound)
        self.offset = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def __bool__(self) -> bool:
        return bool(self.records)

    def _append(self, data: bytes) -> None:
        self.records.append(data)
        self.size += len(data)

    def put(self, stream: int, data: bytes, time_ns: int) -> None:
        """Queues whole lines written to `stream`; what is over the caps is dropped."""
        if not data:
            return
        if not data.endswith(b"\n"):
            data += b"\n"
        room = self.size + len(data) + HEADER.size <= self.text_cap
        if self.dropped_lines and self.size + len(data) + 2 * HEADER.size + COUNTS.size \
                <= self.text_cap:  # the count goes before the lines it is followed by
            self.report_drops(time_ns)
        if room:
            for item in lines_records(stream, data, time_ns):
                self._append(item)
            return
        lines = data[:-1].split(b"\n")
        frames = [line for line in lines if is_frame(line)]
        kept = b"".join(line + b"\n" for line in frames)
        if self.size + len(kept) + HEADER.size > self.frame_cap:
            frames, kept = [], b""  # a write's frames (END and REPORT) go together or not
        self.dropped_lines += len(lines) - len(frames)
        self.dropped_bytes += len(data) - len(kept)
        if kept:
            self._append(record(LINES, stream, kept, time_ns))

    def report_drops(self, time_ns: int) -> None:
        """Queues the DROPPED record of what was dropped since the last one, if anything
        was (whatever the caps: it is small, and said once)."""
        if self.dropped_lines:
            self._append(record(DROPPED, 0, COUNTS.pack(self.dropped_lines,
                                                        self.dropped_bytes), time_ns))
            self.dropped_lines = self.dropped_bytes = 0

    def pending(self, most: int = 64) -> list[bytes | memoryview]:
        """The next records to send (the first from its unsent part), for sendmsg."""
        chunks: list[bytes | memoryview] = []
        for item in self.records:
            chunks.append(memoryview(item)[self.offset:] if not chunks and self.offset
                          else item)
            if len(chunks) >= most:
                break
        return chunks

    def sent(self, count: int) -> None:
        """`count` more bytes went out."""
        self.size -= count
        count += self.offset
        while self.records and count >= len(self.records[0]):
            count -= len(self.records.popleft())
        self.offset = count

    def cut(self) -> None:
        """The reader went away during the first record: its rest cannot start the next
        reader's stream, so it is dropped (and counted)."""
        if self.offset and self.records:
            first = self.records.popleft()
            self.size -= len(first) - self.offset
            self.offset = 0
            for kind, _, payload, _ in split(first)[0]:
                if kind == LINES:
                    self.dropped_lines += payload.count(b"\n")
                    self.dropped_bytes += len(payload)

    def take_all(self) -> bytes:
        """Every unsent byte, the queue emptied (the exit's fallback)."""
        blob = b"".join(self.pending(len(self.records) or 1))
        self.records.clear()
        self.size = self.offset = 0
        return blob
