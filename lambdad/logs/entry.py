"""One captured log line, the query language over them, and the runtime's line formats.

Pure. The standard runtime's supervisor is the only writer of its container's stdout and
stderr (packaging/runtime/python/lambda_runtime/logs.py), and every line it writes is:

    START RequestId: <id> Version: <n>        frames, built by the runtime from values the
    END RequestId: <id>                       function cannot choose
    REPORT RequestId: <id>\t...
    INIT_REPORT ...
    <id>\t<text>                              text a function's process wrote during <id>
    \t<text>                                  text written outside any request

A tag (`<id>` or nothing, then a tab) never contains a space, so a tagged line never parses
as a frame, and the text after it cannot choose its request id. A Dockerfile function has no
such runtime: everything in its container is the function's, so none of its lines is
trusted to carry a frame or a request id (`framed=False`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

RUNTIME_STREAM = "runtime"  # LogEntry.stream of the runtime's own frames
# The runtime's line formats (below); the log channel's decoder applies them inline too.
FRAME = re.compile(r"(?:START|END|REPORT) RequestId: ([0-9A-Za-z-]{1,64})(?:\s|$)")
TAG = re.compile(r"[0-9A-Za-z-]{0,64}\t")
FRAME_STARTS = ("START ", "END ", "REPORT ")


class ParsedLine(NamedTuple):
    request_id: str  # "" outside any request
    message: str
    frame: bool  # START/END/REPORT/INIT_REPORT as the runtime wrote it


def parse_line(line: str, *, framed: bool = True) -> ParsedLine:
    """A line as the runtime wrote it; `framed=False` for a container without the standard
    runtime, whose lines are all plain text of no request."""
    if not framed:
        return ParsedLine("", line, False)
    tagged = TAG.match(line)
    if tagged:
        end = tagged.end()
        return ParsedLine(line[:end - 1], line[end:], False)
    if line.startswith(FRAME_STARTS):
        frame = FRAME.match(line)
        if frame:
            return ParsedLine(frame.group(1), line, True)
    elif line.startswith("INIT_REPORT "):
        return ParsedLine("", line, True)
    return ParsedLine("", line, False)  # not the runtime's (an older image, or a crash)


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class LogEntry:
    time: datetime
    function: str
    version: int
    instance: str
    stream: str  # "stdout" | "stderr" | "runtime" (the runtime's frames)
    request_id: str
    message: str
    node: str = ""  # cluster mode: the node that captured it (set when read, never stored)

    def to_json(self) -> str:
        # Field by field: dataclasses.asdict deep-copies and costs ~10x more, per line.
        return _ENCODE({
            "time": self.time.isoformat(), "function": self.function,
            "version": self.version, "instance": self.instance, "stream": self.stream,
            "request_id": self.request_id, "message": self.message,
        })

    @classmethod
    def from_json(cls, text: str) -> LogEntry:
        data: dict[str, Any] = json.loads(text)
        when = datetime.fromisoformat(data["time"])
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(time=when, function=data["function"], version=int(data["version"]),
                   instance=data["instance"], stream=data["stream"],
                   request_id=data["request_id"], message=data["message"])


@dataclass(frozen=True)
class LogQuery:
    function: str
    since: datetime | None = None
    request_id: str = ""
    version: int = 0  # 0: every version
    tail: int = 0  # 0: everything that matches

    def matches(self, entry: LogEntry) -> bool:
        return (
            entry.function == self.function
            and (self.since is None or entry.time >= self.since)
            and (not self.request_id or entry.request_id == self.request_id)
            and (not self.version or entry.version == self.version)
        )


def parse_docker_line(raw: bytes) -> tuple[datetime, str]:
    """Docker's `timestamps=True` form: RFC 3339 with nanoseconds, a space, the line."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    stamp, _, message = text.partition(" ")
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        when = datetime.fromisoformat(head).replace(
            microsecond=int((frac + "000000")[:6]) if frac else 0, tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC), text
    return when, message
