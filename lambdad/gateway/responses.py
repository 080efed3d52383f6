"""The sending side of one client connection: frames the answers, pure.

An answer is the gateway's own (`respond`: a complete error or 202) or a function's
(`start_response`, `send_body`, `end_response`, relayed as it streams in). Bytes are
queued, not written: `data_to_send` hands them to the server, so a head, body and end
that are ready together go out in one send (each send wakes the client up).
"""

from __future__ import annotations

import http
import re
from collections.abc import Callable

import h11

from lambdad.runtime.invocation import Headers

Reply = tuple[int, Headers, bytes]
# Events are immutable: one end-of-message serves every response (its __init__ validates
# an empty trailer list each time it is built).
_END = h11.EndOfMessage()


# h11's own rules for a header's name and value (h11/_abnf.py: token; field-value, whose
# characters exclude every whitespace but space and tab, so never a newline), applied to a
# whole head's names and values at once, each joined by newlines (and no newline of their
# own, counted): one regex call for the
# head instead of h11's two Python calls per header, which were most of framing a response.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_NAMES = re.compile(rb"(?:%s\n)*%s" % (_TOKEN, _TOKEN))
# field-value = [ vchar-or-obs-text+ *( [ \t]+ vchar-or-obs-text+ ) ], vchar-or-obs-text =
# [^\x00\s]: a value is bad where it has \x00, \r, \v or \f (a \n is counted), or begins
# or ends with a space or tab. Looking for those bytes is 5x quicker than a regex of the rule.
_BAD_VALUE_BYTES = b"\x00\r\x0b\x0c"


def valid_head(headers: Headers) -> bool:
    """Whether every name and value is one h11 would accept from us (then h11 is told the
    head is valid and skips its per-header checks; else it runs them and says what is
    wrong). Framing rules (Content-Length, Transfer-Encoding) h11 checks either way."""
    names: list[bytes] = []
    values: list[bytes] = []
    for name, value in headers:
        if type(name) is not bytes or type(value) is not bytes:
            return False  # str or bytearray: h11's own checks convert and decide
        names.append(name)
        values.append(value)
    if not names:
        return False
    joined_names, joined_values = b"\n".join(names), b"\n".join(values)
    newlines = len(names) - 1  # more, and a name or value had one of its own
    return (joined_names.count(b"\n") == newlines and joined_values.count(b"\n") == newlines
            and _NAMES.fullmatch(joined_names) is not None
            and len(joined_values.translate(None, _BAD_VALUE_BYTES)) == len(joined_values)
            and not _bad_edge(b"\n" + joined_values + b"\n"))


def _bad_edge(values: bytes) -> bool:
    """A value (between newlines) that begins or ends with a space or a tab."""
    return b"\n " in values or b" \n" in values or b"\n\t" in values or b"\t\n" in values


def response_event(status: int, headers: Headers) -> h11.Response:
    """An `h11.Response` of a status and headers, validated as h11 would (`valid_head`)."""
    if type(status) is int and valid_head(headers):
        return h11.Response(status_code=status, headers=headers, reason=reason(status),
                            _parsed=True)
    return h11.Response(status_code=status, headers=headers, reason=reason(status))


class Drop(Exception):
    """The connection can carry no (further) response: close it without one."""


class Responses:
    """Frames the responses of one `h11.Connection`, a request at a time."""

    def __init__(self, conn: h11.Connection, stopping: Callable[[], bool]) -> None:
        self._conn = conn
        self._stopping = stopping  # the gateway is stopping: every answer says close
        self._out = bytearray()  # framed bytes not yet handed out
        self.method = b""  # of the request answered; b"" before one: errors carry a body
        self.head_status: int | None = None  # of this request's response head, once framed
        self.status: int | None = None  # of this request's response, once complete

    def begin(self, method: bytes) -> None:
        """A new request (b"" between requests) and nothing framed for it yet."""
        self.method = method
        self.head_status = self.status = None

    @property
    def pending(self) -> bool:
        return bool(self._out)

    def respond(self, reply: Reply, *, version: int | None = None, close: bool = False) -> None:
        """Frames a response the gateway makes itself, if the connection still allows one."""
        status, headers, body = reply
        if version is not None:
            headers = [*headers, (b"lambda-version", str(version).encode())]
        if close or self._stopping():
            headers = [*headers, (b"connection", b"close")]
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            raise Drop("a response was already started")
        self._queue(response_event(status, headers))
        if self.method != b"HEAD":
            self._queue(h11.Data(data=body))
        self._queue(_END)
        self.status = status

    def start_response(self, status: int, headers: Headers) -> None:
        """Frames the head of a function's response; h11.LocalProtocolError (and nothing
        framed) when it cannot be relayed."""
        if self._stopping():
            headers = [*headers, (b"connection", b"close")]
        if not 200 <= status <= 599:
            raise h11.LocalProtocolError(f"status {status} cannot be relayed")
        self._queue(response_event(status, headers))

    def send_body(self, chunk: bytes) -> bool:
        """Frames a piece of the response body; False when nothing is to be sent for it
        (an empty chunk, or a response that has no body: HEAD, 204, 304)."""
        bodiless = self.method == b"HEAD" or self.head_status in (204, 304)
        if not chunk or bodiless:
            return False
        self._queue(h11.Data(data=chunk))
        return True

    def end_response(self) -> None:
        self._queue(_END)
        self.status = self.head_status

    def interim(self, status: int) -> None:
        """An informational response (100 Continue)."""
        self._queue(h11.InformationalResponse(status_code=status, headers=[]))

    def data_to_send(self) -> bytes:
        """The bytes framed so far, now the caller's to write."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def _queue(self, event: h11.Event) -> None:
        if type(event) is h11.Response:  # not isinstance: h11's events are ABCs (slow)
            self.head_status = event.status_code
        data = self._conn.send(event)
        if data:
            self._out += data


_REASONS = {int(status): status.phrase.encode() for status in http.HTTPStatus}


def reason(status: int) -> bytes:
    """The reason phrase of a status; b"" for one HTTP does not name."""
    return _REASONS.get(status, b"")
