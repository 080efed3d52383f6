"""Runs the real in-image Python runtime as a subprocess and talks HTTP to it on a Unix socket."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.unixhttp import UnixHTTPConnection

RUNTIME_DIR = Path(__file__).parents[2] / "packaging" / "runtime" / "python"

HANDLER_CODE = textwrap.dedent(
    """
    import sys

    def handler(event, context):
        if isinstance(event, dict) and event.get("version") == "2.0":
            if event["rawPath"] == "/greet":
                name = (event.get("queryStringParameters") or {}).get("name", "world")
                return {
                    "statusCode": 200,
                    "headers": {"Content-Type": "text/plain"},
                    "body": f"Hello, {name}!",
                }
            return {"event": event, "request_id": context.aws_request_id}
        op = event.get("op") if isinstance(event, dict) else None
        if op == "raise":
            raise ValueError("boom")
        if op == "exit":
            sys.exit(event["code"])
        if op == "context":
            return {
                "function_name": context.function_name,
                "memory": context.memory_limit_in_mb,
                "request_id": context.aws_request_id,
                "remaining": context.get_remaining_time_in_millis(),
            }
        return {"echo": event}
    """
)


@dataclass
class Runtime:
    proc: subprocess.Popen[bytes]
    sock_path: str

    def conn(self) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.sock_path, timeout=5)

    def stop(self, terminate: bool = True) -> tuple[int, str]:
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read().decode()


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))  # AF_UNIX paths are limited to ~108 bytes
    (d / "app.py").write_text(HANDLER_CODE)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(workdir: Path, handler: str = "app.handler", wait: bool = True) -> Runtime:
    sock_path = str(workdir / "s.sock")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(RUNTIME_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "_HANDLER": handler,
        "AWS_LAMBDA_FUNCTION_NAME": "greet",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "LAMBDA_SOCKET": sock_path,
        "LAMBDA_TASK_ROOT": str(workdir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambda_runtime"],
        env=env,
        cwd=str(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    rt = Runtime(proc, sock_path)
    if wait:
        deadline = time.monotonic() + 5
        while not os.path.exists(sock_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                code, err = rt.stop()
                pytest.fail(f"runtime did not start (exit {code}): {err}")
            time.sleep(0.01)
    return rt


@pytest.fixture
def runtime(workdir: Path) -> Iterator[Runtime]:
    rt = start(workdir)
    yield rt
    rt.stop()


def request(
    conn: http.client.HTTPConnection,
    method: str,
    url: str,
    body: bytes | None = None,
    kind: str = "http",
    headers: dict[str, str] | None = None,
) -> http.client.HTTPResponse:
    hdrs = {"Lambda-Invocation-Type": kind, "Lambda-Request-Id": "req-42", **(headers or {})}
    conn.request(method, url, body=body, headers=hdrs)
    return conn.getresponse()


def test_http_greet(runtime: Runtime) -> None:
    resp = request(runtime.conn(), "GET", "/greet?name=Ada")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/plain"
    assert resp.getheader("Content-Length") == str(len("Hello, Ada!"))
    assert resp.read() == b"Hello, Ada!"


def test_http_event_shape_reaches_handler(runtime: Runtime) -> None:
    resp = request(
        runtime.conn(),
        "POST",
        "/items?a=1&a=2",
        body=b'{"x": 1}',
        headers={"Content-Type": "application/json", "X-Forwarded-For": "198.51.100.4"},
    )
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    data = json.loads(resp.read())
    event = data["event"]
    assert data["request_id"] == "req-42"
    assert event["rawPath"] == "/items"
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["body"] == '{"x": 1}'
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["http"]["sourceIp"] == "198.51.100.4"
    assert "lambda-invocation-type" not in event["headers"]


def test_direct_invoke_json(runtime: Runtime) -> None:
    resp = request(runtime.conn(), "POST", "/", body=b'{"a": [1, 2]}', kind="direct")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(resp.read()) == {"echo": {"a": [1, 2]}}


def test_event_invoke_with_context(runtime: Runtime) -> None:
    deadline = int(time.time() * 1000) + 60_000
    resp = request(
        runtime.conn(),
        "POST",
        "/",
        body=b'{"op": "context"}',
        kind="event",
        headers={"Lambda-Deadline-Ms": str(deadline)},
    )
    data = json.loads(resp.read())
    assert data["function_name"] == "greet"
    assert data["memory"] == 256
    assert data["request_id"] == "req-42"
    assert 50_000 < data["remaining"] <= 60_000


def test_direct_invalid_json_is_400(runtime: Runtime) -> None:
    resp = request(runtime.conn(), "POST", "/", body=b"{nope", kind="direct")
    assert resp.status == 400
    assert json.loads(resp.read())["errorType"] == "Runtime.InvalidPayload"
    assert resp.getheader("Lambda-Function-Error") is None


def test_handler_exception_is_500(runtime: Runtime) -> None:
    resp = request(runtime.conn(), "POST", "/", body=b'{"op": "raise"}', kind="direct")
    assert resp.status == 500
    assert resp.getheader("Lambda-Function-Error") == "Unhandled"
    assert json.loads(resp.read()) == {"errorMessage": "boom", "errorType": "ValueError"}
    # The runtime survives the handler's exception.
    assert request(runtime.conn(), "POST", "/", body=b"{}", kind="direct").status == 200
    _, stderr = runtime.stop()
    assert "Traceback" in stderr
    assert "ValueError: boom" in stderr


def test_keep_alive_two_requests_one_connection(runtime: Runtime) -> None:
    conn = runtime.conn()
    first = request(conn, "GET", "/greet?name=one")
    assert first.read() == b"Hello, one!"
    sock = conn.sock
    assert sock is not None
    second = request(conn, "POST", "/", body=b'{"n": 2}', kind="direct")
    assert json.loads(second.read()) == {"echo": {"n": 2}}
    assert conn.sock is sock  # http.client would have reconnected had the server closed it


def test_chunked_request_body(runtime: Runtime) -> None:
    conn = runtime.conn()
    conn.request(
        "POST",
        "/",
        body=iter([b'{"chunked"', b": ", b"true}"]),
        headers={"Lambda-Invocation-Type": "direct", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read()) == {"echo": {"chunked": True}}
    # The connection stays usable after a chunked body.
    assert request(conn, "GET", "/greet").read() == b"Hello, world!"


def test_malformed_chunked_body_is_400(runtime: Runtime) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(runtime.sock_path)
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nLambda-Invocation-Type: direct\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 400")


def test_import_failure_exits_1(workdir: Path) -> None:
    rt = start(workdir, handler="missing.handler", wait=False)
    code, stderr = rt.stop(terminate=False)
    assert code == 1
    assert "Runtime.ImportModuleError: Unable to import module 'missing'" in stderr
    assert not os.path.exists(rt.sock_path)


def test_handler_not_found_exits_1(workdir: Path) -> None:
    rt = start(workdir, handler="app.nothing", wait=False)
    code, stderr = rt.stop(terminate=False)
    assert code == 1
    assert "Runtime.HandlerNotFound: handler 'nothing' missing on module 'app'" in stderr


def test_handler_sys_exit_ends_its_worker_not_the_runtime(runtime: Runtime) -> None:
    """AWS's shape for a runtime that exits mid-invocation; the next request gets a fresh
    worker on the same connection."""
    conn = runtime.conn()
    resp = request(conn, "POST", "/", body=b'{"op": "exit", "code": 7}', kind="direct")
    assert resp.status == 502
    assert resp.getheader("Lambda-Function-Error") == "Unhandled"
    assert json.loads(resp.read()) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": "RequestId: req-42 Error: Runtime exited with error: exited with code 7"}
    again = request(conn, "POST", "/", body=b'{"n": 1}', kind="direct")
    assert json.loads(again.read()) == {"echo": {"n": 1}}
    assert runtime.proc.poll() is None


def test_only_peers_outside_the_container_are_served_as_its_first_process(
    workdir: Path,
) -> None:
    """As PID 1 of a PID namespace (a container), the runtime refuses connections from its
    own processes: a handler cannot dial its socket to get frames under ids it picks."""
    (workdir / "dial.py").write_text(textwrap.dedent("""
        import os, socket
        def handler(event, context):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(os.environ["LAMBDA_SOCKET"])
            try:
                s.sendall(b"POST / HTTP/1.1\\r\\nLambda-Invocation-Type: direct\\r\\n"
                          b"Lambda-Request-Id: forged\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
                answer = s.recv(4096).decode()
            except (BrokenPipeError, ConnectionResetError):  # closed on it
                answer = ""
            return {"answer": answer, "pid": os.getpid()}
    """))
    sock_path = str(workdir / "s.sock")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(RUNTIME_DIR),
        "PYTHONDONTWRITEBYTECODE": "1", "_HANDLER": "dial.handler",
        "LAMBDA_SOCKET": sock_path, "LAMBDA_TASK_ROOT": str(workdir),
    }
    # A user and PID namespace of its own: the runtime is PID 1 there, this test is outside.
    proc = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child",
         "--mount-proc", sys.executable, "-m", "lambda_runtime"],
        env=env, cwd=str(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rt = Runtime(proc, sock_path)
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(sock_path):
            assert proc.poll() is None and time.monotonic() < deadline, rt.stop()
            time.sleep(0.01)
        resp = request(rt.conn(), "POST", "/", body=b"{}", kind="direct")
        answer = json.loads(resp.read())
        assert resp.status == 200, answer
        assert answer["answer"] == ""  # refused: closed without a reply
    finally:
        rt.stop()
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    assert "forged" not in out and out.count("START RequestId: ") == 1


def test_sigterm_exits_promptly(runtime: Runtime) -> None:
    conn = runtime.conn()  # an idle keep-alive connection must not delay shutdown
    assert request(conn, "GET", "/greet").status == 200
    start_t = time.monotonic()
    runtime.proc.send_signal(signal.SIGTERM)
    assert runtime.proc.wait(timeout=2) == 0
    assert time.monotonic() - start_t < 1
    assert not os.path.exists(runtime.sock_path)
    conn.close()


# --- the runtime's own HTTP/1.1 parser ------------------------------------------------------


def raw_exchange(rt: Runtime, data: bytes, wait_close: bool = True) -> bytes:
    """Sends raw bytes and returns everything received until the runtime closes (or 2 s)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2 if wait_close else 0.5)
        s.connect(rt.sock_path)
        s.sendall(data)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except TimeoutError:
            assert not wait_close, f"connection left open after {received!r}"
        return received


