"""The example functions for the popular Lambda adapters, unchanged, on the real engine.

FastAPI through Mangum, Flask through apig-wsgi and AWS Lambda Powertools are deployed with
the real CLI from functions/, their requirements.txt resolved by the daemon from a folder
of real PyPI wheels (compiled ones among them: pydantic-core, markupsafe), and called over
HTTP through the gateway. Every case runs on both cold paths: a daemon with stem cells ready
(each first request specializes a cell) and one without (each starts a container), since
which one served a cold start must never change what an app does.

The wheels come from `make example-wheels` (tests/support/fetch_wheels.py): tests talk to
loopback only, so they never download anything themselves.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import fetch_wheels
from tests.support.daemon import Lambdad, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CELLS = 2  # the cell daemon's pool size
IDLE = "3"  # seconds: short, so each test's first request is a cold start again, long
# enough that the requests of one test, sent back to back, share the instance it started


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # in order, repeated ones kept (Set-Cookie)
    body: bytes

    def header(self, name: str) -> str | None:
        found = self.all(name)
        return found[0] if found else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def cookies(self) -> dict[str, str]:
        """name -> the whole Set-Cookie value, for each cookie the response sets."""
        return {value.split("=", 1)[0]: value for value in self.all("set-cookie")}


def call(daemon: PathDaemon, name: str, path: str, *, method: str = "GET",
         body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={
            "Host": f"{name}.localhost:{daemon.gateway_port}", **(headers or {})})
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


# Fixtures: the wheels, one daemon per cold path, each example deployed once per daemon.


@pytest.fixture(scope="module")
def example_wheels() -> Iterator[Path]:
    folder = fetch_wheels.public_copy()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class PathDaemon(Lambdad):
    """A daemon whose cold starts all take one path: `cell` (a pool of stem cells kept
    ready) or `container` (no cells)."""

    def __init__(self, cold_path: str, wheelhouse: Path) -> None:
        pool = CELLS if cold_path == "cell" else 0
        super().__init__(extra_args=["--wheelhouse", str(wheelhouse),
                                     "--cell-pool-size", str(pool)])
        self.cold_path = cold_path


@pytest.fixture(scope="module", params=["cell", "container"])
def daemon(request: pytest.FixtureRequest, example_wheels: Path) -> Iterator[PathDaemon]:
    """`cell`: stem cells kept ready, so cold starts specialize one; `container`: no cells,
    so every cold start creates a container."""
    started = PathDaemon(request.param, example_wheels)
    try:
        started.start()
        yield started
    finally:
        started.close()


def _deploy(daemon: PathDaemon, folder: str, *args: str) -> str:
    daemon.deploy(folder, "--idle-timeout", IDLE, *args)
    name = args[args.index("--name") + 1] if "--name" in args else folder
    return name


@pytest.fixture(scope="module")
def fastapi_app(daemon: PathDaemon) -> str:
    return _deploy(daemon, "fastapi-mangum")


@pytest.fixture(scope="module")
def fastapi_c8(daemon: PathDaemon) -> str:
    # One instance serving 8 requests at once: the whole burst shares it.
    return _deploy(daemon, "fastapi-mangum", "--name", "fastapi-c8", "--concurrency", "8",
                   "--max-instances", "1")


@pytest.fixture(scope="module")
def flask_app(daemon: PathDaemon) -> str:
    return _deploy(daemon, "flask-apig-wsgi")


@pytest.fixture(scope="module")
def powertools_app(daemon: PathDaemon) -> str:
    return _deploy(daemon, "powertools")


# Cold starts on a chosen path


def _ready_cells(daemon: PathDaemon) -> int:
    return sum(1 for c in daemon.containers()
               if "lambda.cell" in c.labels and daemon.owner(c)[0] is None
               and c.status == "running")


def _await_cold(daemon: PathDaemon, name: str) -> str:
    """Waits until `name` has no instance (and, on the cell daemon, the pool is full), so
    its next request is a cold start on the daemon's path; returns that path."""
    path = daemon.cold_path
    assert wait_for(lambda: daemon.containers(name) == [], 60), f"{name} did not scale to zero"
    if path == "cell":
        assert wait_for(lambda: _ready_cells(daemon) >= CELLS, 60), "the cell pool did not fill"
    else:
        assert not any("lambda.cell" in c.labels for c in daemon.containers())
    return path


