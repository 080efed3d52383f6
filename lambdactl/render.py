"""How lambdactl shows things: consoles, tables, timestamps, sizes and safe text.

Pure of any RPC: commands fetch, this module formats, so the formatting can be
unit-tested in memory. Every protobuf Timestamp goes through `to_datetime`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lambdad.errors import InvalidArgument
from lambdad.jsontext import parse_json

TEST_WIDTH = 120  # width of consoles built on injected streams
MIB = 1024 * 1024


class Timestamp(Protocol):
    """What is read of a google.protobuf.Timestamp."""

    seconds: int
    nanos: int


def console(stream: TextIO | None, default: TextIO) -> Console:
    """On real streams Rich decides about colour itself (a terminal? TERM, NO_COLOR,
    FORCE_COLOR), so nothing here may force a terminal or a colour system; injected
    streams (tests) get plain text at a fixed width."""
    if stream is None:
        return Console(file=default, highlight=False)
    return Console(file=stream, width=TEST_WIDTH, color_system=None, highlight=False)


def is_unset(ts: Timestamp) -> bool:
    """The zero Timestamp is how the API says "never" (or "not yet")."""
    return ts.seconds == 0 and ts.nanos == 0


def to_datetime(ts: Timestamp) -> datetime:
    """The one protobuf Timestamp conversion: an aware UTC datetime."""
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def local_time(ts: Timestamp) -> str:
    """`2025-11-26 18:40:00` in the local zone; unset is `-`."""
    if is_unset(ts):
        return "-"
    return to_datetime(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def rfc3339(ts: Timestamp, timespec: str = "seconds") -> str | None:
    """A protobuf Timestamp as RFC 3339 UTC (`2025-11-26T17:40:00Z`); unset is None."""
    if is_unset(ts):
        return None
    return to_datetime(ts).isoformat(timespec=timespec).replace("+00:00", "Z")


def size(n: int) -> str:
    value = float(n)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ms(seconds: float) -> str:
    """Seconds as milliseconds in a table; zero (no data) is `-`."""
    return f"{seconds * 1000:.1f}" if seconds else "-"


def ms_json(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def plain(value: object) -> str:
    """A JSON value in `key: value` text: None is `-`, booleans are yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def parse_reply(data: bytes) -> tuple[bool, Any]:
    """A function's reply as JSON if it is (a hostile one may nest without end)."""
    try:
        return True, parse_json(data, "the reply")
    except InvalidArgument:
        return False, None


def json_or_text(data: bytes) -> Any:
    """A payload in JSON output: the JSON value itself, else its text."""
    is_json, value = parse_reply(data)
    return value if is_json else data.decode("utf-8", "replace")


# A function's text must not steer the terminal: a carriage return or an escape sequence
# could overwrite the time, request and stream columns with its own (C0 but tab, DEL, C1,
# line separators and bidi controls are shown escaped).
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0A, 0x20), 0x7F,
                                            *range(0x80, 0xA0))}
_UNPRINTABLE.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F),
                                                  *range(0x2066, 0x206A))})


def printable(text: str) -> str:
    return text.translate(_UNPRINTABLE)


def table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """The house table: no box, bold header, no column ever wraps."""
    t = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        t.add_column(column, no_wrap=True, justify="right" if column in right else "left")
    return t


def print_table(out: Console, t: Table) -> None:
    """Every table at its natural width: never drop or truncate columns to fit the
    terminal, because scripts grep this output."""
    saved = out.width
    out.width = max(saved, out.measure(t, options=out.options.update_width(10_000)).maximum)
    try:
        out.print(t, crop=False)
    finally:
        out.width = saved


def print_fields(out: Console, rows: list[tuple[str, str]], pad: int) -> None:
    """`Key:   value` lines with the key in bold, for one object's details."""
    for key, value in rows:
        out.print(Text.assemble((f"{key}:".ljust(pad), "bold"), value or "-"), soft_wrap=True)


class StepView:
    """`[n/N] title... Done.` lines; on a terminal a spinner runs while a step works."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.step = 0
        self.header: str | None = None  # printed lazily on a terminal
        self.line_open = False  # plain mode: header printed without its newline
        self.status: Any = None

    def start(self, step: int, total: int, title: str) -> None:
        self.close()
        self.step = step
        header = f"[{step}/{total}] {title}..."
        if self.live:
            self.header = header
            self.status = self.console.status(Text(header), spinner="dots")
            self.status.start()
        else:
            self.console.print(header, end="", markup=False, highlight=False, soft_wrap=True)
            self.line_open = True

    def output(self, line: str) -> None:
        self._flush_header()
        self.console.print(Text(" " + line.rstrip("\r\n"), style="dim"), soft_wrap=True)

    def done(self) -> None:
        self._stop_status()
        if self.header is not None:
            self.console.print(
                f"{self.header} Done.", markup=False, highlight=False, soft_wrap=True
            )
            self.header = None
        elif self.line_open:
            self.console.print(" Done.", markup=False, highlight=False)
            self.line_open = False
        self.step = 0

    def close(self) -> None:
        """End whatever is on screen, e.g. before an error line."""
        self._flush_header()
        self._stop_status()

    def _flush_header(self) -> None:
        if self.header is not None:
            self.console.print(self.header, markup=False, highlight=False, soft_wrap=True)
            self.header = None
        if self.line_open:
            self.console.print()
            self.line_open = False

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