def test_malformed_request_line_is_400(runtime: Runtime) -> None:
    for line in (b"GARBAGE\r\n", b"GET /\r\n", b"GET  / HTTP/1.1\r\n", b"GET / HTTP/x\r\n"):
        resp = raw_exchange(runtime, line + b"Host: x\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 400 "), (line, resp)
        assert b"\r\nConnection: close\r\n" in resp


def test_malformed_header_line_is_400(runtime: Runtime) -> None:
    for header in (b"No colon here", b"Bad Name: x", b" folded: x", b"Host : x"):
        resp = raw_exchange(runtime, b"GET / HTTP/1.1\r\n" + header + b"\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 400 "), (header, resp)


def test_http2_version_is_505(runtime: Runtime) -> None:
    assert raw_exchange(runtime, b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")


def test_oversized_headers_rejected(runtime: Runtime) -> None:
    big = b"X-Big: " + b"a" * 70_000 + b"\r\n"
    resp = raw_exchange(runtime, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert resp.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))
    # Just under the limit is still served.
    ok = b"X-Big: " + b"a" * 60_000 + b"\r\n"
    resp = raw_exchange(runtime, b"GET /greet HTTP/1.1\r\nConnection: close\r\n" + ok + b"\r\n")
    assert resp.startswith(b"HTTP/1.1 200 ")


