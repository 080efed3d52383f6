"""Attacks on issue 16's client side (gateway/stream.py's Protocol, the one-pass header
rules, the admission-once shortcut) from the caller's side, on the real engine: a caller
that never reads its answer, and what a function or a client can make cross."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.functions import deploy_function
from tests.support.gateway import connect
from tests.support.metrics import sample

BODY_TIMEOUT = 2  # seconds: also how long a client may leave an answer untaken

BIG = (
    "def handler(event, context):\n"
    "    return {'statusCode': 200, 'headers': {'content-type': 'text/plain'},\n"
    "            'body': 'x' * (16 * 1024 * 1024)}\n"
)


@pytest.fixture(scope="module")
def daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    with running_daemon("--wheelhouse", str(wheelhouse),
                        "--body-timeout", str(BODY_TIMEOUT)) as started:
        yield started


def _rss_kib(daemon: Lambdad) -> int:
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_connections(daemon: Lambdad) -> int:
    return int(sample(daemon, "lambdad_gateway_connections"))


HOGS = 6


def test_callers_that_never_read_their_answers_cannot_hold_memory_or_connections(
        daemon: Lambdad, tmp_path: Path) -> None:
    """Slow-read attack: GET a 16 MiB answer and never read it, on several connections.
    The gateway waited on the write for ever (no deadline on a client taking its
    answer): each connection kept its place under the cap and what lambdad had of the
    answer. Now a client that takes nothing of its answer for `--body-timeout` is cut."""
    deploy_function(daemon, tmp_path / "hog", BIG, 'name = "hog"\n')
    assert daemon.http("hog").status == 200  # warm, and the body is fine for a reader
    base = _open_connections(daemon)
    before = _rss_kib(daemon)
    hogs = []
    try:
        for _ in range(HOGS):
            hog = connect(daemon)
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.sendall(b"GET / HTTP/1.1\r\nHost: hog.localhost\r\n\r\n")
            hogs.append(hog)
        time.sleep(1.5)
        grown = _rss_kib(daemon) - before  # back-pressure: not the answers, a buffer each
        assert grown < HOGS * 4 * 1024, f"lambdad grew {grown} KiB for unread answers"
        closed = wait_for(lambda: _open_connections(daemon) <= base, timeout=BODY_TIMEOUT + 13)
        assert closed, f"{_open_connections(daemon) - base} unread connections still open"
        answer = daemon.http("hog")
        assert answer.status == 200, (answer.status, answer.body[:200])
    finally:
        for hog in hogs:
            hog.close()


SLOW_ECHO = (
    "import time\n"
    "def handler(event, context):\n"
    "    if event.get('rawPath') == '/slow':\n"
    "        time.sleep(3)\n"
    "    headers = event.get('headers') or {}\n"
    "    return {'path': event.get('rawPath'), 'headers': sorted(headers)}\n"
)


def _responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` Content-Length framed responses read off one connection."""
    data, out = b"", []
    sock.settimeout(30)
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            lengths = [int(line.split(":", 1)[1]) for line in head.split("\r\n")
                       if line.lower().startswith("content-length:")]
            assert lengths, head
            length = lengths[0]
            if len(data) >= head_end + 4 + length:
                out.append((int(head.split()[1]), data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} responses"
        data += chunk
    return out


def test_a_key_revoked_between_two_pipelined_requests_refuses_the_second(
        daemon: Lambdad, tmp_path: Path) -> None:
    """The admission-once shortcut: two requests in one packet, the first slow; the key
    is revoked while it runs. The second request is admitted when it is read, after the
    first answer (an await), so it is refused."""
    deploy_function(daemon, tmp_path / "keyed", SLOW_ECHO, 'name = "keyed"\nauth = "key"\n')
    made = daemon.cli("keys", "create", "--name", "pipeliner", "--role", "invoker")
    assert made.code == 0, made.stderr
    key = made.stdout.strip()
    one = (f"GET /slow HTTP/1.1\r\nHost: keyed.localhost\r\nAuthorization: Bearer {key}\r\n"
           "\r\n")
    two = (f"POST /after HTTP/1.1\r\nHost: keyed.localhost\r\nAuthorization: Bearer {key}\r\n"
           "Content-Length: 2\r\n\r\n{}")
    with connect(daemon) as sock:
        sock.sendall((one + two).encode())
        assert daemon.cli("keys", "revoke", "pipeliner").code == 0
        (first, _), (second, body) = _responses(sock, 2)
    assert first == 200
    assert second == 401, body


def test_what_a_client_cannot_make_cross_to_the_function(daemon: Lambdad,
                                                          tmp_path: Path) -> None:
    """Lambda-* headers in any case, the ones a Connection header names, hop-by-hop and
    proxy claims never reach the function; Host stays whatever Connection says."""
    deploy_function(daemon, tmp_path / "mirror", SLOW_ECHO, 'name = "mirror"\n')
    head = ("GET /h HTTP/1.1\r\nHost: mirror.localhost\r\n"
            "LAMBDA-Request-Id: forged\r\nlambda-deadline-ms: 1\r\nLambda-Start: cell\r\n"
            "Lambda-Invocation-Type: http\r\nConnection: keep-alive, X-Secret, host\r\n"
            "X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nForwarded: for=1.2.3.4\r\n"
            "Proxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n\r\n")
    with connect(daemon) as sock:
        sock.sendall(head.encode())
        [(status, body)] = _responses(sock, 1)
    assert status == 200, body
    seen = {name.lower() for name in json.loads(body)["headers"]}
    assert "x-kept" in seen and "host" in seen
    assert not {name for name in seen if name.startswith("lambda-")}, seen
    assert not seen & {"x-secret", "keep-alive", "te", "forwarded", "proxy-authorization",
                       "connection"}, seen


SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: mirror.localhost\r\n\r\n"
FRAMINGS = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: mirror.localhost\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: mirror.localhost\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nHost: mirror.localhost\r\nContent-Length: 0\r\n"
                   b"Content-Length: 50\r\n\r\n",
    "te-identity": b"POST / HTTP/1.1\r\nHost: mirror.localhost\r\n"
                   b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    "te-space": b"POST / HTTP/1.1\r\nHost: mirror.localhost\r\nTransfer-Encoding : chunked\r\n"
                b"Content-Length: 0\r\n\r\n",
    "nul-value": b"GET / HTTP/1.1\r\nHost: mirror.localhost\r\nX-A: a\x00b\r\n\r\n",
    "cr-value": b"GET / HTTP/1.1\r\nHost: mirror.localhost\r\nX-A: a\rb\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: mirror.localhost\r\nHost: other.localhost\r\n\r\n",
    "chunk-ext-lf": b"POST / HTTP/1.1\r\nHost: mirror.localhost\r\nTransfer-Encoding: chunked"
                    b"\r\n\r\n2;x\nGE\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(FRAMINGS))
def test_no_framing_trick_gets_a_second_request_past_the_gateway(
        daemon: Lambdad, tmp_path: Path, name: str) -> None:
    """Smuggling against the one-pass head rules: each head the gateway cannot frame one
    way only is refused and the connection closed, so what follows it is never a request."""
    if daemon.http("mirror").status == 404:
        deploy_function(daemon, tmp_path / "mirror", SLOW_ECHO, 'name = "mirror"\n')
    with connect(daemon) as sock:
        sock.sendall(FRAMINGS[name] + SMUGGLE)
        sock.settimeout(10)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert data.count(b"HTTP/1.1 ") <= 1, data
    assert b"/smuggled" not in data, data


BODILESS = (
    "def handler(event, context):\n"
    "    status = int(event.get('rawPath', '/200').strip('/') or 200)\n"
    "    return {'statusCode': status, 'headers': {'content-length': '5', 'x-s': str(status)},\n"
    "            'body': 'hello'}\n"
)


def test_head_204_and_304_answers_keep_the_connection_framed(daemon: Lambdad,
                                                             tmp_path: Path) -> None:
    """A function that sends a body (and a Content-Length) where HTTP allows none: HEAD,
    204, 304, one after the other on one kept-alive connection, then an ordinary answer
    that must still be read as itself."""
    deploy_function(daemon, tmp_path / "bodiless", BODILESS, 'name = "bodiless"\n')
    conn = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=30)
    try:
        for method, path, status in (("HEAD", "/200", 200), ("GET", "/204", 204),
                                     ("GET", "/304", 304), ("HEAD", "/404", 404),
                                     ("GET", "/200", 200)):
            conn.request(method, path, headers={"Host": "bodiless.localhost"})
            reply = conn.getresponse()
            body = reply.read()
            assert (reply.status, reply.getheader("x-s")) == (status, str(status))
            assert body == (b"hello" if (method, status) == ("GET", 200) else b""), body
    finally:
        conn.close()

