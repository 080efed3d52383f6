"""The instance hop's HTTP/1.1 as pure code: a request encoded in one join, and a
response read by llhttp (httptools) with the checks a reverse proxy needs on top.

No I/O here: `ResponseReader` takes bytes and says what they were (head, body chunks,
complete, broken, stray), so every hostile answer can be tried in memory. The function
is the attacker: anything llhttp or these checks refuse breaks the exchange, and any
byte past the end of a response makes the connection unfit for another request.
"""

from __future__ import annotations

import re

import httptools

from lambdad.runtime.invocation import Headers

HEAD_LIMIT = 64 * 1024  # a response head (status line and headers) larger than this is refused
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_END = b"\r\n\r\n"
# Reason phrase: HTAB, SP, VCHAR, obs-text (RFC 9112); llhttp lets control bytes through.
_BAD_REASON = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
# The standard runtime's word to lambdad, first in a response's head (its supervisor drops a
# function's own copies, and never sends these on every response): how many workers the
# instance's memory holds, and that a request timed out waiting for one (it never ran).
WORKERS = b"lambda-workers"
WAIT_TIMEOUT = b"lambda-wait-timeout"
RUNTIME_PREFIX = b"lambda-"
_MAX_DIGITS = 9


def encode_request(method: bytes, target: bytes, headers: Headers, lambda_headers: bytes,
                   body: bytes, default_host: bytes) -> bytes:
    """The whole request as bytes. `headers` are end-to-end headers already validated
    (h11 parsed the client's; the gateway dropped framing headers), so nothing is
    checked again; `lambda_headers` are lambdad's own, encoded lines. The body is
    complete, so the request is Content-Length framed."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    has_host = False
    for name, value in headers:
        if not has_host and len(name) == 4 and name.lower() == b"host":
            has_host = True
        parts.append(name + b": " + value + b"\r\n")
    if not has_host:
        parts.append(b"host: " + default_host + b"\r\n")
    parts.append(lambda_headers)
    if body or method in _BODY_METHODS:
        parts.append(b"content-length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


class _Stop(Exception):
    """Raised inside a parser callback to stop llhttp where it is."""


class ResponseReader:
    """One connection's response side: feed it bytes, read what they were.

    Call `start` before each request. Afterwards, `head_done` says the final response's
    head arrived (`status`, `headers`), `body` holds the chunks not yet taken,
    `complete` says the response ended, `error` says why the exchange is broken, and
    `stray` says bytes arrived past the response (the connection must not carry another
    request). 1xx interim responses are skipped; 101 breaks the exchange, since the
    hop never asks to switch protocols.
    """

    __slots__ = (
        "_fields",
        "_framed",
        "_head_bytes",
        "_head_only",
        "_interim",
        "_no_interim",
        "_overhead",
        "_parser",
        "body",
        "buffered",
        "complete",
        "error",
        "head_done",
        "headers",
        "keep_alive",
        "status",
        "stray",
    )

    def __init__(self) -> None:
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._head_bytes = 0  # bytes read while the head was incomplete
        self._fields = 0  # bytes of the head's fields
        # Bytes read after the head that were not body, since the last chunk ended: a chunk's
        # size line and extensions, or the trailers. httptools joins a header's pieces in
        # Python (trailers too): a never-ending trailer was quadratic CPU and memory.
        self._overhead = 0
        self._interim = False
        self._framed = False  # Content-Length or chunked: the end is known without a close
        self._no_interim = True  # no 1xx came before this request's final response
        self.status = 0
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.buffered = 0  # bytes in `body`
        self.head_done = False
        self.complete = False
        self.error: str | None = None
        self.stray = False
        self.keep_alive = False

    def start(self, head_only: bool) -> None:
        """Readies the reader for the response to a new request (HEAD: `head_only`)."""
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._head_bytes = self._fields = self._overhead = 0
        self._interim = self._framed = False
        self._no_interim = True
        self.status = 0
        self.headers = []
        self.body = []
        self.buffered = 0
        self.head_done = self.complete = self.keep_alive = False
        self.error = None

    @property
    def reusable(self) -> bool:
        """The response ended cleanly, nothing followed it, and the instance keeps the
        connection open (HTTP/1.1 without `Connection: close`)."""
        return self.complete and self.keep_alive and not self.stray and self.error is None

    def take_body(self) -> bytes:
        """The body chunks received so far, as one bytes."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        self.buffered = 0
        return data

    def feed(self, data: bytes) -> None:
        """Bytes from the instance. Never raises: the outcome is in the attributes."""
        if self.complete or self.error is not None:
            self.stray = True  # nothing was asked: past the response, or after a failure
            return
        parser = self._parser
        assert parser is not None, "start() before feed()"
        if not self.head_done:
            self._head_bytes += len(data)
        else:
            self._overhead += len(data)
        try:
            parser.feed_data(data)
        except _Stop:
            pass
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                self._fail(str(exc.__context__ or exc))
        except httptools.HttpParserUpgrade:
            self._fail("the instance switched protocols")
        except httptools.HttpParserError as exc:
            if self.complete:
                self.stray = True  # garbage after a complete response
            else:
                self._fail(f"invalid response: {exc}")
        if self.complete:
            if self._head_only:
                # llhttp was stopped at the head; reusable only if the head was all
                # this read held (its end came last, and no interim head came before).
                self.stray = self.stray or not self._no_interim or not (
                    data.endswith(_END) and data.count(_END) == 1)
                self._parser = None  # stopped mid-stream: a new one for the next request
        elif self.error is None:
            if not self.head_done:
                if self._head_bytes > HEAD_LIMIT:
                    self._fail(f"response head larger than {HEAD_LIMIT} bytes")
            elif self._overhead > HEAD_LIMIT:
                self._fail(f"chunk framing or trailers larger than {HEAD_LIMIT} bytes")

    def eof(self) -> None:
        """The instance closed its side: the end of a body framed by the close, else
        a failure if a response was under way."""
        if self.complete or self.error is not None:
            return
        if self.head_done and not self._framed:
            self.complete = True
            self.keep_alive = False
        else:
            self._fail("the instance closed the connection mid-response")

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self._parser = None

    # llhttp callbacks (httptools calls them during feed_data)

    def on_message_begin(self) -> None:
        if self.complete:
            self.stray = True  # a second response to one request
            raise _Stop

    def on_status(self, reason: bytes) -> None:
        if _BAD_REASON.search(reason):
            raise ValueError("control character in the status line")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # trailers of a chunked body: not relayed
        self._fields += len(name) + len(value) + 4  # as on the wire: ": " and CRLF
        if self._fields > HEAD_LIMIT:
            raise ValueError(f"response head larger than {HEAD_LIMIT} bytes")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status == 101:
            raise ValueError("the instance switched protocols unasked (101)")
        if 100 <= status < 200:
            self._interim = True
            self._no_interim = False  # see feed(): a HEAD's end is found by count
            self.headers = []
            self._head_bytes = self._fields = 0
            return
        if not 200 <= status <= 999:
            raise ValueError(f"invalid status code {status}")
        self._framed = check_framing(self.headers)
        self.status = status
        self.head_done = True
        if self._head_only:
            self.complete = True
            self.keep_alive = self._parser.should_keep_alive()
            raise _Stop
        if status in (204, 304):
            self._framed = True  # no body, whatever the headers say

    def on_body(self, data: bytes) -> None:
        self.body.append(data)
        self.buffered += len(data)
        if self._overhead:
            self._overhead = max(0, self._overhead - len(data))

    def on_chunk_complete(self) -> None:
        self._overhead = 0

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        assert self._parser is not None
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()