def cold_call(daemon: PathDaemon, name: str, path: str, **kwargs: Any) -> Reply:
    cold_path = _await_cold(daemon, name)
    reply = call(daemon, name, path, **kwargs)
    assert reply.header("lambda-cold-start") == cold_path, (reply.headers, reply.body)
    return reply


# FastAPI + Mangum


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of a PNG, its chunks' CRCs checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc, kind
        chunks[kind] = payload
        pos += 12 + length
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    return width, height, zlib.decompress(chunks[b"IDAT"])


JSON = {"content-type": "application/json"}


def _fastapi_cases(daemon: PathDaemon, name: str) -> list[Callable[[], None]]:
    """Each case of the FastAPI app as a check that can run alone or beside the others."""

    def params() -> None:
        reply = call(daemon, name, "/items/1?q=hello%20world&limit=3")
        assert reply.status == 200, reply.body
        assert reply.json() == {"id": 1, "name": "hammer", "price": 9.5, "tags": [],
                                "q": "hello world", "limit": 3}

    def bad_params() -> None:
        for path, where in (("/items/abc", ["path", "item_id"]),
                            ("/items/1?limit=many", ["query", "limit"])):
            reply = call(daemon, name, path)
            assert reply.status == 422, reply.body
            assert reply.json()["detail"][0]["loc"] == where
            assert reply.json()["detail"][0]["type"] == "int_parsing"  # pydantic 2's name

    def not_found() -> None:
        reply = call(daemon, name, "/items/42")
        assert (reply.status, reply.json()) == (404, {"detail": "item 42 not found"})
        reply = call(daemon, name, "/no/such/route")
        assert (reply.status, reply.json()) == (404, {"detail": "Not Found"})

    def post_model() -> None:
        reply = call(daemon, name, "/items", method="POST", headers=JSON,
                     body=json.dumps({"name": "saw", "price": 3, "tags": ["tools"]}).encode())
        assert reply.status == 201, reply.body
        created = reply.json()
        assert created["id"] >= 2
        assert {k: created[k] for k in ("name", "price", "tags")} == {
            "name": "saw", "price": 3.0, "tags": ["tools"]}

    def post_invalid() -> None:
        reply = call(daemon, name, "/items", method="POST", headers=JSON,
                     body=b'{"name": "", "tags": "x"}')
        assert reply.status == 422, reply.body
        errors = {(tuple(e["loc"]), e["type"]) for e in reply.json()["detail"]}
        assert errors == {(("body", "name"), "string_too_short"),
                          (("body", "price"), "missing"),
                          (("body", "tags"), "list_type")}, errors
        reply = call(daemon, name, "/items", method="POST", headers=JSON, body=b'{"name": ')
        assert reply.status == 422 and reply.json()["detail"][0]["type"] == "json_invalid"

    def cookies() -> None:
        reply = call(daemon, name, "/login?user=ann", method="POST")
        assert reply.status == 200 and reply.json() == {"logged_in": "ann"}, reply.body
        set_cookies = reply.cookies()
        assert set(set_cookies) == {"session", "theme"}, reply.headers
        assert set_cookies["session"].startswith("session=user-ann;")
        assert "HttpOnly" in set_cookies["session"]
        assert set_cookies["theme"].startswith("theme=dark;")
        sent = "; ".join(value.split(";", 1)[0] for value in set_cookies.values())
        reply = call(daemon, name, "/me", headers={"Cookie": sent})
        assert reply.status == 200 and reply.json() == {"session": "user-ann", "theme": "dark"}
        reply = call(daemon, name, "/me")
        assert (reply.status, reply.json()) == (401, {"detail": "no session cookie"})

    def binary() -> None:
        reply = call(daemon, name, "/pixel.png?size=8")
        assert reply.status == 200, reply.body
        assert reply.header("content-type") == "image/png"
        assert reply.header("content-length") == str(len(reply.body))
        width, height, raw = _png_pixels(reply.body)
        assert (width, height) == (8, 8)
        assert raw == (b"\x00" + b"\xff\x00\x00" * 8) * 8

    def async_route() -> None:
        reply = call(daemon, name, "/wait/50")
        assert (reply.status, reply.json()) == (200, {"waited_ms": 50})

    return [params, bad_params, not_found, post_model, post_invalid, cookies, binary,
            async_route]


