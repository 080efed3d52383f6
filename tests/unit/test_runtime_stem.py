"""The runtime as a stem cell: up and listening with no code, specialized by POST /init.

Runs the real runtime as a subprocess, as tests/unit/test_runtime_server.py does; the code
and dependencies are placed in folders that are already on its path after it started, as
the daemon places a version's artifact in a running cell.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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

APP = textwrap.dedent(
    """
    import os
    import helper  # from the deps folder, placed after the cell started

    GREETING = os.environ.get("GREETING", "unset at import")

    def handler(event, context):
        print("handling", event)
        return {"greeting": GREETING, "shout": helper.shout("hi"),
                "function": context.function_name, "version": context.function_version,
                "memory": context.memory_limit_in_mb, "cwd": os.getcwd()}
    """
)


@dataclass
class Cell:
    proc: subprocess.Popen[bytes]
    folder: Path
    sock_path: str

    def post(self, path: str, body: object, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, object]]:
        conn = UnixHTTPConnection(self.sock_path, timeout=5)
        try:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request("POST", path, body=data, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def place(self, app: str = APP) -> None:
        (self.folder / "task" / "app.py").write_text(app)
        (self.folder / "deps" / "helper.py").write_text(
            "def shout(text):\n    return text.upper() + '!'\n")

    def init(self, handler: str = "app.handler", **env: str) -> tuple[int, dict[str, object]]:
        return self.post("/init", {
            "handler": handler, "task_root": str(self.folder / "task"),
            "env": {"AWS_LAMBDA_FUNCTION_NAME": "late", "AWS_LAMBDA_FUNCTION_VERSION": "7",
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", **env},
        })

    def stop(self, *, expect_exit: bool = False) -> tuple[int, str, str]:
        if expect_exit:  # it exits by itself; a SIGTERM now would race with that exit
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=5)
        return self.proc.returncode, out.decode(), err.decode()


@pytest.fixture
def cell() -> Iterator[Cell]:
    folder = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    for sub in ("task", "deps"):
        (folder / sub).mkdir()
    sock_path = str(folder / "s.sock")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{RUNTIME_DIR}:{folder / 'deps'}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_STEM_CELL": "1",
        "LAMBDA_SOCKET": sock_path,
    }
    proc = subprocess.Popen([sys.executable, "-m", "lambda_runtime"], env=env, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 5
    while not os.path.exists(sock_path):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.01)
    yield Cell(proc, folder, sock_path)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
    shutil.rmtree(folder, ignore_errors=True)


def test_requests_before_init_are_refused_and_the_cell_stays_generic(cell: Cell) -> None:
    status, body = cell.post("/", {"x": 1}, {"Lambda-Invocation-Type": "direct"})
    assert status == 503 and body["errorType"] == "Runtime.NotInitialized"
    status, body = cell.post("/init", b"not json")
    assert status == 400 and body["errorType"] == "Runtime.InvalidPayload"
    status, body = cell.post("/init", {"handler": 3, "task_root": "/", "env": {}})
    assert status == 400
    assert cell.proc.poll() is None
    # Still specializable after the refusals.
    cell.place()
    status, body = cell.init(GREETING="hello")
    assert status == 200, body


def test_init_sets_env_before_import_and_serves_as_the_function(cell: Cell) -> None:
    cell.place()
    status, body = cell.init(GREETING="set before import")
    assert status == 200 and isinstance(body["initDurationMs"], float)
    headers = {"Lambda-Invocation-Type": "direct", "Lambda-Request-Id": "req-1",
               "Lambda-Start": "cell"}
    status, result = cell.post("/", {"n": 1}, headers)
    assert status == 200
    assert result == {"greeting": "set before import", "shout": "HI!", "function": "late",
                      "version": "7", "memory": 256, "cwd": str(cell.folder / "task")}
    # After init, /init is just a path the function serves.
    status, again = cell.post("/init", {"n": 2}, {"Lambda-Invocation-Type": "direct",
                                                  "Lambda-Request-Id": "req-2"})
    assert status == 200 and again["function"] == "late"
    _, out, _ = cell.stop()
    assert "START RequestId: req-1 Version: 7" in out
    lines = out.splitlines()
    first_report = next(line for line in lines if line.startswith("REPORT RequestId: req-1"))
    assert "\tInit Duration: " in first_report and first_report.endswith("\tStart: cell")
    second = next(line for line in lines if line.startswith("REPORT RequestId: req-2"))
    assert "Init Duration" not in second and "Start:" not in second
    assert "req-1\thandling {'n': 1}" in out


@pytest.mark.parametrize(
    ("app", "handler", "error_type", "in_log"),
    [
        ("def handler(event, context):\n    return (\n", "app.handler",
         "Runtime.UserCodeSyntaxError", "SyntaxError"),
        ("raise RuntimeError('no config')\n", "app.handler", "Runtime.ImportModuleError",
         "RuntimeError: no config"),
        ("x = 1\n", "app.handler", "Runtime.HandlerNotFound", "missing on module 'app'"),
        ("x = 1\n", "nodots", "Runtime.MalformedHandlerName", "Bad handler 'nodots'"),
    ],
)
def test_init_errors_answer_502_log_the_traceback_and_end_the_cell(
    cell: Cell, app: str, handler: str, error_type: str, in_log: str
) -> None:
    cell.place(app)
    status, body = cell.init(handler)
    assert status == 502
    assert body["errorType"] == error_type and isinstance(body["initDurationMs"], float)
    code, _, err = cell.stop(expect_exit=True)
    assert code == 1  # a failed cell exits by itself; it is never reused
    assert in_log in err
    assert "INIT_REPORT Init Duration: " in err
    assert f"Status: error\tError Type: {error_type}" in err


def test_the_socket_is_up_before_any_function_code_runs(cell: Cell) -> None:
    """The daemon's contract for cells and container starts alike: the socket appears first,
    the function's code runs only at POST /init, with its environment already set."""
    mark = cell.folder / "imported"
    cell.place("import os\nprint('loaded with', os.environ['MARK'].rsplit('/', 1)[-1])\n"
               "open(os.environ['MARK'], 'w').close()\n\n"
               "def handler(event, context):\n    return os.getpid()\n")
    time.sleep(0.2)
    assert os.path.exists(cell.sock_path) and not mark.exists()
    status, _ = cell.init(MARK=str(mark))
    assert status == 200 and mark.exists()
    status, pid = cell.post("/", {}, {"Lambda-Invocation-Type": "direct",
                                       "Lambda-Request-Id": "req-1"})
    assert status == 200 and pid != cell.proc.pid  # served by a worker, not the supervisor
    _, out, _ = cell.stop()
    assert "\tloaded with imported\n" in out  # import output belongs to no request
    assert out.index("\tloaded with imported\n") < out.index("START RequestId: req-1 ")


def test_many_pipelined_requests_answered_at_once_are_all_answered(cell: Cell) -> None:
    """Answers that need no worker (not initialized yet) follow one another on one
    connection without piling up in the runtime."""
    import socket

    count = 1500
    request = b"POST / HTTP/1.1\r\nLambda-Invocation-Type: direct\r\nContent-Length: 2\r\n\r\n{}"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(cell.sock_path)
        s.sendall(request * (count - 1) + request.replace(b"HTTP/1.1\r\n",
                                                          b"HTTP/1.1\r\nConnection: close\r\n"))
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 503 ") == count
    assert cell.proc.poll() is None
    cell.place()
    assert cell.init()[0] == 200  # and it still loads the function afterwards
