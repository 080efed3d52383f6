"""One captured log line, the query language over them, and the runtime's line formats.

Pure: the runtime writes `START RequestId: <id> Version: <n>`, the function's own lines
as `<id>\t<line>`, then `END RequestId: <id>` and `REPORT RequestId: <id>\t...`; lines
outside any invocation carry no id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_FRAME = re.compile(r"^(?:START|END|REPORT) RequestId: ([0-9A-Za-z-]{1,64})(?:\s|$)")
_PREFIXED = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\t")


def parse_line(line: str) -> tuple[str, str]:
    """(request id or "", message) of one line as the runtime wrote it."""
    framed = _FRAME.match(line)
    if framed:
        return framed.group(1), line
    prefixed = _PREFIXED.match(line)
    if prefixed:
        return prefixed.group(1), line[prefixed.end():]
    return "", line


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class LogEntry:
    time: datetime
    function: str
    version: int
    instance: str
    stream: str  # "stdout" | "stderr"
    request_id: str
    message: str

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