def test_fastapi_mangum(daemon: PathDaemon, fastapi_app: str) -> None:
    reply = cold_call(daemon, fastapi_app, "/items/1?q=cold")
    assert reply.status == 200 and reply.json()["q"] == "cold", reply.body
    for case in _fastapi_cases(daemon, fastapi_app):
        case()


def test_fastapi_mangum_at_concurrency_8(daemon: PathDaemon, fastapi_c8: str) -> None:
    _await_cold(daemon, fastapi_c8)
    # A burst of 8 on a function with no instance: all wait for the same cold start, then
    # run at once in its one instance.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(lambda i: call(daemon, fastapi_c8, f"/wait/{300 + i}"),
                              range(8)))
    assert [(r.status, r.json()) for r in burst] == [
        (200, {"waited_ms": 300 + i}) for i in range(8)], [r.body for r in burst]
    starts = {r.header("lambda-cold-start") for r in burst}
    assert daemon.cold_path in starts and starts <= {daemon.cold_path, "warm"}, starts  # type: ignore[attr-defined]
    assert len(daemon.containers(fastapi_c8)) == 1
    # Then every case at once, twice over: 16 checks, 8 at a time, on the warm instance.
    cases = _fastapi_cases(daemon, fastapi_c8) * 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(case) for case in cases]:
            future.result()
    assert len(daemon.containers(fastapi_c8)) == 1


# Flask + apig-wsgi

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _multipart(fields: dict[str, str], boundary: str = "----lambda-test-7d1f") -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
             for key, value in fields.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def test_flask_apig_wsgi(daemon: PathDaemon, flask_app: str) -> None:
    page = cold_call(daemon, flask_app, "/")
    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
    assert b'<form method="post" action="/signup">' in page.body

    # A form post answers with a redirect that sets cookies; the browser follows it.
    reply = call(daemon, flask_app, "/signup", method="POST", headers=FORM,
                 body=b"name=Ann&email=ann%40example.org")
    assert reply.status == 303, reply.body
    assert reply.header("location") == "/welcome"
    cookies = reply.cookies()
    assert set(cookies) == {"user", "email"}, reply.headers
    assert cookies["user"].startswith("user=Ann;") and "HttpOnly" in cookies["user"]
    assert "SameSite=Lax" in cookies["user"]
    assert cookies["email"].startswith("email=ann@example.org;")
    jar = "; ".join(value.split(";", 1)[0] for value in cookies.values())
    welcome = call(daemon, flask_app, reply.header("location") or "", headers={"Cookie": jar})
    assert welcome.status == 200 and welcome.json() == {"welcome": "Ann",
                                                        "email": "ann@example.org"}

    # The same form as multipart: a body the gateway passes base64-encoded.
    reply = call(daemon, flask_app, "/signup", method="POST",
                 headers={"content-type": "multipart/form-data; boundary=----lambda-test-7d1f"},
                 body=_multipart({"name": "Zoë", "email": "zoe@example.org"}))
    assert reply.status == 303 and reply.header("location") == "/welcome", reply.body
    assert reply.cookies()["email"].startswith("email=zoe@example.org;")

    invalid = call(daemon, flask_app, "/signup", method="POST", headers=FORM,
                   body=b"name=&email=nope")
    assert invalid.status == 400
    assert invalid.json() == {"error": "name and a valid email are required"}

    anonymous = call(daemon, flask_app, "/welcome")
    assert (anonymous.status, anonymous.header("location")) == (302, "/")

    out = call(daemon, flask_app, "/logout", method="POST", headers={"Cookie": jar})
    assert (out.status, out.header("location")) == (303, "/")
    cleared = out.cookies()
    assert set(cleared) == {"user", "email"}
    assert all("Max-Age=0" in value for value in cleared.values()), cleared

    missing = call(daemon, flask_app, "/missing")
    assert missing.status == 404 and b"Not Found" in missing.body


