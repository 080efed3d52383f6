"""HTTP/1.1 between lambdad and the supervisor: requests parsed from a buffer as bytes
arrive, responses built whole (pure, so the event loop never blocks on a slow peer).

Written on bytes rather than http.server/http.client: those pull in email.* and ssl, which
cost every cold start tens of milliseconds before the socket opens.
"""

from __future__ import annotations

import os
import socket
import struct

from . import events

DEFAULT_TIMEOUT_MS = 900_000  # AWS's maximum, used only when the daemon sent no deadline
MAX_HEAD = 64 * 1024  # request line + headers
MAX_BODY = 16 * 1024 * 1024
MAX_CHUNK_LINE = 4096
INIT_PATH = "/init"  # a stem cell's specialization request
KINDS = ("http", "direct", "event")
_PEERCRED = struct.Struct("3i")
# RFC 9110 token characters: what a method or a header name may consist of.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEX = b"0123456789abcdefABCDEF"
_REASONS = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Requested Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a Teapot", 421: "Misdirected Request",
    422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # fmt: skip


class BadRequest(Exception):
    """The request cannot be framed; answered with `status`, then the connection closes."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def from_outside(sock: socket.socket) -> bool:
    """Whether the peer is outside this PID namespace (lambdad): the kernel reports pid 0
    for a process it cannot name here, and every process of the container has a pid."""
    pid, _, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid == 0


def random_request_id() -> str:
    """A random (version 4) UUID string, without importing uuid."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Request:
    __slots__ = ("close", "headers", "http10", "method", "target", "values")

    def __init__(self, method: str, target: str, http10: bool, headers: events.Headers) -> None:
        self.method = method
        self.target = target
        self.http10 = http10
        self.headers = headers  # as received: order, case and repeats kept
        self.values: dict[str, str] = {}  # lower-cased name -> first value
        for name, value in headers:
            self.values.setdefault(name.lower(), value)
        tokens = {t.strip().lower() for t in self.get("Connection").split(",")}
        # HTTP/1.1 keeps the connection by default; HTTP/1.0 only when asked to.
        self.close = "close" in tokens or (http10 and "keep-alive" not in tokens)

    def get(self, name: str) -> str:
        return self.values.get(name.lower(), "")


def stray_crs(head: bytes) -> bool:
    """Whether a CR ends no line (the last may end in one): in C, not a loop over lines."""
    return head.count(b"\r") - head.count(b"\r\n") > (1 if head.endswith(b"\r") else 0)


def parse_head(head: bytes) -> Request:
    """Parses `METHOD SP target SP HTTP/1.x` and `Name: value` lines (CRLF or bare LF)."""
    lines = head.split(b"\n")
    if b"\0" in head or stray_crs(head):
        raise BadRequest("stray CR or NUL in request head")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, version = parts
    if not method or method.translate(None, _TCHAR):
        raise BadRequest("malformed method")
    if not target or any(c <= 0x20 or c == 0x7F for c in target):
        raise BadRequest("malformed request target")
    if not (
        len(version) == 8
        and version.startswith(b"HTTP/")
        and version[5:6].isdigit()
        and version[6:7] == b"."
        and version[7:8].isdigit()
    ):
        raise BadRequest("malformed HTTP version")
    if version[5:6] != b"1":
        raise BadRequest("HTTP version not supported", 400 if version[5] < 0x31 else 505)
    headers: events.Headers = []
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR):
            # Also rejects obsolete line folding and whitespace before the colon (RFC 9112 5).
            raise BadRequest("malformed header line")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return Request(
        method.decode("ascii"), target.decode("latin-1"), version == b"HTTP/1.0", headers
    )


def _all_values(request: Request, name: str) -> list[str]:
    return [v for n, v in request.headers if n.lower() == name]


