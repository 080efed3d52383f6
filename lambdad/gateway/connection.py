"""One client connection's rules, without I/O: bytes and events in, actions out.

The gateway's server owns sockets, timers and tasks; this machine owns what it does with
them. It is fed what the client sent (`receive`, with b"" for the client's end of the
stream) and that a read deadline passed (`timed_out`), and `next_action` says what to do
next: send bytes, read by a deadline, hand a request over (`Invoke` or `Enqueue`),
linger on a refused upload, or close. While a request is handed over the server frames the
answer through `answer` (`responses.Responses`), whose bytes the next `Send` carries.

The rules, in the order a request meets them: a head within `header_timeout` (an idle
keep-alive connection waits `keepalive_timeout` for its next one and closes quietly);
everything the head alone decides (one Host, the head size, not both Content-Length and
Transfer-Encoding, no CONNECT, the declared size, a route, events not pinned, admission,
the body budget) before a `100 Continue` is sent or a body byte is read; then the whole
body within one deadline (`body_timeout`), each byte covered by the body budget first;
admission again with no await before the hand-over. A refusal on the head keeps the
connection only when there is no body to skip; any other refusal closes it after a linger
so the client reads the answer instead of a reset. Like h11, which it drives, it is tested
in memory (tests/unit/test_gateway_connection.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

import h11

from lambdad import errors
from lambdad.gateway.budget import BodyBudget, Hold
from lambdad.gateway.headers import forward_request_headers
from lambdad.gateway.refusals import (
    Refusal,
    Target,
    check_head,
    malformed,
    overloaded,
    too_large,
    too_slow,
)
from lambdad.gateway.responses import Reply, Responses
from lambdad.httpstatus import error_response
from lambdad.requestid import new_request_id
from lambdad.runtime.invocation import Headers, InvocationRequest

log = logging.getLogger("lambdad.gateway")

# (function, pinned version or None, request headers) -> the headers the request goes on
# with (credentials taken out), else the error to answer with; decided on the head alone
# (the function and version exist, auth = "key"); the headers given are not changed.
Admit = Callable[[str, int | None, Headers], Headers | errors.LambdaError]

LINGER = 2.0  # seconds spent discarding a rejected upload before closing on it


@dataclass(frozen=True)
class Limits:
    """What one connection may do; the gateway's settings, taken when it is accepted."""

    domain: str
    max_body_bytes: int
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float


@dataclass(slots=True)
class Send:
    """Write these bytes (and wait until the client takes them)."""

    data: bytes


@dataclass(slots=True)
class Read:
    """Read what the client sends, then `receive` it; `timed_out` if nothing by `deadline`."""

    deadline: float


@dataclass(slots=True)
class Invoke:
    """Invoke the function and answer; `share` is the body's part of the budget, given back
    as soon as the instance has the body. The machine keeps no reference to the body."""

    invocation: InvocationRequest
    share: Hold


@dataclass(frozen=True)
class Enqueue:
    """Store an event (`Lambda-Invocation-Type: Event`) and answer 202 with its id."""

    function: str
    body: bytes
    request_id: str
    share: Hold


@dataclass(frozen=True)
class Linger:
    """Half-close our side and discard what the client still sends, for up to `seconds`."""

    seconds: float


@dataclass(frozen=True)
class Close:
    """Close the connection."""


Action = Send | Read | Invoke | Enqueue | Linger | Close


class _Phase(Enum):
    HEAD = auto()  # waiting for a request head
    BODY = auto()  # reading an admitted request's body
    HANDED_OVER = auto()  # the server is answering the request
    CLOSING = auto()  # nothing more is read: flush, maybe linger, close


