"""The standard runtime's log channel, lambdad's side: bytes in, log entries out (pure).

lambdad opens a connection to an instance's socket (through `InstanceFolder.connect`, like
every connection to an instance), sends `REQUEST` and, from a runtime started with
LAMBDA_LOG_CHANNEL=1, gets a 200 head and then records until the instance exits:

    <u32 payload bytes> <u8 kind> <u8 stream> <u16 zero> <u64 unix time ns>
    kind 1 LINES:   whole lines, each ending in a newline, written to stream 1 (stdout) or
                    2 (stderr): the supervisor's tagged lines and frames (entry.py)
    kind 2 DROPPED: <u64 lines> <u64 bytes> the runtime dropped (lambdad read too slowly,
                    or was not connected)

The writer is packaging/runtime/python/lambda_runtime/logchannel.py; the design and why it
is safe is docs/design-notes/log-channel.md. Only the transport is new: every line goes
through `parse_line` as a line from Docker's stream of the same runtime does, so frames and
request ids come only from the supervisor's tags. The runtime is trusted not to run function
code, yet its bytes are bounded here all the same: a record over MAX_PAYLOAD, an unknown
kind or stream, a cut line or a head that is not the channel's ends the channel
(`ChannelBroken`).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii

from lambdad.logs.entry import FRAME, FRAME_STARTS, RUNTIME_STREAM, TAG, LogEntry

# Lambda-Invocation-Type is not one a runtime invokes a function with: a runtime from before
# the channel (a version image built on an older runtime image) answers 400 and runs nothing.
REQUEST = (b"GET /.lambda/logs HTTP/1.1\r\nHost: lambdad\r\nLambda-Log-Channel: 1\r\n"
           b"Lambda-Invocation-Type: log-channel\r\nContent-Length: 0\r\n\r\n")
CONTENT_TYPE = b"application/vnd.lambda.log-records"
HEADER = struct.Struct("<IBBHQ")
COUNTS = struct.Struct("<QQ")
LINES = 1
DROPPED = 2
STREAMS = {1: "stdout", 2: "stderr"}
MAX_PAYLOAD = 1 << 20  # the runtime cuts records at 256 KiB
MAX_HEAD = 8 * 1024
MAX_LINE_BYTES = 64 * 1024  # as docker_stream: longer lines are cut


class ChannelBroken(Exception):
    """The bytes do not follow the channel's format: lambdad closes it."""