def _body_framing(request: Request) -> int | None:
    """Content-Length, or None for a chunked body."""
    codings = [
        c.strip().lower()
        for v in _all_values(request, "transfer-encoding")
        for c in v.split(",")
        if c.strip()
    ]
    if codings:
        if codings[-1] != "chunked":
            raise BadRequest("Transfer-Encoding must end with chunked")
        return None  # overrides any Content-Length (RFC 9112 6.3)
    lengths = {v.strip() for v in _all_values(request, "content-length")}
    if not lengths:
        return 0
    if len(lengths) != 1:
        raise BadRequest("conflicting Content-Length headers")
    (length,) = lengths
    if not length.isascii() or not length.isdigit():
        raise BadRequest(f"invalid Content-Length {length!r}")
    n = int(length)
    if n > MAX_BODY:
        raise BadRequest("request body too large", 413)
    return n


def _line(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """The line at `pos` without its CRLF (or bare LF), and where the next begins."""
    nl = buf.find(b"\n", pos, pos + MAX_CHUNK_LINE)
    if nl < 0:
        if len(buf) - pos >= MAX_CHUNK_LINE:
            raise BadRequest("chunk line too long")
        return None
    line = bytes(buf[pos:nl])
    return (line[:-1] if line.endswith(b"\r") else line), nl + 1


def _chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """(body, end) of a complete chunked body from `pos`, or None for more bytes."""
    body = bytearray()
    while True:
        found = _line(buf, pos)
        if found is None:
            return None
        line, pos = found
        size_field = line.split(b";", 1)[0].strip(b" \t")
        if not size_field or size_field.translate(None, _HEX):
            raise BadRequest("malformed chunk size")
        size = int(size_field, 16)
        if size == 0:
            break
        if len(body) + size > MAX_BODY:
            raise BadRequest("request body too large", 413)
        if len(buf) < pos + size:
            return None
        body += buf[pos:pos + size]
        found = _line(buf, pos + size)
        if found is None:
            return None
        if found[0].strip():
            raise BadRequest("malformed chunk")
        pos = found[1]
    trailers = 0
    while True:  # trailers are discarded
        found = _line(buf, pos)
        if found is None:
            return None
        line, pos = found
        if not line.strip():
            return bytes(body), pos
        trailers += len(line)
        if trailers > MAX_HEAD:
            raise BadRequest("trailers too large", 431)


def take_request(buf: bytearray) -> tuple[Request, bytes | None] | None:
    """The next request in `buf`: None while its head is incomplete; (request, None) while
    its body is; (request, body) once complete, its bytes then removed from `buf`."""
    # RFC 9112 2.2: empty lines before the request line are ignored.
    while buf[:1] == b"\n" or buf[:2] == b"\r\n":
        del buf[: 1 if buf[0] == 0x0A else 2]
    ends = [buf.find(b"\n\r\n", 0, MAX_HEAD + 3), buf.find(b"\n\n", 0, MAX_HEAD + 2)]
    found = [e + (3 if i == 0 else 2) for i, e in enumerate(ends) if e >= 0]
    if not found:
        if len(buf) <= MAX_HEAD:
            return None
        if buf.find(b"\n", 0, MAX_HEAD) < 0:
            raise BadRequest("request line too long", 414)
        raise BadRequest("request header block too large", 431)
    end = min(found)
    if end > MAX_HEAD:
        raise BadRequest("request header block too large", 431)
    request = parse_head(bytes(buf[:end]))
    length = _body_framing(request)
    if length is None:
        chunked = _chunked(buf, end)
        if chunked is None:
            return request, None
        body, consumed = chunked
    else:
        if len(buf) - end < length:
            return request, None
        body, consumed = bytes(buf[end:end + length]), end + length
    del buf[:consumed]
    return request, body


def reason(status: int) -> str:
    return _REASONS.get(status, "")


def response(status: int, headers: bytes, body: bytes, *, head_only: bool, close: bool,
             http10: bool) -> bytes:
    """`headers`: validated `Name: value\\r\\n` lines, without framing headers."""
    lines = [f"HTTP/1.1 {status} {reason(status)}\r\n".encode(), headers]
    if status != 204:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        lines.append(b"Connection: close\r\n")
    elif http10:
        lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    if not (head_only or status in (204, 304)):
        lines.append(body)
    return b"".join(lines)