def test_oversized_body_is_413(runtime: Runtime) -> None:
    head = b"POST / HTTP/1.1\r\nLambda-Invocation-Type: direct\r\nContent-Length: 99999999\r\n\r\n"
    assert raw_exchange(runtime, head).startswith(b"HTTP/1.1 413 ")


def test_invalid_content_length_is_400(runtime: Runtime) -> None:
    for value in (b"abc", b"-1", b"+5", b"1_0"):
        head = b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n"
        assert raw_exchange(runtime, head).startswith(b"HTTP/1.1 400 "), value


def test_connection_close_honoured(runtime: Runtime) -> None:
    resp = raw_exchange(runtime, b"GET /greet HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in resp
    assert resp.endswith(b"\r\n\r\nHello, world!")  # then the runtime closed


def test_http10_closes_unless_keep_alive(runtime: Runtime) -> None:
    resp = raw_exchange(runtime, b"GET /greet HTTP/1.0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n")
    assert resp.endswith(b"Hello, world!")
    two = b"GET /greet?name=a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    two += b"GET /greet?name=b HTTP/1.0\r\n\r\n"
    resp = raw_exchange(runtime, two)
    first, _, rest = resp.partition(b"Hello, a!")
    assert b"\r\nConnection: keep-alive\r\n" in first
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"Hello, b!")  # closed after the second, plain HTTP/1.0 request


