"""Log framing of the real runtime: START/END/REPORT and request-id-tagged handler lines."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.support.unixhttp import UnixHTTPConnection

RUNTIME_DIR = Path(__file__).parents[2] / "packaging" / "runtime" / "python"
LINES = 150  # per concurrent invocation and stream

HANDLER_CODE = textwrap.dedent(
    """
    import logging
    import sys
    import threading
    import time
    import traceback

    print("importing app")
    both = threading.Barrier(2, timeout=5)

    def handler(event, context):
        op = event.get("op")
        rid = context.aws_request_id
        if op == "print":
            print("hello from", rid)
            print("two\\nlines")
            sys.stdout.write("held ")
            sys.stdout.flush()  # must not split the line
            print("together")
            sys.stderr.write("err line\\n")
            sys.stdout.write("no newline at the end")
        elif op == "log":
            logging.getLogger().warning("careful %s", rid)
        elif op == "many":
            both.wait()  # both invocations are running at once from here on
            for i in range(event["n"]):
                print(rid, i, "x" * (i % 50), "end")  # several writes per line
                sys.stderr.write(f"{rid} ")
                sys.stderr.write(f"{i} err\\n")
                if i % 10 == 0:
                    time.sleep(0.001)
        elif op == "raise":
            raise ValueError("boom")
        elif op == "print_exc":
            try:
                {}["missing"]
            except KeyError:
                traceback.print_exc()
        elif op == "exit":
            print("bye")
            sys.exit(3)
        return {"ok": rid}
    """
)


class Pipe:
    """Collects a pipe's lines on a thread, so the test can wait for them."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[bytes] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> list[str]:
        return [line.decode() for line in self.lines]

    def wait(self, pred: Callable[[list[str]], bool], timeout: float = 5) -> list[str]:
        deadline = time.monotonic() + timeout
        while not pred(self.text()):
            assert time.monotonic() < deadline, f"timed out; lines so far: {self.text()!r}"
            time.sleep(0.005)
        return self.text()


class Runtime:
    def __init__(self, workdir: Path, version: str | None = "7") -> None:
        self.sock_path = str(workdir / "s.sock")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(RUNTIME_DIR),
            "PYTHONDONTWRITEBYTECODE": "1",
            "_HANDLER": "app.handler",
            "AWS_LAMBDA_FUNCTION_NAME": "logs",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "192",
            "LAMBDA_SOCKET": self.sock_path,
            "LAMBDA_TASK_ROOT": str(workdir),
        }
        if version is not None:
            env["AWS_LAMBDA_FUNCTION_VERSION"] = version
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lambda_runtime"],
            env=env,
            cwd=str(workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Pipe(self.proc.stdout)
        self.err = Pipe(self.proc.stderr)
        deadline = time.monotonic() + 5
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"runtime did not start: {self.err.text()}")
            time.sleep(0.01)

    def invoke(self, rid: str, payload: dict[str, object]) -> tuple[int, object]:
        conn = UnixHTTPConnection(self.sock_path)
        try:
            headers = {"Lambda-Invocation-Type": "direct", "Lambda-Request-Id": rid}
            conn.request("POST", "/", body=json.dumps(payload).encode(), headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.thread.join(timeout=3)
        self.err.thread.join(timeout=3)
        return self.proc.returncode


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))  # AF_UNIX paths are limited to ~108 bytes
    (d / "app.py").write_text(HANDLER_CODE)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def runtime(workdir: Path) -> Iterator[Runtime]:
    rt = Runtime(workdir)
    yield rt
    rt.stop()


REPORT_RE = re.compile(
    r"REPORT RequestId: (?P<rid>[^\t]+)\tDuration: (?P<ms>\d+\.\d\d) ms"
    r"\tBilled Duration: (?P<billed>\d+) ms\tMemory Size: 192 MB"
    r"\tMax Memory Used: (?P<mem>\d+) MB(?:\tInit Duration: (?P<init>\d+\.\d\d) ms)?\n"
)


