"""`lambdactl.main.main` end to end against an in-process fake daemon (no lambdad needed)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from lambdactl.main import main
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc

STARTED = pb.DeployProgress.STATE_STARTED
DONE = pb.DeployProgress.STATE_DONE


@dataclass
class Result:
    code: int
    out: str
    err: str


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str, stdin: io.StringIO | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=stdin or io.StringIO())
    return Result(code, out.getvalue(), err.getvalue())


def abort(context: Any, code: grpc.StatusCode, reason: str, message: str) -> None:
    context.set_trailing_metadata((("lambda-error-reason", reason),))
    context.abort(code, message)


@dataclass
class FakeDaemon(functions_pb2_grpc.FunctionServiceServicer):
    """Canned answers; records what the CLI sent."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    deploy_header: pb.DeployHeader | None = None
    deploy_code: bytes = b""
    chunk_sizes: list[int] = field(default_factory=list)
    build_fails: bool = False
    invoked: list[pb.InvokeRequest] = field(default_factory=list)
    functions: list[pb.Function] = field(default_factory=list)

    def _record(self, context: Any) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def Deploy(self, request_iterator: Iterator[pb.DeployRequest], context: Any) -> Any:
        self._record(context)
        for request in request_iterator:
            if request.HasField("header"):
                self.deploy_header = request.header
            else:
                self.chunk_sizes.append(len(request.chunk))
                self.deploy_code += request.chunk
        name = self.deploy_header.name if self.deploy_header else ""
        image = f"lambda-fn/{name}:v1"
        title = f'Building image "{image}"'
        yield pb.DeployResponse(
            progress=pb.DeployProgress(step=2, total_steps=3, title=title, state=STARTED)
        )
        yield pb.DeployResponse(build_output="Step 1/2 : FROM lambda-runtime/python:3.11")
        yield pb.DeployResponse(build_output="Step 2/2 : COPY . /var/task")
        if self.build_fails:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, "BuildFailed",
                  "image build failed\nStep 2/2 : COPY . /var/task\nno space left")  # fmt: skip
        yield pb.DeployResponse(
            progress=pb.DeployProgress(step=2, total_steps=3, title=title, state=DONE)
        )
        start = pb.DeployProgress(step=3, total_steps=3, title="Starting instance (stem cell)",
                                  state=STARTED)
        yield pb.DeployResponse(progress=start)
        start.state = pb.DeployProgress.STATE_DONE
        yield pb.DeployResponse(progress=start)
        url = f"http://{name}.localhost:8080"
        yield pb.DeployResponse(result=pb.DeployResult(name=name, version=1, image=image, url=url))

    def Invoke(self, request: pb.InvokeRequest, context: Any) -> pb.InvokeResponse:
        self._record(context)
        self.invoked.append(request)
        if request.name == "missing":
            abort(context, grpc.StatusCode.NOT_FOUND, "NotFound", 'function "missing" not found')
        if request.name == "slow":
            abort(
                context, grpc.StatusCode.DEADLINE_EXCEEDED, "FunctionTimeout", "timed out after 3s"
            )
        if request.name == "nested":  # a hostile function's reply
            return pb.InvokeResponse(status_code=200, payload=b"[" * 200_000, request_id="r-3")
        if request.name == "boom":
            body = {"errorMessage": "division by zero", "errorType": "ZeroDivisionError"}
            return pb.InvokeResponse(status_code=500, payload=json.dumps(body).encode(),
                                     function_error="Unhandled", request_id="r-2")  # fmt: skip
        return pb.InvokeResponse(status_code=200, payload=request.payload, request_id="r-1",
                                 executed_version=4, cold_start=True)  # fmt: skip

    def ListFunctions(self, request: pb.ListFunctionsRequest, context: Any) -> Any:
        self._record(context)
        return pb.ListFunctionsResponse(functions=self.functions)

    def GetFunction(self, request: pb.GetFunctionRequest, context: Any) -> pb.Function:
        self._record(context)
        for fn in self.functions:
            if fn.name == request.name:
                if request.show_env:
                    return fn
                masked = pb.Function()
                masked.CopyFrom(fn)
                for key in list(masked.config.env):
                    masked.config.env[key] = "****"  # as lambdad does
                return masked
        abort(
            context, grpc.StatusCode.NOT_FOUND, "NotFound", f'function "{request.name}" not found'
        )
        raise AssertionError

    def DeleteFunction(self, request: pb.DeleteFunctionRequest, context: Any) -> Any:
        self._record(context)
        return pb.DeleteFunctionResponse(name=request.name, versions_removed=2, instances_removed=1)