def test_http11_keeps_connection_open(runtime: Runtime) -> None:
    resp = raw_exchange(runtime, b"GET /greet HTTP/1.1\r\n\r\n", wait_close=False)
    assert resp.endswith(b"Hello, world!")
    assert b"Connection:" not in resp


def test_expect_100_continue(runtime: Runtime) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(runtime.sock_path)
        s.sendall(
            b"POST / HTTP/1.1\r\nLambda-Invocation-Type: direct\r\nContent-Length: 8\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body is sent
        s.sendall(b'{"a": 1}')
        resp = b""
        while not resp.endswith(b"}}"):
            chunk = s.recv(4096)
            assert chunk
            resp += chunk
        assert resp.startswith(b"HTTP/1.1 200 OK\r\n")
        assert resp.endswith(b'{"echo": {"a": 1}}')


def test_head_and_no_content_responses(workdir: Path) -> None:
    (workdir / "nc.py").write_text(
        "def handler(event, context):\n"
        "    status = int(event['rawPath'][1:])\n"
        "    return {'statusCode': status, 'body': 'xyz'}\n"
    )
    rt = start(workdir, handler="nc.handler")
    try:
        conn = rt.conn()
        resp = request(conn, "HEAD", "/200")
        assert resp.getheader("Content-Length") == "3"
        assert resp.read() == b""
        resp = request(conn, "GET", "/204")
        assert resp.status == 204
        assert resp.getheader("Content-Length") is None
        assert resp.read() == b""
        assert request(conn, "GET", "/299").read() == b"xyz"  # unknown status: empty reason
    finally:
        rt.stop()


def test_pipelined_requests_answered_in_order(runtime: Runtime) -> None:
    names = [f"n{i}" for i in range(10)]
    data = b"".join(f"GET /greet?name={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in names[:-1])
    data += b"POST / HTTP/1.1\r\nLambda-Invocation-Type: direct\r\nTransfer-Encoding: chunked\r\n"
    data += b"\r\n5\r\n[1, 2\r\n1;ext=1\r\n]\r\n0\r\nX-Trailer: t\r\n\r\n"
    data += b"GET /greet?name=last HTTP/1.1\r\nConnection: close\r\n\r\n"
    resp = raw_exchange(runtime, data)
    bodies = [f"Hello, {n}!".encode() for n in names[:-1]] + [b'{"echo": [1, 2]}', b"Hello, last!"]
    pos = 0
    for body in bodies:
        found = resp.find(body, pos)
        assert found > pos, (body, resp[pos:])
        pos = found + len(body)
    assert resp.count(b"HTTP/1.1 200 OK\r\n") == len(bodies)
    assert pos == len(resp)


def test_burst_of_concurrent_connects_all_served(runtime: Runtime) -> None:
    socks = []
    try:
        for _ in range(100):  # connect all first: they queue in the listen backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(runtime.sock_path)
            socks.append(s)
        for i, s in enumerate(socks):
            s.sendall(f"GET /greet?name={i} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        for i, s in enumerate(socks):
            resp = b""
            while chunk := s.recv(4096):
                resp += chunk
            assert resp.startswith(b"HTTP/1.1 200 OK\r\n")
            assert resp.endswith(f"Hello, {i}!".encode())
    finally:
        for s in socks:
            s.close()


def test_socket_mode_and_stale_socket(workdir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(workdir / "s.sock"))  # left behind by a previous run
    stale.close()
    rt = start(workdir, wait=False)
    try:
        deadline = time.monotonic() + 5
        while True:  # the stale file exists from the start; wait until the runtime answers
            try:
                resp = request(rt.conn(), "GET", "/greet")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert resp.status == 200
        assert os.stat(rt.sock_path).st_mode & 0o777 == 0o666
        assert [p.name for p in workdir.iterdir() if p.name.endswith(".sock")] == ["s.sock"]
    finally:
        rt.stop()
