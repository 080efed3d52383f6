"""The per-connection rules (lambdad/gateway/connection.py), in memory: bytes and timeouts
go in, the actions that come out are checked, the way h11 tests its state machine. No
socket, no loop, no clock: `now` is a number the test picks."""

from __future__ import annotations

import itertools

from lambdad import errors
from lambdad.gateway.budget import BodyBudget
from lambdad.gateway.connection import (
    Action,
    ClientConnection,
    Close,
    Enqueue,
    Invoke,
    Limits,
    Linger,
    Read,
    Send,
)
from lambdad.gateway.responses import Drop
from lambdad.runtime.invocation import Headers
from tests.unit.test_gateway_server import Reply, parse

LIMITS = Limits(domain="localhost", max_body_bytes=100, max_header_bytes=4096,
                header_timeout=10.0, body_timeout=60.0, keepalive_timeout=75.0)
Admitted = Headers | errors.LambdaError


class Rules:
    """A machine and what it asked for: every Send's bytes, every admission."""

    def __init__(self, *, admit: list[Admitted | None] | None = None, budget: int = 1 << 20,
                 events: bool = False) -> None:
        self.admitted: list[tuple[str, int | None, Headers]] = []
        self.answers = admit
        self.stopping = False
        self.bodies = BodyBudget(budget)
        ids = itertools.count(1)
        self.m = ClientConnection(
            LIMITS, self.bodies, peer="203.0.113.9",
            admit=self._admit if admit is not None else None, events=events,
            stopping=lambda: self.stopping, new_id=lambda: f"req-{next(ids)}")

    def _admit(self, function: str, version: int | None, headers: Headers) -> Admitted:
        self.admitted.append((function, version, list(headers)))
        assert self.answers, "admission asked more often than the test expected"
        answer = self.answers.pop(0)
        return headers if answer is None else answer

    def until_blocked(self, now: float = 0.0) -> tuple[bytes, list[Action]]:
        """Runs the machine until it waits for the client, the function or the end:
        (bytes sent meanwhile, every action in order)."""
        sent, actions = b"", []
        while True:
            action = self.m.next_action(now)
            actions.append(action)
            if isinstance(action, Send):
                sent += action.data
            elif not isinstance(action, Linger):
                return sent, actions

    def answer(self, status: int = 200, body: bytes = b"ok") -> None:
        """What client.py does with a function's response."""
        self.m.answer.start_response(status, [(b"content-length", str(len(body)).encode())])
        self.m.answer.send_body(body)
        self.m.answer.end_response()