def greet(**overrides: Any) -> pb.Function:
    fn = pb.Function(
        name="greet", version=2, status=pb.FUNCTION_STATUS_READY,
        url="http://greet.localhost:8080", image="lambda-fn/greet:v2",
        config=pb.FunctionConfig(runtime="python3.11", handler="handler.handler",
                                 timeout_seconds=30, memory_mb=128, network="none",
                                 env={"GREETING": "hello", "API_TOKEN": "secret"}),
        code_sha256="ab" * 32, code_size=2048,
    )  # fmt: skip
    fn.deployed_at.FromSeconds(1_700_000_000)
    for key, value in overrides.items():
        setattr(fn, key, value)
    return fn


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    fake = FakeDaemon()
    folder = tempfile.mkdtemp(prefix="lctl", dir="/tmp")  # unix socket paths must be short
    sock = f"{folder}/d.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    functions_pb2_grpc.add_FunctionServiceServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    monkeypatch.setenv("LAMBDA_HOST", f"unix://{sock}")
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    monkeypatch.delenv("LAMBDA_API_KEY_FILE", raising=False)
    yield fake
    server.stop(None)
    shutil.rmtree(folder)


@pytest.fixture
def tcp_daemon(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    functions_pb2_grpc.add_FunctionServiceServicer_to_server(daemon, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("LAMBDA_HOST", f"127.0.0.1:{port}")
    yield daemon
    server.stop(None)


@pytest.fixture
def fn_dir(tmp_path: Path) -> Path:
    root = tmp_path / "greet"
    root.mkdir()
    (root / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (root / "big.bin").write_bytes(os.urandom(200 * 1024))  # several 64 KiB chunks
    (root / ".lambdaignore").write_text("*.log\n")
    (root / "debug.log").write_text("x")
    return root


# -- unreachable daemon ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["list"], ["get", "f"], ["delete", "f"], ["invoke", "f"], ["-o", "json", "list"]],
)
def test_unreachable_daemon_is_exit_69_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMBDA_HOST", "unix:///tmp/lambdactl-test-nonexistent.sock")
    result = run(*argv)
    assert result.code == 69
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith(
        "error: lambdad is not running: no socket at /tmp/lambdactl-test-nonexistent.sock;"
    )
    assert "Traceback" not in result.err


def test_deploy_unreachable_fails_before_packaging(
    fn_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMBDA_HOST", "unix:///tmp/lambdactl-test-nonexistent.sock")
    result = run("deploy", str(fn_dir))
    assert result.code == 69 and result.err.startswith("error: lambdad is not running")
    assert "[1/3]" not in result.err


def test_stale_socket_is_exit_69(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    folder = tempfile.mkdtemp(prefix="lctl", dir="/tmp")
    try:
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(f"{folder}/s.sock")  # bound but never listening: connection refused
        monkeypatch.setenv("LAMBDA_HOST", f"unix://{folder}/s.sock")
        result = run("list")
        stale.close()
    finally:
        shutil.rmtree(folder)
    assert result.code == 69
    assert result.err.startswith(f"error: cannot reach lambdad at unix://{folder}/s.sock: ")
    assert result.err.count("\n") == 1


def test_python_dash_m_works_as_a_subprocess(tmp_path: Path) -> None:
    env = {"LAMBDA_HOST": f"unix://{tmp_path}/none.sock", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "lambdactl", "list"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 69, proc.stderr
    assert proc.stdout == "" and proc.stderr.startswith("error: lambdad is not running")
    # The program ends with os._exit (no interpreter teardown): what it printed to a pipe
    # is flushed first.
    shown = subprocess.run([sys.executable, "-m", "lambdactl", "--version"], env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith("lambdactl "), shown


# -- deploy -----------------------------------------------------------------------------


def test_deploy_output_and_request_stream(daemon: FakeDaemon, fn_dir: Path) -> None:
    result = run("deploy", str(fn_dir), "--env", "A=1", "--timeout", "9", "--memory", "64")
    assert result.code == 0, result.err
    assert result.out == ""
    assert result.err == (
        "[1/3] Packaging function code... Done.\n"
        '[2/3] Building image "lambda-fn/greet:v1"...\n'
        " Step 1/2 : FROM lambda-runtime/python:3.11\n"
        " Step 2/2 : COPY . /var/task\n"
        "[3/3] Starting instance (stem cell)... Done.\n"
        "Your function is live at: http://greet.localhost:8080\n"
    )
    header = daemon.deploy_header
    assert header is not None
    assert header.name == "greet"
    assert header.size == len(daemon.deploy_code)
    assert header.sha256 == hashlib.sha256(daemon.deploy_code).hexdigest()
    assert dict(header.overrides.env) == {"A": "1"}
    assert header.overrides.timeout_seconds == 9 and header.overrides.memory_mb == 64
    assert not header.overrides.HasField("handler") and not header.overrides.HasField("network")
    assert max(daemon.chunk_sizes) == 64 * 1024 and len(daemon.chunk_sizes) > 1
    with tarfile.open(fileobj=io.BytesIO(daemon.deploy_code), mode="r:gz") as tar:
        assert tar.getnames() == [".lambdaignore", "big.bin", "handler.py"]
    assert "authorization" not in daemon.metadata[0]  # the Unix socket needs no key


def test_deploy_json_and_name_flag(daemon: FakeDaemon, fn_dir: Path) -> None:
    result = run("deploy", str(fn_dir), "--name", "hello", "-o", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "name": "hello", "version": 1, "image": "lambda-fn/hello:v1",
        "url": "http://hello.localhost:8080",
    }  # fmt: skip
    assert "Your function is live at: http://hello.localhost:8080" in result.err


def test_deploy_build_failure_is_exit_6(daemon: FakeDaemon, fn_dir: Path) -> None:
    daemon.build_fails = True
    result = run("deploy", str(fn_dir))
    assert result.code == 6
    lines = result.err.splitlines()
    assert lines[-1] == "error: image build failed"  # the build lines were already shown
    assert " Step 2/2 : COPY . /var/task" in lines
    assert "Traceback" not in result.err


def test_deploy_bad_folder_is_exit_5(daemon: FakeDaemon, tmp_path: Path) -> None:
    result = run("deploy", str(tmp_path / "nope"))
    assert result.code == 5 and result.err == f"error: {tmp_path / 'nope'} is not a folder\n"


# -- invoke -----------------------------------------------------------------------------


def test_invoke_prints_raw_payload(daemon: FakeDaemon) -> None:
    result = run("invoke", "greet", "--data", '{"name": "Ada"}')
    assert result == Result(0, '{"name": "Ada"}\n', "")
    assert daemon.invoked[-1].payload == b'{"name": "Ada"}'
    assert run("invoke", "greet").out == "{}\n"


def test_invoke_data_file_and_stdin(daemon: FakeDaemon, tmp_path: Path) -> None:
    data = tmp_path / "event.json"
    data.write_text("[1, 2]")
    assert run("invoke", "greet", "--data-file", str(data)).out == "[1, 2]\n"
    assert run("invoke", "greet", "--data-file", "-", stdin=io.StringIO('"hi"')).out == '"hi"\n'
    missing = run("invoke", "greet", "--data-file", str(tmp_path / "none.json"))
    assert missing.code == 5 and missing.err.startswith("error: cannot read ")


def test_invoke_invalid_json_is_exit_5_before_sending(daemon: FakeDaemon) -> None:
    result = run("invoke", "greet", "--data", "{nope")
    assert result.code == 5
    assert result.err.startswith("error: --data must be JSON")
    assert daemon.invoked == []


def test_invoke_deeply_nested_json_is_exit_5_not_a_traceback(daemon: FakeDaemon) -> None:
    """200,000 `[` made json.loads raise RecursionError, which nothing caught."""
    result = run("invoke", "greet", "--data", "[" * 200_000)
    assert result.code == 5 and daemon.invoked == []
    assert result.err.startswith("error: --data must be JSON: it is nested too deeply")
    result = run("schedule", "greet", "--cron", "* * * * *", "--data", "[" * 200_000)
    assert result.code == 5 and "nested too deeply" in result.err


def test_a_deeply_nested_reply_is_shown_as_text(daemon: FakeDaemon) -> None:
    result = run("-o", "json", "invoke", "nested")
    assert result.code == 0, result.err
    assert json.loads(result.out)["payload"] == "[" * 200_000


def test_invoke_function_error_is_exit_1(daemon: FakeDaemon) -> None:
    result = run("invoke", "boom")
    assert result.code == 1
    assert json.loads(result.out)["errorType"] == "ZeroDivisionError"
    assert result.err == "error: function raised ZeroDivisionError: division by zero\n"


def test_invoke_json_envelope(daemon: FakeDaemon) -> None:
    result = run("-o", "json", "invoke", "greet", "--data", '{"a": 1}')
    assert json.loads(result.out) == {
        "function": "greet", "version": 4, "request_id": "r-1", "status_code": 200,
        "payload": {"a": 1}, "function_error": None, "cold_start": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("missing", 4, 'error: function "missing" not found\n'),
        ("slow", 9, "error: timed out after 3s\n"),
    ],
)
def test_invoke_daemon_errors(daemon: FakeDaemon, name: str, code: int, message: str) -> None:
    assert run("invoke", name) == Result(code, "", message)


# -- list / get / delete ------------------------------------------------------------------


def test_list_empty(daemon: FakeDaemon) -> None:
    assert run("list") == Result(0, "", "No functions deployed.\n")
    assert run("list", "-o", "json") == Result(0, "[]\n", "")


def test_list_table(daemon: FakeDaemon) -> None:
    idle = greet(name="aaa", status=pb.FUNCTION_STATUS_IDLE, url="http://aaa.localhost:8080")
    daemon.functions = [greet(), idle]
    result = run("list")
    assert result.code == 0 and result.err == ""
    lines = [line.rstrip() for line in result.out.splitlines()]
    assert lines[0].split() == ["NAME", "VERSION", "STATUS", "URL", "DEPLOYED", "AT"]
    assert lines[1].split()[:4] == ["aaa", "2", "idle", "http://aaa.localhost:8080"]
    assert lines[2].split()[:4] == ["greet", "2", "ready", "http://greet.localhost:8080"]
    assert len(lines) == 3


def test_list_json(daemon: FakeDaemon) -> None:
    daemon.functions = [greet()]
    result = run("-o", "json", "list")
    assert json.loads(result.out) == [
        {
            "name": "greet", "version": 2, "status": "ready",
            "url": "http://greet.localhost:8080", "deployed_at": "2023-11-14T22:13:20Z",
            "image": "lambda-fn/greet:v2",
        }
    ]  # fmt: skip


def test_get_masks_env_values(daemon: FakeDaemon) -> None:
    daemon.functions = [greet()]
    result = run("get", "greet")
    assert result.code == 0
    assert "secret" not in result.out and "hello" not in result.out
    assert "API_TOKEN=****, GREETING=****" in result.out
    for expected in ("python3.11", "handler.handler", "30s", "128 MiB", "ab" * 32, "2.0 KiB"):
        assert expected in result.out
    as_json = json.loads(run("get", "greet", "-o", "json").out)
    assert as_json["config"]["env"] == {"API_TOKEN": "****", "GREETING": "****"}
    assert as_json["code_size_bytes"] == 2048
    assert as_json["config"]["timeout_ms"] == 30_000.0
    assert as_json["config"]["memory_bytes"] == 128 * 1024 * 1024
    shown = run("get", "greet", "--show-env")
    assert "API_TOKEN=secret" in shown.out


def test_get_missing_is_exit_4(daemon: FakeDaemon) -> None:
    assert run("get", "nope") == Result(4, "", 'error: function "nope" not found\n')


def test_delete_without_a_tty_does_not_ask(daemon: FakeDaemon) -> None:
    result = run("delete", "greet")
    assert result == Result(0, "", 'Deleted function "greet" (2 versions, 1 instance).\n')
    assert json.loads(run("delete", "greet", "-o", "json").out) == {
        "name": "greet", "versions_removed": 2, "instances_removed": 1,
    }  # fmt: skip


def test_delete_on_a_tty_asks(daemon: FakeDaemon) -> None:
    out, err = io.StringIO(), TtyIO()
    code = main(["delete", "greet"], stdout=out, stderr=err, stdin=TtyIO("n\n"))
    assert code == 1 and "[y/N]" in err.getvalue() and "aborted" in err.getvalue()
    assert daemon.metadata == []
    code = main(["delete", "greet"], stdout=out, stderr=TtyIO(), stdin=TtyIO("y\n"))
    assert code == 0 and len(daemon.metadata) == 1
    code = main(["delete", "greet", "--yes"], stdout=out, stderr=TtyIO(), stdin=TtyIO(""))
    assert code == 0 and len(daemon.metadata) == 2


# -- TCP and auth ------------------------------------------------------------------------


def test_tcp_sends_the_bearer_key(tcp_daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "k-123")
    assert run("list").code == 0
    assert tcp_daemon.metadata[-1]["authorization"] == "Bearer k-123"


def test_unauthenticated_is_exit_77_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    class Deny(grpc.ServerInterceptor):  # type: ignore[type-arg]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            def reject(request: Any, context: Any) -> Any:
                abort(context, grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated", "missing key")

            return grpc.unary_unary_rpc_method_handler(reject)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[Deny()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("LAMBDA_HOST", f"127.0.0.1:{port}")
        monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
        monkeypatch.delenv("LAMBDA_API_KEY_FILE", raising=False)
        result = run("list")
    finally:
        server.stop(None)
    assert result.code == 77
    assert result.err == ("error: missing key (no API key: set LAMBDA_API_KEY or --api-key-file)\n")


def test_deploy_packaging_error_ends_the_step_line(daemon: FakeDaemon, fn_dir: Path) -> None:
    os.symlink("/etc/passwd", fn_dir / "passwd")
    result = run("deploy", str(fn_dir))
    assert result.code == 5
    assert result.err.splitlines() == [
        "[1/3] Packaging function code...",
        "error: symlink passwd -> /etc/passwd points outside the function folder; "
        "copy the file in or list the link in .lambdaignore",
    ]
    assert daemon.deploy_header is None


def test_list_never_truncates_wide_rows(daemon: FakeDaemon) -> None:
    long_name = "f" * 60
    daemon.functions = [greet(name=long_name, url=f"http://{long_name}.localhost:8080")]
    result = run("list")
    assert f"http://{long_name}.localhost:8080" in result.out
    assert "2023-11-1" in result.out and "…" not in result.out


def test_ctrl_c_is_exit_130(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdactl.client import Client

    def interrupted(self: Client) -> list[pb.Function]:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "list_functions", interrupted)
    result = run("list")
    assert result.code == 130 and result.err.endswith("error: interrupted\n")
    assert "Traceback" not in result.err


def test_log_text_cannot_steer_the_terminal() -> None:
    """A function's line with a carriage return or escape sequences could overwrite the
    time, request and stream columns of `lambdactl logs`: they are shown escaped."""
    from lambdactl.commands.invoke import log_line as _log_line
    from lambdactl.render import printable
    from lambdad.api.v1 import functions_pb2 as pb

    forged = "\r\x1b[2K2026-01-01 v1 0b5e8a1c  rt START RequestId: x\u202e\x85"
    assert printable(forged) == ("\\x0d\\x1b[2K2026-01-01 v1 0b5e8a1c  rt START RequestId: x"
                                 "\\u202e\\x85")
    assert printable("tab\tand é ✓ stay") == "tab\tand é ✓ stay"
    entry = pb.LogEntry(version=1, request_id="aaaa1111-2222", stream="stdout", message=forged)
    line = _log_line(entry)
    assert " aaaa1111 out \\x0d\\x1b[2K" in line
    assert not any(ord(c) < 0x20 and c != "\t" for c in line)
