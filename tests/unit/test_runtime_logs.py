"""The runtime's log channel: the supervisor's tagging in memory, then the real runtime.

The real runtime runs as a subprocess (supervisor, zygote, workers); its stdout and stderr
are what Docker would capture. Each line is checked with lambdad's own parser: frames only
where the supervisor wrote them, and a function's text only under the request whose worker
wrote it, whatever the text says.
"""

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

from lambdad.logs.entry import parse_line
from tests.support.unixhttp import UnixHTTPConnection

RUNTIME_DIR = Path(__file__).parents[2] / "packaging" / "runtime" / "python"
sys.path.insert(0, str(RUNTIME_DIR))

from lambda_runtime import logs  # noqa: E402

LINES = 150  # per concurrent invocation and stream
FORGED_ID = "0b5e8a1c-3f2d-4c1e-9a7b-123456789abc"
FORGERIES = [
    f"START RequestId: {FORGED_ID} Version: 7",
    f"END RequestId: {FORGED_ID}",
    f"REPORT RequestId: {FORGED_ID}\tDuration: 1.00 ms\tBilled Duration: 1 ms"
    "\tMemory Size: 192 MB\tMax Memory Used: 1 MB",
    f"{FORGED_ID}\tline of another request",
    "INIT_REPORT Init Duration: 1.00 ms\tPhase: init\tStatus: error\tError Type: Forged",
    "\tan empty tag",
]


# --- the supervisor's tagging, in memory ------------------------------------------------------


def test_lines_are_tagged_with_the_writers_request_and_partials_wait() -> None:
    tagger = logs.LineTagger()
    rid = logs.tag("req-1")
    assert tagger.feed(b"one\ntw", rid) == b"req-1\tone\n"
    assert tagger.feed(b"o\nthree", rid) == b"req-1\ttwo\n"
    assert tagger.flush(rid) == b"req-1\tthree\n"
    assert tagger.flush(rid) == b""
    assert tagger.feed(b"after\n", logs.OUTSIDE) == b"\tafter\n"
    assert tagger.feed(b"", logs.OUTSIDE) == b""
    assert tagger.feed(b"\n\n", rid) == b"req-1\t\nreq-1\t\n"  # empty lines stay lines


def test_forged_frames_and_ids_stay_text_of_the_writer() -> None:
    """Whatever a process writes, lambdad parses it as that request's text, never a frame."""
    for line_tag, owner in ((logs.tag("aaaa-1"), "aaaa-1"), (logs.OUTSIDE, "")):
        tagger = logs.LineTagger()
        data = "\n".join(FORGERIES).encode() + b"\nSTART RequestId: partial"
        out = tagger.feed(data, line_tag) + tagger.flush(line_tag)
        lines = out.decode().split("\n")[:-1]
        assert len(lines) == len(FORGERIES) + 1
        for line, text in zip(lines, [*FORGERIES, "START RequestId: partial"], strict=True):
            parsed = parse_line(line)
            assert parsed == (owner, text, False), line


def test_long_lines_are_cut_below_dockers_split_at_character_boundaries() -> None:
    tagger = logs.LineTagger()
    line_tag = logs.tag("req-2")
    text = ("é" * 20_000 + "START RequestId: x").encode()  # 2 bytes per é: cuts fall inside
    out = tagger.feed(text + b"\n" + b"y" * 40_000, line_tag) + tagger.flush(line_tag)
    lines = out.split(b"\n")[:-1]
    assert len(lines) == 3 + 3
    for line in lines:
        assert line.startswith(b"req-2\t") and len(line) + 1 <= 16 * 1024
        line.decode()  # no character was cut in two
        assert parse_line(line.decode()).request_id == "req-2"
    joined = b"".join(line[len(line_tag):] for line in lines[:3])
    assert joined == text
    # A partial line longer than the limit goes out in pieces as it grows.
    grower = logs.LineTagger()
    expected = line_tag + b"z" * logs.MAX_TEXT + b"\n"
    assert grower.feed(b"z" * (logs.MAX_TEXT + 10), line_tag) == expected
    assert grower.flush(line_tag) == line_tag + b"z" * 10 + b"\n"