def request(method: str = "GET", target: str = "/", *, host: str = "echo.localhost",
            version: str = "1.1", body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", f"Host: {host}"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def kinds(actions: list[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


def last_read(actions: list[Action]) -> Read:
    assert isinstance(actions[-1], Read), actions
    return actions[-1]


def invoked(actions: list[Action]) -> Invoke:
    assert isinstance(actions[-1], Invoke), actions
    return actions[-1]


def replies(data: bytes) -> list[Reply]:
    out = []
    while data:
        reply = parse(data)
        out.append(reply)
        data = reply.rest
    return out


# --- keep-alive and pipelining -------------------------------------------------------------


def test_first_read_waits_for_a_head_within_the_header_timeout() -> None:
    r = Rules()
    sent, actions = r.until_blocked(now=5.0)
    assert sent == b"" and actions == [Read(deadline=15.0)]


def test_pipelined_requests_are_handed_over_one_at_a_time_in_order() -> None:
    r = Rules()
    r.until_blocked()
    r.m.receive(request(target="/a") + request(target="/b"), 1.0)
    _, actions = r.until_blocked(now=1.0)
    first = invoked(actions)
    assert first.invocation.target == b"/a" and first.invocation.request_id == "req-1"
    assert r.m.busy
    r.answer(body=b"A")
    sent, actions = r.until_blocked(now=2.0)
    second = invoked(actions)  # no read in between: the second head was already here
    assert kinds(actions) == ["Send", "Invoke"] and second.invocation.target == b"/b"
    r.answer(body=b"B")
    more, actions = r.until_blocked(now=3.0)
    assert [(x.status, x.body) for x in replies(sent + more)] == [(200, b"A"), (200, b"B")]
    assert last_read(actions).deadline == 3.0 + LIMITS.keepalive_timeout
    assert not r.m.busy


def test_an_idle_keep_alive_connection_gets_the_header_timeout_once_a_head_starts() -> None:
    r = Rules()
    r.until_blocked()
    r.m.receive(request(), 0.0)
    r.until_blocked()
    r.answer()
    _, actions = r.until_blocked(now=10.0)
    assert last_read(actions).deadline == 85.0  # idle: the keep-alive timeout
    r.m.receive(b"GET / HT", 50.0)  # a head starts: it has header_timeout from now
    _, actions = r.until_blocked(now=50.0)
    assert last_read(actions).deadline == 60.0
    r.m.receive(b"TP/1.1\r\n", 55.0)  # more of the same head buys no more time
    _, actions = r.until_blocked(now=55.0)
    assert last_read(actions).deadline == 60.0


def test_connection_close_ends_the_connection_after_the_answer() -> None:
    r = Rules()
    r.m.receive(request(Connection="close"), 0.0)
    r.until_blocked()
    r.answer()
    sent, actions = r.until_blocked()
    assert kinds(actions) == ["Send", "Close"]
    assert parse(sent).get("connection") == "close"


def test_http_1_0_is_answered_once_and_closed_and_is_not_chunked() -> None:
    r = Rules()
    r.m.receive(request(version="1.0"), 0.0)
    _, actions = r.until_blocked()
    invoked(actions)
    r.m.answer.start_response(200, [])  # a streamed body: no Content-Length
    assert r.m.answer.send_body(b"part")
    r.m.answer.end_response()
    sent, actions = r.until_blocked()
    assert kinds(actions) == ["Send", "Close"]
    assert sent.startswith(b"HTTP/1.1 200 ") and sent.endswith(b"\r\n\r\npart")
    assert b"chunked" not in sent.lower()


def test_a_stopping_gateway_answers_with_close_and_closes() -> None:
    r = Rules()
    r.m.receive(request() + request(), 0.0)
    r.until_blocked()
    r.stopping = True
    r.answer()
    sent, actions = r.until_blocked()
    assert kinds(actions) == ["Send", "Close"]  # the pipelined second request is not served
    assert parse(sent).get("connection") == "close"


def test_a_gateway_that_starts_stopping_mid_answer_still_closes_after_it() -> None:
    r = Rules()
    r.m.receive(request() + request(), 0.0)
    r.until_blocked()
    r.answer()  # framed while the gateway still ran: keep-alive as far as the client knows
    r.stopping = True
    sent, actions = r.until_blocked()
    assert parse(sent).get("connection") is None
    assert kinds(actions) == ["Send", "Close"]


# --- 100-continue, admission, body caps ----------------------------------------------------


def test_100_continue_is_sent_once_admitted_and_the_body_then_read() -> None:
    r = Rules(admit=[None, None])
    r.m.receive(request("POST", Content_Length="4", Expect="100-continue"), 0.0)
    sent, actions = r.until_blocked()
    assert sent.startswith(b"HTTP/1.1 100 ") and sent.endswith(b"\r\n\r\n")
    assert kinds(actions) == ["Send", "Read"] and len(r.admitted) == 1
    r.m.receive(b"data", 1.0)
    _, actions = r.until_blocked(now=1.0)
    invocation = invoked(actions).invocation
    assert invocation.body == b"data" and len(r.admitted) == 2  # asked again, after the body
    assert b"expect" not in [name for name, _ in invocation.headers]


def test_100_continue_refused_sends_no_100_and_reads_no_body() -> None:
    r = Rules(admit=[errors.Unauthenticated("function 'echo' needs an API key")])
    r.m.receive(request("POST", Content_Length="4", Expect="100-continue"), 0.0)
    sent, actions = r.until_blocked()
    assert kinds(actions) == ["Send", "Linger", "Close"]  # never a Read: the body stays unread
    assert b"HTTP/1.1 100" not in sent
    reply = parse(sent)
    assert reply.status == 401 and reply.get("connection") == "close"
    assert reply.json()["error"] == "unauthenticated"


def test_a_refused_request_without_a_body_keeps_the_connection() -> None:
    r = Rules(admit=[errors.NotFound("no function named 'echo'")])
    r.m.receive(request(), 0.0)
    sent, actions = r.until_blocked()
    assert parse(sent).status == 404 and parse(sent).get("connection") is None
    assert isinstance(actions[-1], Read)


def test_the_key_taken_out_by_admission_never_reaches_the_function() -> None:
    r = Rules(admit=[[(b"host", b"echo.localhost")], [(b"host", b"echo.localhost")]])
    r.m.receive(request(Authorization="Bearer secret"), 0.0)
    invocation = invoked(r.until_blocked()[1]).invocation
    assert [name for name, _ in invocation.headers] == [
        b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]
    assert (b"x-forwarded-for", b"203.0.113.9") in invocation.headers
    assert (b"authorization", b"Bearer secret") in r.admitted[0][2]  # asked with the original


def test_admission_refusing_after_the_body_answers_and_keeps_the_connection() -> None:
    r = Rules(admit=[None, errors.Unauthenticated("the new active version needs a key")])
    whole = request("POST", body=b"x")
    r.m.receive(whole[:-1], 0.0)  # the head; its body comes with a later read
    assert kinds(r.until_blocked()[1]) == ["Read"]
    r.m.receive(whole[-1:], 1.0)
    sent, actions = r.until_blocked(now=1.0)
    assert parse(sent).status == 401 and isinstance(actions[-1], Read)
    assert r.bodies.used == 0 and len(r.admitted) == 2


def test_a_request_read_whole_with_its_head_is_admitted_once() -> None:
    """No Read (so no await) between the head and the hand-over: admission's answer on
    the head is the one the request goes on with, and it is not asked twice."""
    r = Rules(admit=[[(b"host", b"echo.localhost"), (b"content-length", b"1")]])
    r.m.receive(request("POST", body=b"x", Authorization="Bearer secret"), 0.0)
    invocation = invoked(r.until_blocked()[1]).invocation
    assert len(r.admitted) == 1 and invocation.body == b"x"
    assert b"authorization" not in [name for name, _ in invocation.headers]
    r.answer()
    r.until_blocked(now=1.0)
    r.answers = [errors.Unauthenticated("now it needs a key")]  # the next request asks anew
    r.m.receive(request(), 2.0)
    sent, _ = r.until_blocked(now=2.0)
    assert parse(sent).status == 401 and len(r.admitted) == 2


def test_a_declared_body_over_the_limit_is_413_before_a_byte_or_admission() -> None:
    r = Rules(admit=[])
    r.m.receive(request("POST", Content_Length="101", Expect="100-continue"), 0.0)
    sent, actions = r.until_blocked()
    assert kinds(actions) == ["Send", "Linger", "Close"] and r.admitted == []
    assert parse(sent).status == 413 and b"HTTP/1.1 100" not in sent


def test_a_chunked_body_over_the_limit_is_cut_with_413_and_gives_its_share_back() -> None:
    r = Rules()
    r.m.receive(request("POST", Transfer_Encoding="chunked"), 0.0)
    r.until_blocked()
    r.m.receive(b"40\r\n" + b"x" * 64 + b"\r\n", 1.0)
    _, actions = r.until_blocked(now=1.0)
    assert isinstance(actions[-1], Read) and r.bodies.used == 64
    r.m.receive(b"40\r\n" + b"x" * 64 + b"\r\n", 2.0)
    sent, actions = r.until_blocked(now=2.0)
    assert parse(sent).status == 413 and kinds(actions) == ["Send", "Linger", "Close"]
    assert r.bodies.used == 0


def test_a_body_the_budget_cannot_hold_is_503_before_any_100_continue() -> None:
    r = Rules(budget=64 * 1024)
    r.m.receive(request("POST", Content_Length="90", Expect="100-continue"), 0.0)
    assert r.bodies.hold().cover(64 * 1024 - 10)  # someone else holds nearly all of it
    sent, actions = r.until_blocked()
    reply = parse(sent)
    assert reply.status == 503 and reply.get("retry-after") == "2" and b"HTTP/1.1 100" not in sent
    assert kinds(actions) == ["Send", "Linger", "Close"]


def test_head_only_refusals_close_and_linger() -> None:
    cases = [
        (b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n", 400),
        (request("CONNECT", "echo.localhost:443"), 405),
        (request("POST", Content_Length="1", Transfer_Encoding="chunked"), 400),
        (request(X_Big="y" * 5000), 431),
    ]
    for data, status in cases:
        r = Rules()
        r.m.receive(data, 0.0)
        sent, actions = r.until_blocked()
        assert parse(sent).status == status, data[:40]
        assert kinds(actions) == ["Send", "Linger", "Close"]


def test_no_route_and_pinned_events_are_refused_on_the_head() -> None:
    r = Rules(events=True)
    r.m.receive(request(host="nowhere.test"), 0.0)
    sent, _ = r.until_blocked()
    assert parse(sent).status == 404 and b"no function at host 'nowhere.test'" in sent
    r.m.receive(request(host="v2.echo.localhost", Lambda_Invocation_Type="Event"), 1.0)
    sent, actions = r.until_blocked(now=1.0)
    assert parse(sent).status == 400 and b"run the active version" in sent
    r.m.receive(request("POST", body=b"{}", Lambda_Invocation_Type="Event"), 2.0)
    _, actions = r.until_blocked(now=2.0)
    event = actions[-1]
    assert isinstance(event, Enqueue)
    assert (event.function, event.body, event.request_id) == ("echo", b"{}", "req-3")


def test_malformed_heads_get_400_with_a_body_then_close() -> None:
    r = Rules()
    r.m.receive(b"garbage\r\n\r\n", 0.0)
    sent, actions = r.until_blocked()
    reply = parse(sent)
    assert reply.status == 400 and reply.json()["error"] == "bad_request"
    assert kinds(actions) == ["Send", "Linger", "Close"]


def test_garbage_after_a_head_request_still_gets_a_400_body() -> None:
    r = Rules()
    r.m.receive(request("HEAD") + b"garbage\r\n\r\n", 0.0)
    r.until_blocked()
    r.answer(body=b"x")
    sent, _ = r.until_blocked()
    first = parse(sent, head=True)
    assert first.status == 200 and not first.rest.startswith(b"x")
    assert parse(first.rest).status == 400 and parse(first.rest).body


def test_bodiless_answers_carry_no_body() -> None:
    for method, status in [("HEAD", 200), ("GET", 204), ("GET", 304)]:
        r = Rules()
        r.m.receive(request(method, Connection="close"), 0.0)
        r.until_blocked()
        r.m.answer.start_response(status, [])
        assert not r.m.answer.send_body(b"dropped")
        r.m.answer.end_response()
        sent, _ = r.until_blocked()
        assert b"dropped" not in sent and sent.endswith(b"\r\n\r\n")


def test_an_answer_after_a_response_started_is_a_drop() -> None:
    r = Rules()
    r.m.receive(request(), 0.0)
    r.until_blocked()
    r.m.answer.start_response(200, [])
    try:
        r.m.answer.respond((500, [], b"late"))
    except Drop:
        pass
    else:
        raise AssertionError("a second response head was framed")


# --- timeouts and the client going away ----------------------------------------------------


def test_an_idle_first_connection_times_out_quietly() -> None:
    r = Rules()
    r.until_blocked()
    r.m.timed_out(10.0)
    assert r.until_blocked(now=10.0) == (b"", [Close()])


def test_a_half_sent_head_times_out_with_408_and_no_linger() -> None:
    r = Rules()
    r.m.receive(b"GET / HTTP/1.1\r\nHost: echo.loc", 0.0)
    r.until_blocked()
    r.m.timed_out(10.0)
    sent, actions = r.until_blocked(now=10.0)
    assert parse(sent).status == 408 and kinds(actions) == ["Send", "Close"]


def test_the_whole_body_has_one_deadline_however_it_trickles() -> None:
    r = Rules()
    r.m.receive(request("POST", Content_Length="10"), 100.0)
    _, actions = r.until_blocked(now=100.0)
    assert last_read(actions).deadline == 110.0  # header_timeout of silence
    for now in (109.0, 118.0, 127.0, 136.0, 145.0, 154.0):
        r.m.receive(b"x", now)
        _, actions = r.until_blocked(now=now)
    assert last_read(actions).deadline == 160.0  # never past body_timeout from the head
    r.m.timed_out(160.0)
    sent, actions = r.until_blocked(now=160.0)
    assert parse(sent).status == 408 and kinds(actions) == ["Send", "Close"]
    assert r.bodies.used == 0


def test_a_client_that_half_closes_while_idle_is_closed_quietly() -> None:
    r = Rules()
    r.m.receive(request(), 0.0)
    r.until_blocked()
    r.answer()
    r.until_blocked()
    r.m.receive(b"", 1.0)
    assert r.until_blocked(now=1.0) == (b"", [Close()])


def test_a_request_sent_with_a_half_close_is_still_answered() -> None:
    r = Rules()
    r.m.receive(request(), 0.0)
    r.m.receive(b"", 0.0)
    _, actions = r.until_blocked()
    invoked(actions)
    r.answer()
    sent, actions = r.until_blocked()
    assert parse(sent).status == 200 and kinds(actions) == ["Send", "Close"]


def test_a_client_leaving_mid_body_gives_the_share_back() -> None:
    r = Rules()
    r.m.receive(request("POST", Content_Length="10") + b"abc", 0.0)
    r.until_blocked()
    assert r.bodies.used == 10  # a declared length is held whole before reading
    r.m.receive(b"", 1.0)
    sent, actions = r.until_blocked(now=1.0)
    assert parse(sent).status == 400 and kinds(actions)[-1] == "Close"
    assert r.bodies.used == 0


def test_finish_gives_back_a_share_whatever_the_state() -> None:
    r = Rules()
    r.m.receive(request("POST", Content_Length="10"), 0.0)
    r.until_blocked()
    assert r.bodies.used == 10 and r.m.busy
    r.m.finish(5.0)  # the task was cancelled mid-body
    assert r.bodies.used == 0 and not r.m.busy


def test_a_100_continue_write_is_an_await_so_admission_is_asked_again_after_it() -> None:
    """Attack (issue 16's admission-once shortcut): a client sends `Expect: 100-continue`
    with its body in the same packet. The 100 Continue is a Send, and a Send awaits (for
    as long as the client does not read); a key revoked meanwhile must still count."""
    r = Rules(admit=[None, errors.Unauthenticated("the key was revoked")])
    r.m.receive(request("POST", body=b"data", Expect="100-continue"), 0.0)
    action = r.m.next_action(0.0)
    assert isinstance(action, Send) and action.data.startswith(b"HTTP/1.1 100 ")
    sent, actions = r.until_blocked(now=1.0)  # after the await: the key is gone
    assert not any(isinstance(a, Invoke) for a in actions), "invoked on a stale admission"
    assert parse(sent).status == 401 and len(r.admitted) == 2 and r.bodies.used == 0
