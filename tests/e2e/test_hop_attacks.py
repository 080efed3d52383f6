"""The instance hop (httptools since issue 16) against a function that answers with
hostile HTTP, through a real lambdad, Docker and the gateway on 127.0.0.1.

The function is the attacker: a Dockerfile function speaking raw HTTP on its socket
tries ambiguous framing, header injection, oversized heads, a second answer smuggled
behind the first and a close mid-body. Each must end in a 502 (or a cut response) for
that caller only: the next caller always gets the answer to its own request.
"""

from __future__ import annotations

import http.client
import secrets
import time

import pytest

from tests.support.daemon import Lambdad
from tests.support.functions import deploy_raw_server
from tests.support.gateway import connect, read_to_close

HOSTILE_SERVER = r'''
ANSWERS = {
    b"/cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"2\r\nhi\r\n0\r\n\r\n",
    b"/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
    b"/negative": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nhi",
    b"/huge": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhi",
    b"/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n Set-Cookie: x\r\nContent-Length: 2\r\n\r\nhi",
    b"/cr": b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x\r\nContent-Length: 2\r\n\r\nhi",
    b"/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
    b"/gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhi",
    b"/status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"/switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"/big-head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 2\r\n\r\nhi",
    b"/longer": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
    b"/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
                 b"0\r\n\r\n",
    b"/no-content": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"/runtime-word": b"HTTP/1.1 200 OK\r\nLambda-Workers: 1\r\nLambda-Wait-Timeout: 1\r\n"
                      b"Content-Length: 6\r\n\r\nserved",
}

def serve(conn):
    for method, path in heads(conn):
        if path.startswith(b"/broken-once"):
            print("delivered", path.decode(), flush=True)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nhi")
            continue
        if path == b"/endless-trailer":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\nX-Trailer: ")
            try:
                while True:
                    conn.sendall(b"v" * 65536)
            except OSError:
                return
        if path == b"/mid-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
            time.sleep(0.1)
            conn.close()
            return
        if path in ANSWERS:
            conn.sendall(ANSWERS[path])
        elif method == b"HEAD":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
'''


@pytest.fixture(scope="module")
def hostile(lambdad: Lambdad, tmp_path_factory: pytest.TempPathFactory) -> str:
    return deploy_raw_server(lambdad, tmp_path_factory.mktemp("hostile-hop"), "hostilehop",
                             HOSTILE_SERVER)


def _own_answers_follow(lambdad: Lambdad, function: str) -> None:
    for target in ("/alice", "/bob"):
        got = lambdad.http(function, target)
        assert got.status == 200 and got.body == target.encode(), (target, got.body)


@pytest.mark.parametrize("path", ["/cl-and-te", "/two-lengths", "/negative", "/huge",
                                  "/obs-fold", "/cr", "/nul", "/gzip", "/status", "/switch",
                                  "/big-head"])
def test_an_ambiguous_or_malformed_answer_is_a_502_and_no_one_elses_answer(
    lambdad: Lambdad, hostile: str, path: str
) -> None:
    got = lambdad.http(hostile, path)
    assert got.status == 502, (path, got.status, got.body)
    assert "set-cookie" not in got.headers
    _own_answers_follow(lambdad, hostile)


def test_an_answer_smuggled_behind_the_first_never_reaches_the_next_caller(
    lambdad: Lambdad, hostile: str
) -> None:
    got = lambdad.http(hostile, "/longer")
    assert got.status == 200 and got.body == b"hi"
    _own_answers_follow(lambdad, hostile)


def test_a_dockerfile_function_cannot_speak_for_the_runtime(lambdad: Lambdad,
                                                           hostile: str) -> None:
    """Attack: a Dockerfile function's own server answers with the standard runtime's word
    first in its head (`Lambda-Workers: 1`, `Lambda-Wait-Timeout`). lambdad takes nothing
    from it (only the standard runtime's supervisor speaks so): the answer is relayed as the
    200 it is, not turned into a timeout, and the client never sees those headers."""
    for _ in range(2):
        got = lambdad.http(hostile, "/runtime-word")
        assert got.status == 200 and got.body == b"served", (got.status, got.body)
        assert "lambda-workers" not in got.headers, got.headers
        assert "lambda-wait-timeout" not in got.headers, got.headers
    _own_answers_follow(lambdad, hostile)


def test_a_close_mid_body_cuts_that_response_only(lambdad: Lambdad, hostile: str) -> None:
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        lambdad.http(hostile, "/mid-body")
    _own_answers_follow(lambdad, hostile)


def test_a_trailer_that_never_ends_cuts_that_response_only(
    lambdad: Lambdad, hostile: str
) -> None:
    """Attack: a chunked answer whose trailer value never ends. httptools joins a header
    value's pieces in Python: lambdad's reader was quadratic in CPU (its loop held) and
    linear in memory until the function's 30 s deadline. Now it is cut past 64 KiB, long
    before that deadline (the client gives up at half of it)."""
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        lambdad.http(hostile, "/endless-trailer", timeout=15)
    _own_answers_follow(lambdad, hostile)


def test_a_request_answered_with_a_broken_response_is_not_delivered_again(
    lambdad: Lambdad, hostile: str
) -> None:
    """Attack (on the caller's side effects): on a kept-alive connection, the instance
    answers a malformed response. lambdad took it for a stale connection and sent the same
    request (a POST and its body) again on a new one: the function ran it twice. Only a
    connection that closed before any byte of an answer is retried now."""
    _own_answers_follow(lambdad, hostile)  # leaves a kept-alive connection to reuse
    target = f"/broken-once-{secrets.token_hex(4)}"
    got = lambdad.http(hostile, target, method="POST", body=b"pay 10")
    assert got.status == 502

    def deliveries() -> int:
        logs = lambdad.cli("logs", hostile, "--since", "5m")
        return logs.stdout.count(f"delivered {target}")

    deadline = time.monotonic() + 20
    while deliveries() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a second delivery came before the 502; its line a moment after
    assert deliveries() == 1


def test_interim_chunked_no_content_and_head_answers_are_relayed(
    lambdad: Lambdad, hostile: str
) -> None:
    assert lambdad.http(hostile, "/continue").body == b"ok"
    chunked = lambdad.http(hostile, "/chunked")
    assert chunked.status == 200 and chunked.body == b"abcde"
    empty = lambdad.http(hostile, "/no-content")
    assert empty.status == 204 and empty.body == b""
    # HEAD and then GET on one client connection: the HEAD's answer has no body, and
    # the kept-alive hop does not read the GET's answer short or long.
    with connect(lambdad) as sock:
        host = f"Host: {hostile}.localhost\r\n".encode()
        sock.sendall(b"HEAD /h HTTP/1.1\r\n" + host + b"\r\nGET /after HTTP/1.1\r\n" + host
                     + b"Connection: close\r\n\r\n")
        data = read_to_close(sock)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"content-length: 5" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\n/after"), data
    _own_answers_follow(lambdad, hostile)