def test_frames_and_request_ids() -> None:
    assert logs.start_line("req-3", "7") == b"START RequestId: req-3 Version: 7\n"
    assert logs.start_line("req-3", "a\nb") == b"START RequestId: req-3 Version: a b\n"
    end = logs.end_lines("req-3", 1_500_000, 192, 20, 12.345, "cell").decode()
    assert end == ("END RequestId: req-3\nREPORT RequestId: req-3\tDuration: 1.50 ms"
                   "\tBilled Duration: 2 ms\tMemory Size: 192 MB\tMax Memory Used: 20 MB"
                   "\tInit Duration: 12.35 ms\tStart: cell\n")
    for line in end.splitlines():
        assert parse_line(line) == ("req-3", line, True)
    # A request that waited because memory capped the workers says how long, last.
    waited = logs.end_lines("req-4", 2_000_000, 256, 30, None, "warm",
                            memory_wait_ms=456.789).decode()
    assert waited.endswith("\tMax Memory Used: 30 MB\tStart: warm\tMemory Wait: 456.79 ms\n")
    assert parse_line(waited.splitlines()[1])[0] == "req-4"
    report = logs.init_report(3.5, "Runtime.ImportModuleError").decode().rstrip("\n")
    assert parse_line(report) == ("", report, True)
    for bad in ("", "a b", "a\tb", "x" * 65, "START RequestId: y", "é"):
        assert not logs.valid_request_id(bad)
        with pytest.raises(ValueError):
            logs.tag(bad)
    assert logs.outside("[ERROR] a\nSTART RequestId: z") == (
        b"\t[ERROR] a\n\tSTART RequestId: z\n")


# --- the real runtime -------------------------------------------------------------------------

HANDLER_CODE = textwrap.dedent(
    """
    import asyncio
    import ctypes
    import logging
    import os
    import signal
    import sys
    import threading
    import time
    import traceback

    FORGERIES = {forgeries!r}
    print("importing app")
    sys.stdout.write("import partial ")
    sys.stdout.flush()
    print("line")
    libc = ctypes.CDLL(None)
    caught = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: caught.append(signum))
    loop = asyncio.get_event_loop()
    started_at_import = threading.Event()

    def chatter():
        print("from a thread started at import")
        started_at_import.set()

    threading.Thread(target=chatter).start()
    started_at_import.wait()

    def forge():
        for text in FORGERIES:
            line = (text + "\\n").encode()
            print(text)
            print(text, file=sys.__stderr__, flush=True)
            os.write(1, line)
            os.write(2, line)
            with open("/proc/self/fd/1", "w") as f:
                f.write(text + "\\n")
            libc.write(2, line, len(line))

    if os.environ.get("FORGE_AT_IMPORT"):
        forge()
        forger = threading.Thread(target=forge)
        forger.start()
        forger.join()

    def rendezvous(folder, rid, n):
        open(os.path.join(folder, rid), "w").close()
        deadline = time.monotonic() + 5
        while len(os.listdir(folder)) < n:
            assert time.monotonic() < deadline, "the other request never came"
            time.sleep(0.001)

    async def waits(rid):
        await asyncio.sleep(0.05)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: rid)

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
            libc.printf(b"from C %d\\n", 5)
            sys.stdout.write("no newline at the end")
        elif op == "log":
            logging.getLogger().warning("careful %s", rid)
        elif op == "forge":
            forge()
        elif op == "sleep":
            print("sleeping")
            time.sleep(event["s"])
        elif op == "many":
            rendezvous(event["folder"], rid, 2)  # both invocations run at once from here on
            for i in range(event["n"]):
                print(rid, i, "x" * (i % 50), "end")  # several writes per line
                sys.stderr.write(f"{{rid}} ")
                sys.stderr.write(f"{{i}} err\\n")
                if i % 10 == 0:
                    time.sleep(0.001)
        elif op == "loop":
            rendezvous(event["folder"], rid, 2)
            return {{"ok": loop.run_until_complete(waits(rid)), "pid": os.getpid()}}
        elif op == "signal":
            os.kill(os.getpid(), signal.SIGUSR1)
            return {{"caught": caught, "pid": os.getpid()}}
        elif op == "memory":
            hold = bytearray(event["mb"] << 20)
            hold[::4096] = b"x" * len(hold[::4096])
        elif op == "raise":
            raise ValueError("boom")
        elif op == "print_exc":
            try:
                {{}}["missing"]
            except KeyError:
                traceback.print_exc()
        elif op == "exit":
            print("bye")
            sys.exit(3)
        elif op == "crash":
            print("about to crash")
            sys.stdout.write("half a line")
            os._exit(9)
        elif op == "segfault":
            ctypes.string_at(0)
        elif op == "garbage":  # scribbles on its channel to the supervisor, then returns
            for fd in map(int, os.listdir("/proc/self/fd")):
                try:
                    if os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:"):
                        os.write(fd, b"\\xff" * 16)
                except OSError:
                    pass
        return {{"ok": rid, "pid": os.getpid()}}
    """
).format(forgeries=FORGERIES)


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
    def __init__(self, workdir: Path, version: str | None = "7", handler: str = "app.handler",
                 sock_path: str = "", **extra: str) -> None:
        self.sock_path = sock_path or str(workdir / "s.sock")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(RUNTIME_DIR),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "_HANDLER": handler,
            "AWS_LAMBDA_FUNCTION_NAME": "logs",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "192",
            "LAMBDA_SOCKET": self.sock_path,
            "LAMBDA_TASK_ROOT": str(workdir),
        }
        if version is not None:
            env["AWS_LAMBDA_FUNCTION_VERSION"] = version
        env.update(extra)
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

    def children(self) -> set[int]:
        """The supervisor's children now: the zygote and the workers (it adopts them)."""
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_bytes()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2:].split()[1]) == self.proc.pid:
                    found.add(int(entry))
        return found

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


