"""The runtime's graceful stop, on the real runtime as a subprocess: SIGTERM to the
supervisor (what `docker stop` sends) reaches every worker, so a handler the function set
at import runs and its output is kept; then everything left is killed."""

from __future__ import annotations

import concurrent.futures
import http.client
import shutil
import signal
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_runtime_logs import Runtime

APP = textwrap.dedent(
    """
    import os, signal, sys, time

    IMPORT_PID = os.getpid()
    MODE = os.environ.get("ON_TERM", "exit")

    def on_sigterm(signum, frame):  # AWS's graceful-shutdown sample
        print(f"[runtime] SIGTERM received pid={os.getpid()}", flush=True)
        print("[runtime] cleaning up", flush=True)
        if MODE == "exit":
            sys.exit(0)

    if MODE == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif MODE != "default":
        signal.signal(signal.SIGTERM, on_sigterm)

    def handler(event, context):
        print("serving", flush=True)
        time.sleep(event.get("sleep", 0))
        return {"pid": os.getpid(), "import_pid": IMPORT_PID}
    """
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))  # AF_UNIX paths are limited to ~108 bytes
    (d / "app.py").write_text(APP)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def two_workers(rt: Runtime) -> tuple[set[int], int]:
    """Two requests at once, so two workers exist; their pids and the zygote's."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda rid: rt.invoke(rid, {"sleep": 0.3}), ["r-1", "r-2"]))
    assert all(status == 200 for status, _ in replies), replies
    bodies = [body for _, body in replies]
    assert isinstance(bodies[0], dict)
    return {body["pid"] for body in bodies if isinstance(body, dict)}, int(bodies[0]["import_pid"])


def gone(pids: set[int]) -> bool:
    """No process of these pids runs, or soon (a zombie waiting for init is dead)."""
    def running(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return False
        return stat[stat.rindex(b")") + 2:][:1] != b"Z"

    deadline = time.monotonic() + 2  # SIGKILL takes effect a moment after it is sent
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("mode", ["exit", "return"])
def test_sigterm_runs_the_function_s_handler_in_every_worker_and_keeps_its_output(
    workdir: Path, mode: str
) -> None:
    rt = Runtime(workdir, ON_TERM=mode)
    try:
        workers, zygote = two_workers(rt)
        assert len(workers) == 2 and zygote not in workers
    finally:
        code = rt.stop()
    assert code == 0
    lines = rt.out.text()
    received = sorted(line for line in lines if "SIGTERM received" in line)
    # Untagged (outside any request), one per worker, none from the zygote (it served nothing).
    assert received == sorted(f"\t[runtime] SIGTERM received pid={pid}\n" for pid in workers)
    assert lines.count("\t[runtime] cleaning up\n") == 2
    assert gone(workers | {zygote})


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(workdir: Path) -> None:
    rt = Runtime(workdir, ON_TERM="ignore")
    try:
        workers, zygote = two_workers(rt)
    finally:
        code = rt.stop()
    assert code == 0  # on its own: Runtime.stop kills it after 3 s
    assert gone(workers | {zygote})


def test_without_a_handler_workers_end_on_sigterm(workdir: Path) -> None:
    rt = Runtime(workdir, ON_TERM="default")
    try:
        workers, zygote = two_workers(rt)
    finally:
        code = rt.stop()
    assert code == 0 and gone(workers | {zygote})
    assert not any("SIGTERM" in line for line in rt.out.text() + rt.err.text())


def test_a_request_in_flight_when_the_instance_stops_is_left_to_lambdad(workdir: Path) -> None:
    """Its worker ends of the stop's SIGTERM: no 502 blaming the function (lambdad stopped
    the instance and tells the caller why); its lines still end with END and REPORT."""
    rt = Runtime(workdir, ON_TERM="default")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(rt.invoke, "r-busy", {"sleep": 30})
            assert wait_for_lines(rt, "r-busy\tserving")
            rt.proc.send_signal(signal.SIGTERM)
            with pytest.raises(http.client.RemoteDisconnected):
                reply.result(timeout=10)
    finally:
        code = rt.stop()
    assert code == 0
    assert any(line.startswith("r-busy\tRequestId: r-busy Error: Runtime exited with error: "
                               "killed by signal 15") for line in rt.err.text())
    assert any(line.startswith("END RequestId: r-busy") for line in rt.out.text())


def wait_for_lines(rt: Runtime, text: str) -> bool:
    try:
        rt.out.wait(lambda lines: any(text in line for line in lines))
    except AssertionError:
        return False
    return True