class ClientConnection:
    """One client connection's request/response cycles over one `h11.Connection`."""

    def __init__(
        self,
        limits: Limits,
        bodies: BodyBudget,
        *,
        peer: str = "unknown",
        admit: Admit | None = None,
        events: bool = False,
        stopping: Callable[[], bool] = lambda: False,
        new_id: Callable[[], str] = new_request_id,
    ) -> None:
        self.limits = limits
        self.peer = peer
        self._bodies = bodies
        self._admit: Admit = admit or (lambda function, version, headers: headers)
        self._events = events  # whether `Lambda-Invocation-Type: Event` is queued
        self._stopping = stopping
        self._new_id = new_id
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.answer = Responses(self._conn, stopping)  # what the server frames answers with
        self._phase = _Phase.HEAD
        self._linger = False  # after the last bytes, linger before closing
        self._first = True  # the connection's first request: no keep-alive wait
        self._deadline: float | None = None  # of the head or of the whole body
        self._started_head = False  # some bytes of the next head arrived
        # h11 may have something to say: bytes or the end came since it last said NEED_DATA
        # (else asking it is a wasted call, once per request on a kept-alive connection)
        self._unread = False
        self.request: h11.Request | None = None  # between a head and the end of its cycle
        self.request_id = ""
        self.started = 0.0  # when the current request's head arrived
        self._target: Target | None = None  # where the request being read goes
        # What admission said on the head, while no Read or Send has been asked for since:
        # with no await in between nothing it looks at can have changed, so the hand-over
        # reuses it.
        self._admitted: Headers | None = None
        self._share: Hold | None = None  # the current body's part of the budget
        self._body = bytearray()

    @property
    def busy(self) -> bool:
        """Between a request's head and the end of its response."""
        return self.request is not None

    # --- events in ---------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """What the client sent; b"" when it ended (or half-closed) its stream."""
        self._conn.receive_data(data)
        self._unread = True
        if self._phase is _Phase.HEAD:
            if data and not self._started_head and not self._first:
                self._deadline = now + self.limits.header_timeout
            self._started_head = self._started_head or bool(data)

    def timed_out(self, now: float) -> None:
        """The deadline of the last `Read` passed with nothing from the client."""
        if self._phase is _Phase.HEAD:
            if not self._started_head:
                self._close()  # idle: close quietly
                return
            log.debug("%s: request head not received in time", self.peer)
            self.answer.respond(too_slow(None), close=True)
        elif self._phase is _Phase.BODY:
            self._give_back()
            self.answer.respond(too_slow(self.request_id), close=True)
        self._close()

    def finish(self, now: float) -> None:
        """The connection is over, whichever way: give back a body's share, log its request."""
        self._give_back()
        self._end_request(now)
        self._phase = _Phase.CLOSING

    # --- actions out -------------------------------------------------------------------

    def next_action(self, now: float) -> Action:
        while True:
            if self.answer.pending:
                self._admitted = None  # a Send awaits too (a 100 Continue to a slow reader)
                return Send(self.answer.data_to_send())
            if self._phase is _Phase.CLOSING:
                if self._linger:
                    self._linger = False
                    return Linger(LINGER)
                self._end_request(now)
                return Close()
            if self._phase is _Phase.HANDED_OVER:
                self._next_cycle(now)
                continue
            action = self._head(now) if self._phase is _Phase.HEAD else self._read_body(now)
            if action is not None:
                return action

    def _head(self, now: float) -> Action | None:
        if self._unread:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                log.debug("%s: malformed request head: %s", self.peer, exc)
                self._reject(malformed(exc, None))
                return None
            if type(event) is h11.Request:  # h11's events are ABCs: isinstance is slow
                self._begin(event, now)
                return None
            if event is not h11.NEED_DATA:
                self._close()  # ConnectionClosed: the client left
                return None
            self._unread = False
        if self._deadline is None:
            idle = self.limits.keepalive_timeout
            if self._first or self._started_head:
                idle = self.limits.header_timeout
            self._deadline = now + idle
        return Read(self._deadline)

    def _next_cycle(self, now: float) -> None:
        """After a response: the next request on this connection, or the end of it."""
        self._end_request(now)
        if self._stopping() or not (
            self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE
        ):
            self._close()
            return
        self._conn.start_next_cycle()
        self._phase = _Phase.HEAD
        self._first = False
        self._deadline = None
        unread, closed = self._conn.trailing_data
        self._started_head = bool(unread)
        self._unread = bool(unread) or closed
        self.answer.begin(b"")

    def _begin(self, request: h11.Request, now: float) -> None:
        self.request = request
        self.request_id = self._new_id()
        self._admitted = None
        self.answer.begin(request.method)
        self.started = now
        self._phase = _Phase.HANDED_OVER  # a refusal below ends the cycle like an answer
        self._check_head(request, self.request_id)

    def _check_head(self, request: h11.Request, request_id: str) -> None:
        """Everything the head decides, decided before a 100 Continue or a body byte."""
        limits = self.limits
        decided = check_head(request, request_id, domain=limits.domain,
                             max_header_bytes=limits.max_header_bytes,
                             max_body_bytes=limits.max_body_bytes, events=self._events)
        if isinstance(decided, Refusal):
            if decided.close:
                self._reject(decided.reply, version=decided.version)
            else:
                self._refuse(decided.reply, version=decided.version)
            return
        admitted = self._admit(decided.function, decided.version, list(request.headers))
        self._admitted = None if isinstance(admitted, errors.LambdaError) else admitted
        if isinstance(admitted, errors.LambdaError):
            self._refuse(error_response(admitted, request_id), version=decided.version)
            return
        share = self._bodies.hold()
        if decided.length is not None and not share.cover(decided.length):
            self._refuse(error_response(overloaded(), request_id), version=decided.version)
            return
        self._share = share
        self._target = decided
        self._phase = _Phase.BODY
        self._deadline = None
        if self._conn.they_are_waiting_for_100_continue:
            self.answer.interim(100)

    def _read_body(self, now: float) -> Action | None:
        """The whole body within one deadline (`body_timeout`), whatever the pace: a client
        trickling a byte now and then cannot hold the connection for longer. Every byte is
        covered by the share before it is kept (Overloaded when the daemon-wide budget is
        spent: a chunked body declares no size up front); a body that is not read to its
        end gives its share back at once, before any answer."""
        assert self._share is not None and self._target is not None
        if self._deadline is None:
            self._deadline = now + self.limits.body_timeout
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._give_back()
            self._reject(malformed(exc, self.request_id))
            return None
        if event is h11.NEED_DATA:
            self._admitted = None  # an await comes: admission is asked again at the end
            return Read(read_deadline(now, self._deadline, self.limits.header_timeout))
        if type(event) is h11.Data:
            size = len(self._body) + len(event.data)
            refusal: errors.LambdaError | None = None
            if size > self.limits.max_body_bytes:
                refusal = too_large(self.limits.max_body_bytes)
            elif not self._share.cover(size):
                refusal = overloaded()
            if refusal is not None:
                version = self._target.version
                self._give_back()
                self._reject(error_response(refusal, self.request_id), version=version)
                return None
            self._body += event.data
            return None
        if type(event) is not h11.EndOfMessage:
            self._give_back()  # ConnectionClosed: the client left mid-request
            self._close()
            return None
        return self._hand_over()

    def _hand_over(self) -> Action | None:
        """Admits again, with no await before the invocation picks its version: a deploy
        during the upload may have changed which version serves an unpinned request. A
        request read whole with its head (no Read in between, so no await since the head's
        admission) goes on with that admission's answer: nothing could have changed it."""
        assert self._share is not None and self._target is not None
        assert self.request is not None
        request, share, target = self.request, self._share, self._target
        function, version = target.function, target.version
        body = bytes(self._body) if self._body else b""
        self._body = bytearray()
        self._share = self._target = None
        self._phase = _Phase.HANDED_OVER
        admitted: Headers | errors.LambdaError | None = self._admitted
        self._admitted = None
        if admitted is None:
            admitted = self._admit(function, version, list(request.headers))
        if isinstance(admitted, errors.LambdaError):
            share.release()
            self.answer.respond(error_response(admitted, self.request_id), version=version)
            return None
        if target.event:
            return Enqueue(function, body, self.request_id, share)
        return Invoke(InvocationRequest(
            function=function,
            method=request.method,
            target=request.target,
            headers=forward_request_headers(admitted, self.peer),
            body=body,
            invocation_type="http",
            request_id=self.request_id,
            version=version,
            received_at=self.started,
        ), share)

    # --- inside ------------------------------------------------------------------------

    def _refuse(self, reply: Reply, *, version: int | None = None) -> None:
        """Answers a request refused on its head, with no 100 Continue and without reading
        its body: the connection is kept only when there is no body to skip."""
        try:
            empty = isinstance(self._conn.next_event(), h11.EndOfMessage)
        except h11.RemoteProtocolError:
            empty = False
        if empty:
            self.answer.respond(reply, version=version)
        else:
            self._reject(reply, version=version)

    def _reject(self, reply: Reply, *, version: int | None = None) -> None:
        """Answers without reading the request, then closes; lingering first so the
        client reads the answer instead of a reset caused by its unread upload."""
        self.answer.respond(reply, version=version, close=True)
        self._close()
        self._linger = True

    def _close(self) -> None:
        self._phase = _Phase.CLOSING

    def _give_back(self) -> None:
        if self._share is not None:
            self._share.release()
            self._share = None
        self._body = bytearray()
        self._target = None
        self._admitted = None

    def _end_request(self, now: float) -> None:
        request, self.request = self.request, None
        if request is not None:
            _log_request(self.peer, request, self.answer.status, now - self.started,
                         self.request_id)


def _log_request(peer: str, request: h11.Request, status: int | None, seconds: float,
                 request_id: str) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return  # the arguments below cost more than the check (a line per request)
    log.debug("%s %s %s -> %s in %.1f ms (request %s)", peer,
              request.method.decode("latin-1"), request.target[:200].decode("latin-1"),
              "dropped" if status is None else status, seconds * 1000, request_id)


def read_deadline(now: float, body_deadline: float, idle: float) -> float:
    """When the next body read gives up: `idle` seconds of silence, but never past the
    deadline of the whole body (a fresh timeout per read let a trickle last forever)."""
    return min(now + idle, body_deadline)