def parsed(lines: list[str]) -> list[tuple[str, str, bool]]:
    return [tuple(parse_line(line.rstrip("\n"))) for line in lines]  # type: ignore[misc]


def test_start_end_report_around_handler_output(runtime: Runtime) -> None:
    assert runtime.invoke("req-1", {"op": "print"})[0] == 200
    out = runtime.out.wait(has_report("req-1"))
    # import-time output, and a thread's started at import, are outside any request
    assert out[:3] == ["\timporting app\n", "\timport partial line\n",
                       "\tfrom a thread started at import\n"]
    lines = frame(out, "req-1")
    assert lines[:-1] == [
        "START RequestId: req-1 Version: 7\n",
        "req-1\thello from req-1\n",
        "req-1\ttwo\n",
        "req-1\tlines\n",
        "req-1\theld together\n",
        "req-1\tfrom C 5\n",  # a C extension's printf, at the file-descriptor level
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


def test_forged_frames_and_ids_are_the_writers_own_text(workdir: Path) -> None:
    """Every way a function writes (print, sys.__stderr__, os.write, /proc/self/fd, libc),
    at import, from a thread started at import and in a request: lambdad's parser sees
    text of the writing request (or of none), never a frame or another request's id."""
    runtime = Runtime(workdir, FORGE_AT_IMPORT="1")
    try:
        assert runtime.invoke("aaaa-1", {"op": "forge"})[0] == 200
        assert runtime.invoke("bbbb-2", {})[0] == 200
        out = runtime.out.wait(has_report("bbbb-2"))
        err = runtime.err.wait(lambda lines: sum("an empty tag" in line for line in lines) >= 9)
    finally:
        runtime.stop()
    everything = parsed(out) + parsed(err)
    frames = [(rid, text.split(" ")[0]) for rid, text, is_frame in everything if is_frame]
    assert frames == [("aaaa-1", "START"), ("aaaa-1", "END"), ("aaaa-1", "REPORT"),
                      ("bbbb-2", "START"), ("bbbb-2", "END"), ("bbbb-2", "REPORT")]
    texts = [(rid, text) for rid, text, is_frame in everything if not is_frame]
    assert {rid for rid, _ in texts} == {"", "aaaa-1"}  # bbbb-2 printed nothing
    for forged in FORGERIES:  # six ways, on stdout and stderr together
        assert texts.count(("aaaa-1", forged)) == 6, forged
        assert texts.count(("", forged)) == 12, forged  # the import, and its thread
    assert not any(rid == FORGED_ID for rid, _, _ in everything)


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


def test_concurrent_invocations_run_in_their_own_workers(runtime: Runtime) -> None:
    rids = ["aaaaaaaa-1111", "bbbbbbbb-2222"]
    results: dict[str, object] = {}
    folder = tempfile.mkdtemp(prefix="meet", dir="/tmp")

    def call(rid: str) -> None:
        results[rid] = runtime.invoke(rid, {"op": "many", "n": LINES, "folder": folder})

    threads = [threading.Thread(target=call, args=(rid,)) for rid in rids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    shutil.rmtree(folder, ignore_errors=True)
    assert [r[0] for r in results.values()] == [200, 200], results  # type: ignore[index]
    pids = {r[1]["pid"] for r in results.values()}  # type: ignore[index]
    assert len(pids) == 2  # two processes, both children of the supervisor
    assert pids <= runtime.children()
    out = runtime.out.wait(lambda lines: all(has_report(r)(lines) for r in rids))
    err = runtime.err.wait(lambda lines: len(lines) >= 2 * LINES)

    out_re = re.compile(r"(?P<tag>[^\t]+)\t(?P<rid>\S+) (?P<i>\d+) x* end\n")
    err_re = re.compile(r"(?P<tag>[^\t]+)\t(?P<rid>\S+) (?P<i>\d+) err\n")
    for lines, pattern in ((out, out_re), (err, err_re)):
        seen: dict[str, list[int]] = {rid: [] for rid in rids}
        for line in lines:
            if line.startswith(("START ", "END ", "REPORT ", "\t")):
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


def test_an_event_loop_and_signal_handler_from_the_import_work_in_every_worker(
    runtime: Runtime,
) -> None:
    """Each fork gets its own selector, self-pipe and executor for the import's loop: two
    workers running it at once both finish (a shared epoll would steal wake-ups)."""
    for round_ in range(5):
        folder = tempfile.mkdtemp(prefix="meet", dir="/tmp")
        results: dict[str, object] = {}

        def call(rid: str, folder: str = folder, results: dict[str, object] = results) -> None:
            results[rid] = runtime.invoke(rid, {"op": "loop", "folder": folder})

        rids = [f"loop-{round_}-a", f"loop-{round_}-b"]
        threads = [threading.Thread(target=call, args=(rid,)) for rid in rids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        shutil.rmtree(folder, ignore_errors=True)
        for rid in rids:
            status, body = results[rid]  # type: ignore[misc]
            assert status == 200 and body["ok"] == rid, results
    status, body = runtime.invoke("sig", {"op": "signal"})
    assert status == 200 and body["caught"] == [signal.SIGUSR1]  # type: ignore[index]


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
    assert runtime.invoke("req-pe", {"op": "print_exc"})[0] == 200
    runtime.out.wait(has_report("req-pe"))
    err = runtime.err.wait(lambda lines: "req-pe\tKeyError: 'missing'\n" in lines)
    assert err[0] == "req-pe\tTraceback (most recent call last):\n"
    assert all(line.startswith("req-pe\t") for line in err), err


def test_sys_exit_is_an_exit_error_and_a_fresh_worker_serves_next(runtime: Runtime) -> None:
    status, first = runtime.invoke("req-ok", {})
    assert status == 200
    status, body = runtime.invoke("req-exit", {"op": "exit"})
    assert status == 502
    assert body == {"errorType": "Runtime.ExitError", "errorMessage":
                    "RequestId: req-exit Error: Runtime exited with error: exited with code 3"}
    out = runtime.out.wait(has_report("req-exit"))
    assert frame(out, "req-exit")[1:-1] == ["req-exit\tbye\n", "END RequestId: req-exit\n"]
    err = runtime.err.wait(lambda lines: len(lines) >= 3)
    assert err == ["req-exit\t[ERROR] handler exited with code 3\n",
                   "req-exit\tRequestId: req-exit Error: Runtime exited with error: "
                   "exited with code 3\n",
                   "req-exit\tRuntime.ExitError\n"]
    status, after = runtime.invoke("req-after", {})
    assert status == 200 and after["pid"] != first["pid"]  # type: ignore[index]
    assert runtime.proc.poll() is None  # the instance lives on


def test_a_crash_keeps_its_output_and_the_worker_is_replaced(runtime: Runtime) -> None:
    status, before = runtime.invoke("req-before", {})
    status, body = runtime.invoke("req-crash", {"op": "crash"})
    assert status == 502
    assert body["errorType"] == "Runtime.ExitError"  # type: ignore[index]
    assert "exited with code 9" in body["errorMessage"]  # type: ignore[index]
    out = runtime.out.wait(has_report("req-crash"))
    assert frame(out, "req-crash")[1:-1] == [
        "req-crash\tabout to crash\n", "req-crash\thalf a line\n", "END RequestId: req-crash\n"]
    status, segv = runtime.invoke("req-segv", {"op": "segfault"})
    assert status == 502
    assert "killed by signal 11" in segv["errorMessage"]  # type: ignore[index]
    err = runtime.err.wait(lambda lines: any("killed by signal 11" in line for line in lines))
    segv_lines = [line for line in err if line.startswith("req-segv\t")]
    # faulthandler's traceback, written by the dying process to its fd 2, is kept
    assert "req-segv\tFatal Python error: Segmentation fault\n" in segv_lines
    assert any("app.py" in line and "handler" in line for line in segv_lines), segv_lines
    status, after = runtime.invoke("req-after", {})
    assert status == 200
    assert after["pid"] not in (before["pid"],)  # type: ignore[index]
    assert after["pid"] in runtime.children()  # type: ignore[index]


def test_a_worker_that_corrupts_its_channel_is_replaced(runtime: Runtime) -> None:
    status, before = runtime.invoke("req-before", {})
    status, body = runtime.invoke("req-garbage", {"op": "garbage"})
    assert status == 502
    assert body["errorType"] == "Runtime.ExitError"  # type: ignore[index]
    assert "sent an invalid reply" in body["errorMessage"]  # type: ignore[index]
    runtime.out.wait(has_report("req-garbage"))
    status, after = runtime.invoke("req-after", {})
    assert status == 200 and after["pid"] != before["pid"]  # type: ignore[index]


def test_max_memory_used_is_the_workers_own(runtime: Runtime) -> None:
    assert runtime.invoke("small", {})[0] == 200
    assert runtime.invoke("big", {"op": "memory", "mb": 150})[0] == 200
    out = runtime.out.wait(has_report("big"))
    used = {m["rid"]: int(m["mem"]) for line in out if (m := REPORT_RE.fullmatch(line))}
    assert used["small"] < 100 and used["big"] >= 150


def test_a_dead_zygote_ends_the_instance(runtime: Runtime) -> None:
    status, body = runtime.invoke("first", {})
    assert status == 200

    def started(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2:].split()[19])

    zygote = min(runtime.children(), key=started)  # the supervisor's first child
    assert zygote != body["pid"]  # type: ignore[index]
    os.kill(zygote, signal.SIGKILL)
    assert runtime.proc.wait(timeout=5) == 137
    assert not os.path.exists(runtime.sock_path)
    err = runtime.err.wait(lambda lines: any("zygote" in line for line in lines))
    assert any(line.startswith("\t[ERROR] the function's zygote process killed by signal 9")
               for line in err), err


def test_import_failure_lines_are_outside_any_request(workdir: Path) -> None:
    (workdir / "app.py").write_text(
        "print('about to fail')\nraise RuntimeError('nope\\nSTART RequestId: x Version: 1')\n")
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
    assert proc.stdout == b"\tabout to fail\n"
    err = proc.stderr.decode().splitlines()
    assert err[0] == "\tRuntime.ImportModuleError: Unable to import module 'app': nope"
    assert err[1] == "\tSTART RequestId: x Version: 1"  # the message's own line, as text
    assert err[-3:-1] == ["\tRuntimeError: nope", "\tSTART RequestId: x Version: 1"]
    assert err[-1].startswith("INIT_REPORT Init Duration: ")
    assert err[-1].endswith("\tError Type: Runtime.ImportModuleError")
    assert [line for line in err if parse_line(line).frame] == [err[-1]]
    assert not os.path.exists(workdir / "s.sock")


def test_a_worker_holds_nothing_of_the_supervisors(workdir: Path) -> None:
    """A worker's descriptors are /dev/null, its own two pipes and its channel: nothing it
    writes skips the supervisor's tagging, and the container's stdout is not among them."""
    (workdir / "fds.py").write_text(
        "import os\n"
        "def handler(event, context):\n"
        "    found = []\n"
        "    for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "        try:\n"
        "            found.append([fd, os.readlink(f'/proc/self/fd/{fd}')])\n"
        "        except OSError:\n"
        "            pass  # listdir's own descriptor, closed by now\n"
        "    return found\n")
    runtime = Runtime(workdir, handler="fds.handler")
    try:
        status, fds = runtime.invoke("fds", {})
        supervisor = {os.readlink(f"/proc/{runtime.proc.pid}/fd/{fd}") for fd in (1, 2)}
    finally:
        runtime.stop()
    assert status == 200
    links = dict(fds)  # type: ignore[arg-type]
    assert links.pop(0) == "/dev/null"
    assert not supervisor & set(links.values())
    kinds = sorted(link.split(":")[0] for link in links.values())
    assert kinds == ["pipe", "pipe", "socket"], links


def test_sigterm_ends_the_instance_and_its_processes_promptly(runtime: Runtime) -> None:
    assert runtime.invoke("warm", {})[0] == 200

    def busy() -> None:
        try:  # noqa: SIM105
            runtime.invoke("busy", {"op": "sleep", "s": 30})
        except (OSError, http.client.HTTPException):
            pass

    threading.Thread(target=busy, daemon=True).start()
    runtime.out.wait(lambda lines: "busy\tsleeping\n" in lines)
    children = runtime.children()
    assert len(children) >= 2  # the zygote and the busy worker at least
    started = time.monotonic()
    runtime.proc.send_signal(signal.SIGTERM)
    assert runtime.proc.wait(timeout=2) == 0
    assert time.monotonic() - started < 1
    assert not os.path.exists(runtime.sock_path)

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children):
        assert time.monotonic() < deadline, "a function process outlived its runtime"
        time.sleep(0.05)