def check_framing(headers: Headers) -> bool:
    """Whether a final response's end is known without a close (Content-Length or
    chunked). llhttp already refuses two Content-Lengths, Content-Length beside
    Transfer-Encoding, and a length that is not a number; refused here, as h11 did:
    any Transfer-Encoding but chunked, or several."""
    framed = False
    encodings = 0
    for name, value in headers:
        if name == b"content-length":
            framed = True
        elif name == b"transfer-encoding":
            encodings += 1
            if encodings > 1 or value.strip().lower() != b"chunked":
                raise ValueError("only Transfer-Encoding: chunked is supported")
            framed = True
    return framed


def parse_workers(value: bytes) -> int | None:
    """A `Lambda-Workers` figure: decimal digits (below 1 means 1); None if not a number."""
    value = value.strip()
    if not value.isdigit() or len(value) > _MAX_DIGITS:
        return None
    return max(1, int(value))


def runtime_control(headers: Headers) -> tuple[int | None, bool, Headers]:
    """The runtime's control headers taken off a response: (the workers its memory holds,
    None if not said; whether the request timed out waiting for a worker; the function's
    headers). Only in the runtime's shape, first in the head: `lambda-workers`, then
    perhaps `lambda-wait-timeout` (the supervisor drops a function's own copies; any
    further down never count, and the gateway does not relay them)."""
    if not headers or headers[0][0] != WORKERS:
        return None, False, headers
    waited_out = len(headers) > 1 and headers[1][0] == WAIT_TIMEOUT
    return parse_workers(headers[0][1]), waited_out, headers[2 if waited_out else 1:]
