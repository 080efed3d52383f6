"""Attacks on how the real runtime (a subprocess, no container) starts workers, by function
code that breaks the start: an after-restore hook that exits its worker, a registry whose
getter raises SystemExit. The supervisor used to fork a replacement for every worker that
ended before its hello, in a loop, until lambdad's timeout; the caller got a 504 and the
instance was discarded, with nothing in the logs. Now the waiting request fails at once
with Runtime.ExitError and the runtime serves on. And a worker that renames itself cannot
forge the peak memory its REPORT says. (The same through lambdad and Docker:
tests/e2e/test_i17_attacks4.py.)"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_runtime_logs import Runtime
from tests.unit.test_runtime_server import request, start


@pytest.fixture
def folder() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ls", dir="/tmp"))  # AF_UNIX paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)

EXITS_IN_AFTER_RESTORE = '''
import os

from snapshot_restore_py import register_after_restore

MARK = "{mark}"


@register_after_restore
def gone():
    if not os.path.exists(MARK):  # until the test lets workers live
        os._exit(3)


def handler(event, context):
    return {{"pid": os.getpid()}}
'''

GETTER_EXITS = '''
import os

import snapshot_restore_py

MARK = "{mark}"
_real = snapshot_restore_py.get_after_restore


def _getter():
    if not os.path.exists(MARK):
        raise SystemExit(4)
    return _real()


snapshot_restore_py.get_after_restore = _getter


def handler(event, context):
    return {{"pid": os.getpid()}}
'''


@pytest.mark.parametrize("code", [EXITS_IN_AFTER_RESTORE, GETTER_EXITS],
                         ids=["os._exit in a hook", "SystemExit from the registry"])
def test_a_worker_that_ends_before_its_first_request_fails_that_request_at_once(
    folder: Path, code: str
) -> None:
    mark = folder / "let-live"
    (folder / "app.py").write_text(code.format(mark=mark))
    rt = start(folder)
    try:
        conn = rt.conn()
        conn.timeout = 10  # the old runtime forked replacements until the caller gave up
        began = time.monotonic()
        resp = request(conn, "GET", "/")
        body = json.loads(resp.read())
        assert resp.status == 502, body
        assert time.monotonic() - began < 5
        assert resp.getheader("Lambda-Function-Error") == "Unhandled"
        assert body["errorType"] == "Runtime.ExitError", body
        assert "worker process ended before its first request" in body["errorMessage"]
        assert rt.proc.poll() is None  # the runtime serves on
        mark.touch()  # the next worker's hook lets it live: it serves
        resp = request(conn, "GET", "/")
        assert resp.status == 200 and "pid" in json.loads(resp.read())
    finally:
        _, err = rt.stop()
    assert "[ERROR] the function's worker process ended before its first request" in err


RENAMED = '''
import os


def handler(event, context):
    # The process name is the first line of /proc/PID/status: "Name:\\tVmHWM:999999kB".
    with open("/proc/self/comm", "w") as f:
        f.write("VmHWM:999999kB")
    return {"pid": os.getpid()}
'''


def test_a_worker_cannot_forge_its_reports_peak_memory_by_its_process_name(
    folder: Path,
) -> None:
    """REPORT's Max Memory Used is the kernel's VmHWM of the worker; the supervisor found
    it as the first "VmHWM:" in /proc/PID/status, which a worker that renamed itself puts in
    the Name line: 976 MB reported (a 192 MB function), and, kept as the worker's peak, its
    memory cost was never measured again (capacity.py measures again once the peak grows)."""
    (folder / "app.py").write_text(RENAMED)
    rt = Runtime(folder)
    try:
        for rid in ("renames-itself", "after-the-rename"):
            status, _ = rt.invoke(rid, {})
            assert status == 200
        lines = rt.out.wait(lambda ls: sum(line.startswith("REPORT ") for line in ls) == 2)
    finally:
        rt.stop()
    reports = [line for line in lines if line.startswith("REPORT ")]
    for report in reports:
        used = int(report.split("Max Memory Used: ")[1].split(" MB")[0])
        assert used < 192, reports