def parse_head(head: bytes) -> None:
    """Checks the answer to REQUEST (status line and headers, without the blank line)."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or status[1] != b"200":
        raise ChannelBroken(f"the runtime answered {lines[0][:80]!r}")
    types = [value.strip() for name, _, value in (line.partition(b":") for line in lines[1:])
             if name.strip().lower() == b"content-type"]
    if types != [CONTENT_TYPE]:
        raise ChannelBroken(f"the runtime's answer is not the log channel ({types[:1]!r})")


def dropped_message(lines: int, size: int) -> str:
    """The text of a DROPPED record's entry: lambdad's words, in the stream `runtime`."""
    return f"LOGS_DROPPED Lines: {lines} Bytes: {size}"


class RecordDecoder:
    """One instance's channel: `feed` the bytes as they arrive, get its entries."""

    def __init__(self, function: str, version: int, instance: str, *,
                 on_dropped: Callable[[int, int], None] | None = None) -> None:
        self.function = function
        self.version = version
        self.instance = instance
        self.on_dropped = on_dropped  # (lines, bytes) of each DROPPED record
        self._buffer = bytearray()
        self._head_done = False
        self._lines: list[bytes] = []  # the current LINES record's lines, from _at on
        self._at = 0
        self._when = datetime.fromtimestamp(0, UTC)
        self._stream = "stdout"
        self._prefix = ""  # the current record's JSON up to a line's stream (take_encoded)
        self._id_prefix = ""  # the same, for the runtime's frames (stream "runtime")
        self._fixed: dict[str, str] | None = None

    @property
    def head_done(self) -> bool:
        """The runtime answered as the log channel (else it is an older runtime, or off)."""
        return self._head_done

    def feed(self, data: bytes) -> list[LogEntry]:
        """Every entry the bytes so far complete (`push` then `take` without a limit)."""
        self.push(data)
        return self.take()

    def push(self, data: bytes) -> None:
        """Keeps the bytes; decodes only the head. Cheap: the work is in `take`."""
        self._buffer += data
        if not self._head_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise ChannelBroken("the runtime's answer has no end of head")
                return
            parse_head(bytes(self._buffer[:end]))
            del self._buffer[:end + 4]
            self._head_done = True

    @property
    def pending(self) -> bool:
        """Lines of a record are still to be taken, or a whole record waits."""
        return self._at < len(self._lines) or self._record_ready()

    def _record_ready(self) -> bool:
        if not self._head_done or len(self._buffer) < HEADER.size:
            return False
        size: int = HEADER.unpack_from(self._buffer)[0]
        return len(self._buffer) >= HEADER.size + size

    def take(self, limit: int | None = None) -> list[LogEntry]:
        """At most `limit` entries of what was pushed: a record of a million two-byte lines
        is decoded over many calls, so one instance never holds the loop for long. (The
        entries of `take_encoded`: one decoding of the lines, the store's or a follower's.)"""
        entries: list[LogEntry] = []
        self.take_encoded(sys.maxsize if limit is None else limit, entries)
        return entries

    def _load(self) -> list[LogEntry] | None:
        """Decodes the next whole record, if one waits (else None): a DROPPED record's entry,
        or nothing for a LINES record, whose lines are then the current ones."""
        self._lines, self._at = [], 0
        if not self._head_done or len(self._buffer) < HEADER.size:
            return None
        size, kind, stream, zero, time_ns = HEADER.unpack_from(self._buffer)
        if size > MAX_PAYLOAD or zero:
            raise ChannelBroken(f"a record of {size} bytes (flags {zero})")
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size:end])
        del self._buffer[:end]
        return self._entries(kind, stream, payload, time_ns)

    def take_encoded(self, limit: int, entries: list[LogEntry] | None = None,
                     ) -> tuple[list[bytes], list[int]]:
        """As `take`, but each line as the LogStore files it (`LogEntry.to_json`'s bytes and a
        newline) and its message's length, with no LogEntry unless `entries` is given (someone
        follows the function's logs live): a record's time, function, version and instance
        are encoded once for all its lines, not once a line."""
        lines: list[bytes] = []
        sizes: list[int] = []
        while len(lines) < limit:
            if self._at < len(self._lines):
                stop = min(len(self._lines), self._at + limit - len(lines))
                plain, framed = self._prefix, self._id_prefix
                for raw in self._lines[self._at:stop]:
                    text = raw[:MAX_LINE_BYTES].decode("utf-8", errors="replace").rstrip("\r")
                    # parse_line, inline (a call and a tuple a line less); its request ids
                    # are [0-9A-Za-z-] only, so they need no JSON escaping
                    tag = TAG.match(text)
                    if tag is not None:
                        end = tag.end()
                        request_id, message, frame = text[:end - 1], text[end:], False
                    else:
                        request_id, message, frame = "", text, False
                        if text.startswith(FRAME_STARTS):
                            match = FRAME.match(text)
                            if match is not None:
                                request_id, frame = match.group(1), True
                        elif text.startswith("INIT_REPORT "):
                            frame = True
                    lines.append(((framed if frame else plain) + request_id + '","message":'
                                  + encode_basestring_ascii(message) + "}\n").encode())
                    sizes.append(len(message))
                    if entries is not None:
                        entries.append(LogEntry(self._when, self.function, self.version,
                                                self.instance,
                                                RUNTIME_STREAM if frame else self._stream,
                                                request_id, message))
                self._at = stop
                continue
            loaded = self._load()
            if loaded is None:
                break
            if not loaded:  # a LINES record: its lines are next
                self._encode_prefixes()
            for entry in loaded:  # a DROPPED record's entry
                lines.append(entry.to_json().encode() + b"\n")
                sizes.append(len(entry.message))
                if entries is not None:
                    entries.append(entry)
        return lines, sizes

    def _encode_prefixes(self) -> None:
        if self._fixed is None:  # the fields after the time, per stream: the same all along
            fixed = (f',"function":{encode_basestring_ascii(self.function)},'
                     f'"version":{int(self.version)},'
                     f'"instance":{encode_basestring_ascii(self.instance)},"stream":')
            self._fixed = {name: f'{fixed}{encode_basestring_ascii(name)},"request_id":"'
                           for name in (*STREAMS.values(), RUNTIME_STREAM)}
        head = '{"time":"' + self._when.isoformat() + '"'  # ASCII digits, '-', ':', '+', 'T'
        self._prefix = head + self._fixed[self._stream]
        self._id_prefix = head + self._fixed[RUNTIME_STREAM]

    def _entries(self, kind: int, stream: int, payload: bytes, time_ns: int) -> list[LogEntry]:
        when = datetime.fromtimestamp(time_ns / 1e9, UTC)
        if kind == DROPPED:
            if len(payload) != COUNTS.size:
                raise ChannelBroken(f"a DROPPED record of {len(payload)} bytes")
            lines, size = COUNTS.unpack(payload)
            if self.on_dropped is not None:
                self.on_dropped(lines, size)
            return [LogEntry(when, self.function, self.version, self.instance, RUNTIME_STREAM,
                             "", dropped_message(lines, size))]
        if kind != LINES:
            raise ChannelBroken(f"a record of unknown kind {kind}")
        name = STREAMS.get(stream)
        if name is None:
            raise ChannelBroken(f"a record of unknown stream {stream}")
        if not payload.endswith(b"\n"):
            raise ChannelBroken("a LINES record that does not end a line")
        self._lines = payload[:-1].split(b"\n")
        self._at = 0
        self._when = when
        self._stream = name
        return []
