"""The container's log lines, as only the supervisor writes them (pure: bytes in, bytes out).

The supervisor is the one process that holds the container's stdout and stderr (Docker's log
stream). Every line it writes there is one of:

    START RequestId: <id> Version: <version>                        a frame (stdout)
    END RequestId: <id>                                              a frame (stdout)
    REPORT RequestId: <id>\\tDuration: <ms.2f> ms\\tBilled Duration: <ceil ms> ms\\t
        Memory Size: <MB> MB\\tMax Memory Used: <MB> MB[\\tInit Duration: <ms.2f> ms]
        [\\tStart: warm|cell|unpaused|container][\\tMemory Wait: <ms.2f> ms]
                                                                     a frame (stdout)
    INIT_REPORT Init Duration: <ms.2f> ms\\tPhase: init\\tStatus: error\\tError Type: <type>
                                                                     a frame (stderr)
    <id>\\t<text>      text a worker wrote (stdout or stderr) while it served request <id>
    \\t<text>          text written outside any request: at import, by the zygote's threads,
                      by a worker between requests, or the runtime's own messages

Frames are built from values the function cannot choose (lambdad's request id, the version,
the supervisor's clocks, the kernel's memory figures). Everything a function's processes
write reaches the supervisor through pipes, and the supervisor starts each of its lines with
the tag of the request the writing worker was serving. A tag is `[0-9A-Za-z-]{0,64}` and a
tab, so it never contains a space: no such line can begin with a frame keyword, and the
text after the tag cannot change which request the line belongs to. lambdad parses exactly
this (lambdad/logs/entry.py).

Lines are cut at MAX_TEXT bytes (at a UTF-8 character boundary), each piece tagged again:
Docker splits lines over 16 KiB into partial messages, and a follower that starts between
two of them (lambdad adopting an instance after a restart) would see a continuation begin a
line.
"""

from __future__ import annotations

OUTSIDE = b"\t"  # the tag of lines written outside any request
MAX_TEXT = 16 * 1024 - 128  # tag (at most 65 bytes) + text + newline stay under Docker's 16 KiB
ID_BYTES = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
MAX_ID = 64


def valid_request_id(request_id: str) -> bool:
    """What a tag or a frame may carry; the supervisor replaces anything else."""
    return (0 < len(request_id) <= MAX_ID and request_id.isascii()
            and not request_id.encode("ascii").translate(None, ID_BYTES))


def tag(request_id: str | None) -> bytes:
    """The prefix of a line written while `request_id` ran (None: outside any request)."""
    if request_id is None:
        return OUTSIDE
    if not valid_request_id(request_id):
        raise ValueError(f"not a request id: {request_id!r}")
    return request_id.encode("ascii") + b"\t"


def _cut(line: bytes) -> int:
    """Where to cut a too long line: at MAX_TEXT, moved back to a UTF-8 character start."""
    end = MAX_TEXT
    for back in range(4):  # a UTF-8 character has at most 3 continuation bytes
        if line[end - back] & 0xC0 != 0x80:
            return end - back
    return end  # not UTF-8 anyway: cut anywhere


def _pieces(line: bytes, keep_rest: bool) -> tuple[list[bytes], bytes]:
    """Cuts `line` into MAX_TEXT pieces; with keep_rest the last (short) piece is returned
    apart, to wait for the rest of its line."""
    pieces = []
    while len(line) > MAX_TEXT:
        at = _cut(line)
        pieces.append(line[:at])
        line = line[at:]
    if keep_rest:
        return pieces, line
    pieces.append(line)
    return pieces, b""


class LineTagger:
    """One pipe's bytes, as they arrive, to whole tagged lines.

    A partial line waits for its newline; `flush` ends it (at a request's end, so it is
    tagged with that request, or before a request starts, so it is not).
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes, line_tag: bytes) -> bytes:
        """The complete lines in `pending + data`, each prefixed with `line_tag`."""
        if self.pending:
            data = self.pending + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_TEXT:
            pieces, rest = _pieces(rest, keep_rest=True)
            lines.extend(pieces)
        self.pending = rest
        if not lines:
            return b""
        if any(len(line) > MAX_TEXT for line in lines):
            lines = [piece for line in lines for piece in _pieces(line, keep_rest=False)[0]]
        return line_tag + (b"\n" + line_tag).join(lines) + b"\n"

    def flush(self, line_tag: bytes) -> bytes:
        """The partial line, ended and tagged; b"" when there is none."""
        if not self.pending:
            return b""
        text, self.pending = self.pending, b""
        return line_tag + text + b"\n"


def _clean(text: str) -> str:
    """A frame's fields on one line, whatever the environment held."""
    return "".join(c if c.isprintable() and c != "\t" else " " for c in text)


def start_line(request_id: str, version: str) -> bytes:
    return f"START RequestId: {request_id} Version: {_clean(version)}\n".encode()


def end_lines(
    request_id: str,
    elapsed_ns: int,
    memory_mb: int,
    max_used_mb: int,
    init_ms: float | None = None,
    start: str = "",
    hooks_ms: float = 0.0,
    memory_wait_ms: float | None = None,
) -> bytes:
    """END and REPORT, in one write. The first REPORT's Init Duration includes the
    before-snapshot hooks, as on Lambda; their share follows it when there were any.
    `memory_wait_ms`: how long the request waited for a worker because the instance's
    memory held no more (Duration does not include it)."""
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {elapsed_ns / 1e6:.2f} ms"
        f"\tBilled Duration: {-(-elapsed_ns // 1_000_000)} ms"
        f"\tMemory Size: {memory_mb} MB\tMax Memory Used: {max_used_mb} MB"
    )
    if init_ms is not None:
        report += f"\tInit Duration: {init_ms:.2f} ms"
        if hooks_ms:
            report += f"\tBefore Snapshot Duration: {hooks_ms:.2f} ms"
    if start:
        report += f"\tStart: {_clean(start)}"
    if memory_wait_ms is not None:
        report += f"\tMemory Wait: {memory_wait_ms:.2f} ms"
    return f"END RequestId: {request_id}\n{report}\n".encode()


def init_report(init_ms: float, error_type: str) -> bytes:
    return (f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: error"
            f"\tError Type: {_clean(error_type)}\n").encode()


def outside(text: str) -> bytes:
    """The runtime's own message (which may quote a function's words) as untagged lines."""
    tagger = LineTagger()
    data = text.encode("utf-8", "backslashreplace")
    return tagger.feed(data, OUTSIDE) + tagger.flush(OUTSIDE)


def in_request(request_id: str, text: str) -> bytes:
    """The runtime's own message about one request, as lines of that request."""
    tagger = LineTagger()
    line_tag = tag(request_id)
    return tagger.feed(text.encode("utf-8", "backslashreplace"), line_tag) + tagger.flush(line_tag)