def has_report(rid: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(line.startswith(f"REPORT RequestId: {rid}\t") for line in lines)


def frame(lines: list[str], rid: str) -> list[str]:
    """The lines from START to REPORT of `rid`, both included."""
    start = lines.index(f"START RequestId: {rid} Version: 7\n")
    end = next(i for i, line in enumerate(lines) if line.startswith(f"REPORT RequestId: {rid}\t"))
    assert start < end
    return lines[start : end + 1]


def test_start_end_report_around_handler_output(runtime: Runtime) -> None:
    assert runtime.invoke("req-1", {"op": "print"}) == (200, {"ok": "req-1"})
    out = runtime.out.wait(has_report("req-1"))
    assert out[0] == "importing app\n"  # import-time output is not tagged
    lines = frame(out, "req-1")
    assert lines[:-1] == [
        "START RequestId: req-1 Version: 7\n",
        "req-1\thello from req-1\n",
        "req-1\ttwo\n",
        "req-1\tlines\n",
        "req-1\theld together\n",
        "req-1\tno newline at the end\n",  # the partial line is ended with the invocation
        "END RequestId: req-1\n",
    ]
    match = REPORT_RE.fullmatch(lines[-1])
    assert match, lines[-1]
    assert match["rid"] == "req-1"
    ms = float(match["ms"])
    assert 0 < ms < 5000
    assert ms <= int(match["billed"]) < ms + 1.01  # rounded up to whole milliseconds
    assert 5 < int(match["mem"]) < 1000
    assert runtime.err.wait(lambda lines: "req-1\terr line\n" in lines)


def test_version_defaults_to_latest(workdir: Path) -> None:
    rt = Runtime(workdir, version=None)
    try:
        rt.invoke("req-v", {})
        out = rt.out.wait(has_report("req-v"))
        assert "START RequestId: req-v Version: $LATEST\n" in out
    finally:
        rt.stop()


def test_logging_warning_is_tagged_on_stderr(runtime: Runtime) -> None:
    runtime.invoke("req-log", {"op": "log"})
    runtime.out.wait(has_report("req-log"))
    err = runtime.err.wait(lambda lines: len(lines) >= 1)
    assert err == ["req-log\tcareful req-log\n"]


def test_init_duration_on_first_report_only(runtime: Runtime) -> None:
    runtime.invoke("first", {})
    runtime.invoke("second", {})
    runtime.invoke("third", {})
    out = runtime.out.wait(has_report("third"))
    reports = [m for line in out if (m := REPORT_RE.fullmatch(line))]
    assert [m["rid"] for m in reports] == ["first", "second", "third"]
    assert reports[0]["init"] is not None
    assert 0 < float(reports[0]["init"]) < 5000
    assert reports[1]["init"] is None
    assert reports[2]["init"] is None
    for rid in ("first", "second", "third"):  # the frames follow one another in order
        assert frame(out, rid)[-2] == f"END RequestId: {rid}\n"


def test_concurrent_invocations_keep_their_lines(runtime: Runtime) -> None:
    rids = ["aaaaaaaa-1111", "bbbbbbbb-2222"]
    results: dict[str, object] = {}

    def call(rid: str) -> None:
        results[rid] = runtime.invoke(rid, {"op": "many", "n": LINES})

    threads = [threading.Thread(target=call, args=(rid,)) for rid in rids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert results == {rid: (200, {"ok": rid}) for rid in rids}
    out = runtime.out.wait(lambda lines: all(has_report(r)(lines) for r in rids))
    err = runtime.err.wait(lambda lines: len(lines) >= 2 * LINES)

    out_re = re.compile(r"(?P<tag>[^\t]+)\t(?P<rid>\S+) (?P<i>\d+) x* end\n")
    err_re = re.compile(r"(?P<tag>[^\t]+)\t(?P<rid>\S+) (?P<i>\d+) err\n")
    for lines, pattern in ((out, out_re), (err, err_re)):
        seen: dict[str, list[int]] = {rid: [] for rid in rids}
        for line in lines:
            if line.startswith(("START ", "END ", "REPORT ", "importing app")):
                continue
            m = pattern.fullmatch(line)
            assert m, f"broken or foreign line {line!r}"
            assert m["tag"] == m["rid"], line
            seen[m["rid"]].append(int(m["i"]))
        assert seen == {rid: list(range(LINES)) for rid in rids}
    # They really overlapped: the second START comes before the first END.
    starts = [i for i, line in enumerate(out) if line.startswith("START ")]
    ends = [i for i, line in enumerate(out) if line.startswith("END ")]
    assert max(starts) < min(ends)


def test_handler_exception_traceback_is_tagged(runtime: Runtime) -> None:
    status, body = runtime.invoke("req-err", {"op": "raise"})
    assert status == 500
    assert body == {"errorMessage": "boom", "errorType": "ValueError"}
    out = runtime.out.wait(has_report("req-err"))
    assert frame(out, "req-err")[-2] == "END RequestId: req-err\n"
    err = runtime.err.wait(lambda lines: "req-err\tValueError: boom\n" in lines)
    assert err[0] == "req-err\t[ERROR] ValueError: boom\n"
    assert "req-err\tTraceback (most recent call last):\n" in err
    assert any(line.startswith('req-err\t  File "') and "app.py" in line for line in err)
    assert all(line.startswith("req-err\t") for line in err), err


def test_print_exc_in_handler_is_tagged(runtime: Runtime) -> None:
    assert runtime.invoke("req-pe", {"op": "print_exc"}) == (200, {"ok": "req-pe"})
    runtime.out.wait(has_report("req-pe"))
    err = runtime.err.wait(lambda lines: "req-pe\tKeyError: 'missing'\n" in lines)
    assert err[0] == "req-pe\tTraceback (most recent call last):\n"
    assert all(line.startswith("req-pe\t") for line in err), err


def test_sys_exit_still_reports(runtime: Runtime) -> None:
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        runtime.invoke("req-exit", {"op": "exit"})
    assert runtime.stop() == 3
    out = runtime.out.text()
    assert frame(out, "req-exit")[1:-1] == ["req-exit\tbye\n", "END RequestId: req-exit\n"]
    assert runtime.err.text() == ["req-exit\t[ERROR] handler exited with code 3\n"]


def test_import_failure_lines_are_untagged(workdir: Path) -> None:
    (workdir / "app.py").write_text("print('about to fail')\nraise RuntimeError('nope')\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(RUNTIME_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "_HANDLER": "app.handler",
        "LAMBDA_SOCKET": str(workdir / "s.sock"),
        "LAMBDA_TASK_ROOT": str(workdir),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "lambda_runtime"], env=env, capture_output=True, timeout=10
    )
    assert proc.returncode == 1
    assert proc.stdout == b"about to fail\n"
    err = proc.stderr.decode().splitlines()
    assert err[0] == "Runtime.ImportModuleError: Unable to import module 'app': nope"
    assert err[-2] == "RuntimeError: nope"
    assert err[-1].startswith("INIT_REPORT Init Duration: ")
