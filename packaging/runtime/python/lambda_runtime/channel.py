"""The private channel between the supervisor and one worker: one request out, one reply back.

Pure encoding, so the formats are unit-tested in memory. A request is a length and a
`marshal` of plain values (the worker trusts its supervisor). A reply comes from a process
that runs the function's code, so the supervisor trusts nothing in it: fixed-size lengths it
bounds, a status it checks, and header lines it validates before they reach an HTTP head.

    request (supervisor -> worker):  <u32 length> marshal((kind, method, target, headers,
                                     body, request_id, deadline_ms, now_ms))
    reply (worker -> supervisor):    <u16 status> <u32 header bytes> <u32 body bytes>
                                     "Name: value\\r\\n"... body
    hello (worker -> supervisor):    <u32 pid>, once, when the worker is ready
"""

from __future__ import annotations

import marshal
import re
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .events import Headers

LENGTH = struct.Struct("<I")
REPLY = struct.Struct("<HII")
HELLO = struct.Struct("<I")
MAX_REPLY_HEADERS = 256 * 1024
MAX_REPLY_BODY = 1 << 30  # far above any useful response; the memory limit comes first
# RFC 9110 token characters: what a header name may consist of.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The supervisor frames the response itself, and alone tells lambdad how many workers the
# instance's memory holds (a function's copy of that header would be a lie: dropped).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection",
                      b"lambda-workers", b"lambda-wait-timeout"})
_VALID = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n\0]*\r\n)+")
_FRAMING_LINE = re.compile(rb"(?:^|\n)(?:content-length|transfer-encoding|connection"
                           rb"|lambda-workers|lambda-wait-timeout):", re.IGNORECASE)

Request = tuple[str, str, str, "Headers", bytes, str, int, int]


class ProtocolError(Exception):
    """A worker's bytes do not follow the channel's format: the worker is not trusted again."""


def encode_request(request: Request) -> bytes:
    payload = marshal.dumps(request, 4)
    return LENGTH.pack(len(payload)) + payload


def decode_request(payload: bytes) -> Request:
    request: Request = marshal.loads(payload)
    return request


def encode_reply(status: int, headers: Headers, body: bytes) -> bytes:
    """Raises UnicodeEncodeError for a header outside Latin-1 (the worker reports it)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")
    return REPLY.pack(status, len(head), len(body)) + head + body


def reply_sizes(head: bytes) -> tuple[int, int, int]:
    """(status, header bytes, body bytes) of a reply's fixed part, within bounds."""
    status, header_len, body_len = REPLY.unpack(head)
    if not 200 <= status <= 599:
        raise ProtocolError(f"status {status} out of range")
    if header_len > MAX_REPLY_HEADERS or body_len > MAX_REPLY_BODY:
        raise ProtocolError(f"reply of {header_len}+{body_len} bytes is too large")
    return status, header_len, body_len


def checked_headers(blob: bytes) -> bytes | None:
    """The header lines as they may go into an HTTP head, framing headers left out; None when
    a line is not a valid `Name: value` (no CR, LF or NUL in the value)."""
    if not blob:
        return b""
    if _VALID.fullmatch(blob):  # the usual case, in two scans
        return blob if not _FRAMING_LINE.search(blob) else _without_framing(blob)
    if not blob.endswith(b"\r\n"):
        return None
    kept = []
    for line in blob[:-2].split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if (not sep or not name or name.translate(None, _TCHAR)
                or b"\r" in value or b"\n" in value or b"\0" in value):
            return None
        if name.lower() not in _FRAMING:
            kept.append(line)
    return b"".join(line + b"\r\n" for line in kept)


def _without_framing(blob: bytes) -> bytes:
    lines = blob[:-2].split(b"\r\n")
    return b"".join(line + b"\r\n" for line in lines
                    if line.partition(b": ")[0].lower() not in _FRAMING)