# AWS Lambda Powertools


def _logger_lines(daemon: PathDaemon, name: str, request_id: str) -> list[dict[str, Any]]:
    """The Powertools Logger's JSON lines of one request, once its REPORT is in."""
    deadline = time.monotonic() + 20
    while True:
        result = daemon.cli("logs", name, "-o", "json", "--request-id", request_id)
        assert result.code == 0, result.stderr
        entries = [json.loads(line) for line in result.stdout.splitlines()]
        if any(str(e["message"]).startswith("REPORT ") for e in entries) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lines = []
    for entry in entries:
        if entry["stream"] == "stdout" and str(entry["message"]).startswith("{"):
            lines.append(json.loads(entry["message"]))
    return lines


def test_powertools(daemon: PathDaemon, powertools_app: str) -> None:
    first = cold_call(daemon, powertools_app, "/todos")
    assert first.status == 200, first.body
    assert first.json() == {"todos": [{"id": 1, "title": "deploy powertools", "done": False}]}

    assert call(daemon, powertools_app, "/todos/1").json()["title"] == "deploy powertools"
    missing = call(daemon, powertools_app, "/todos/99")
    assert (missing.status, missing.json()) == (
        404, {"statusCode": 404, "message": "todo 99 not found"})
    unrouted = call(daemon, powertools_app, "/nothing/here")
    assert unrouted.status == 404 and unrouted.json()["message"] == "Not found"

    # The body parsed into a pydantic model with Powertools' `parse`.
    created = call(daemon, powertools_app, "/todos", method="POST", headers=JSON,
                   body=b'{"title": "write docs"}')
    assert created.status == 201, created.body
    assert created.json() == {"id": 2, "title": "write docs", "done": False}
    invalid = call(daemon, powertools_app, "/todos", method="POST", headers=JSON,
                   body=b'{"done": "maybe"}')
    assert invalid.status == 400, invalid.body
    assert invalid.json()["message"].startswith("invalid todo:")
    listed = call(daemon, powertools_app, "/todos?done=false").json()["todos"]
    assert [t["id"] for t in listed] == [1, 2]

    # The whole event through LambdaFunctionUrlModel: the gateway's event validates.
    who = call(daemon, powertools_app, "/whoami?x=1",
               headers={"Cookie": "a=1; b=2", "User-Agent": "adapter-test/1.0"})
    assert who.status == 200, who.body
    event = who.json()
    assert event == {
        "method": "GET", "path": "/whoami", "source_ip": "127.0.0.1/32",
        "user_agent": "adapter-test/1.0", "request_id": who.header("lambda-request-id"),
        "domain": "powertools.localhost", "cookies": ["a=1", "b=2"]}

    # Logger.inject_lambda_context: each line carries the request's context; the first
    # request of the instance is its cold start, later ones are not.
    cold_id, warm_id = first.header("lambda-request-id"), who.header("lambda-request-id")
    assert cold_id and warm_id
    for request_id, cold_start in ((cold_id, True), (warm_id, False)):
        lines = _logger_lines(daemon, powertools_app, request_id)
        request_lines = [line for line in lines if line.get("message") == "request"]
        assert len(request_lines) == 1, lines
        line = request_lines[0]
        assert line["level"] == "INFO" and line["service"] == "todos"
        assert line["function_name"] == powertools_app
        assert line["function_request_id"] == request_id
        assert line["correlation_id"] == request_id  # requestContext.requestId
        assert line["function_memory_size"] == 256
        assert line["function_arn"].endswith(f":function:{powertools_app}")
        assert line["cold_start"] is cold_start, line
    created_id = created.header("lambda-request-id") or ""
    extra = [line for line in _logger_lines(daemon, powertools_app, created_id)
             if line.get("message") == "todo created"]
    assert extra and extra[0]["todo_id"] == 2 and extra[0]["function_request_id"] == created_id
