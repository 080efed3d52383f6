"""lambdad knows how many workers an instance's memory holds, and scales out instead of
queueing requests into a timeout (found by attack on a real lambdad).

The runtime caps an instance's workers by its cgroup memory; lambdad used to send every
instance up to the function's concurrency regardless, so with a 40 MiB handler in a 128 MiB
instance (2 workers fit) six concurrent requests all went to one instance, four waited for
memory, two hit the 5 s timeout (504) and lambdad stopped the instance with the work in it.
Now the runtime says `Lambda-Workers: N` (first in a response head, only when the figure
changes or once a second) and lambdad gives that instance min(concurrency, N) slots, starts
instances for the rest, and a request that timed out because it waited for memory fails
alone. A function cannot forge that word: the runtime drops a handler's own copies, and the
gateway never relays them.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon import HttpResult, Lambdad, wait_for

pytestmark = pytest.mark.slow

HOG = '''
import os
import time


def handler(event, context):
    held = b"\\x01" * (40 << 20)  # written: 40 MiB of this worker's own pages
    time.sleep(2)
    return {"pid": os.getpid(), "held": len(held)}
'''

# 45 MiB written at import: the zygote is large, so before any worker was measured the
# runtime assumes a worker may cost that much and holds this 128 MiB instance at 1 worker
# (workers share the ballast copy-on-write: once measured, a worker costs ~1 MiB).
BALLAST = '''
import os
import time

BALLAST = bytearray(b"\\x01" * (45 << 20))


def handler(event, context):
    time.sleep(float((event.get("queryStringParameters") or {}).get("sleep", "0")))
    return {"pid": os.getpid()}
'''

FORGER = '''
import os


def handler(event, context):
    return {"statusCode": 200, "body": str(os.getpid()),
            "headers": {"Lambda-Workers": "1", "lambda-wait-timeout": "1",
                        "X-Mine": "kept"}}
'''


def _logs(daemon: Lambdad, name: str) -> list[str]:
    result = daemon.cli("logs", name, "--tail", "500", "-o", "json")
    assert result.code == 0, result.stderr
    return [str(json.loads(line)["message"]) for line in result.stdout.splitlines()]


def _function(tmp_path: Path, name: str, code: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(code)
    return folder


def test_a_burst_beyond_what_memory_holds_starts_more_instances(lambdad: Lambdad,
                                                                 tmp_path: Path) -> None:
    """The attack's reproduction: after one request, six at once. On the old lambdad they
    all went to the one instance (2 workers fit): two 504s and the instance stopped."""
    lambdad.deploy(_function(tmp_path, "hogscale", HOG), "--name", "hogscale", "--memory",
                   "128", "--concurrency", "6", "--max-instances", "3", "--timeout", "5")
    first = lambdad.http("hogscale")  # its answer says how many workers the memory holds
    assert first.status == 200, first.body
    assert "lambda-workers" not in first.headers  # the runtime's word stops at lambdad
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: lambdad.http("hogscale"), range(6)))
    failed = [(a.status, a.body[:300]) for a in answers if a.status != 200]
    assert not failed, failed
    assert len(lambdad.containers("hogscale")) > 1
    messages = _logs(lambdad, "hogscale")
    assert not any("Memory Wait" in m for m in messages), messages


def test_a_request_late_for_memory_times_out_alone(lambdad: Lambdad, tmp_path: Path) -> None:
    """A request that waited for memory and runs into its timeout because of that wait
    fails alone: the runtime stops its worker and says so, and lambdad keeps the instance,
    the request running beside it, and serves the next request from the same container.
    (Before a worker was measured the runtime holds this instance at 1 worker; lambdad has
    heard nothing yet, so it sends all three.) On the old lambdad the timeout stopped the
    instance, and the request running beside it failed."""
    lambdad.deploy(_function(tmp_path, "ballast", BALLAST), "--name", "ballast", "--memory",
                   "128", "--concurrency", "4", "--max-instances", "1", "--timeout", "4",
                   "--prewarm", "1")
    assert wait_for(lambda: len(lambdad.containers("ballast")) == 1, timeout=30)
    before = {c.id for c in lambdad.containers("ballast")}
    answers: dict[str, HttpResult] = {}

    def call(key: str, sleep: float) -> None:
        answers[key] = lambdad.http("ballast", f"/?sleep={sleep}")

    # a: the one worker, 0-2 s. b: waits for memory until a ends, then runs past its
    # deadline (4.3 s). c: waits too, starts on a new worker once a was measured (~2 s),
    # and is still running when b times out.
    threads = [threading.Thread(target=call, args=("a", 2))]
    threads.append(threading.Thread(target=call, args=("b", 30)))
    threads.append(threading.Thread(target=call, args=("c", 2.5)))
    for thread, pause in zip(threads, (0.3, 0.7, 0), strict=True):
        thread.start()
        time.sleep(pause)
    for thread in threads:
        thread.join(60)
    statuses = {k: (a.status, a.body[:300]) for k, a in answers.items()}
    assert statuses["a"][0] == 200 and statuses["c"][0] == 200, statuses
    assert statuses["b"][0] == 504, statuses
    assert b"waited for a worker" in answers["b"].body, statuses
    assert lambdad.http("ballast").status == 200
    assert {c.id for c in lambdad.containers("ballast")} == before
    b_id = answers["b"].headers["lambda-request-id"]

    def reported() -> list[str]:
        return [m for m in _logs(lambdad, "ballast")
                if m.startswith("REPORT ") and b_id in m and "\tMemory Wait: " in m]

    assert wait_for(reported, timeout=15), _logs(lambdad, "ballast")
    messages = _logs(lambdad, "ballast")
    assert any(m.startswith("[WARNING] memory caps this instance at 1 worker ")
               for m in messages), messages
    assert any(b_id in m and "Task timed out after waiting" in m for m in messages), messages


def test_a_function_cannot_speak_for_the_runtime(lambdad: Lambdad, tmp_path: Path) -> None:
    """Attack: a handler answers with the runtime's own headers, `Lambda-Workers: 1` (to
    shrink its slots, and so start instances) and `Lambda-Wait-Timeout` (to turn its answer
    into a timeout). The runtime drops them, lambdad takes nothing from them, and the client
    never sees them: two concurrent requests still share one instance's two workers."""
    lambdad.deploy(_function(tmp_path, "forger", FORGER), "--name", "forger", "--memory",
                   "128", "--concurrency", "2", "--max-instances", "2")
    first = lambdad.http("forger")
    assert first.status == 200, first.body
    assert first.headers.get("x-mine") == "kept"
    assert "lambda-workers" not in first.headers, first.headers
    assert "lambda-wait-timeout" not in first.headers, first.headers
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: lambdad.http("forger"), range(2)))
        assert [a.status for a in answers] == [200, 200], [a.body for a in answers]
        assert all("lambda-workers" not in a.headers for a in answers)
    assert len(lambdad.containers("forger")) == 1


# A worker whose request waited for memory leaves a child holding its channel, which writes
# a whole reply the moment the worker is killed (PR_SET_PDEATHSIG): the runtime answered the
# request already (504, Lambda-Wait-Timeout), so that reply must not be a second answer.
LATE = '''
import ctypes
import os
import signal
import stat
import struct
import subprocess
import sys
import time

BALLAST = bytearray(b"\\x01" * (45 << 20))


def _sockets():
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2 and stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                found.append(int(name))
        except OSError:
            pass
    return found


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    if query.get("late"):
        head, body = b"X-Late: 1\\r\\n", b"a second answer"
        reply = struct.pack("<HII", 200, len(head), len(body)) + head + body
        chans, parent = _sockets(), os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        if os.fork() == 0:
            try:
                ctypes.CDLL(None).prctl(1, int(signal.SIGUSR1))  # PR_SET_PDEATHSIG
                if os.getppid() == parent:
                    signal.sigwaitinfo({signal.SIGUSR1})
                for fd in chans:
                    os.write(fd, reply)
            finally:
                os._exit(0)
    if query.get("child"):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(987)"])
    time.sleep(float(query.get("sleep", "0")))
    return {"pid": os.getpid()}
'''


def _late_for_memory(lambdad: Lambdad, tmp_path: Path, name: str,
                     late_path: str) -> dict[str, HttpResult]:
    """Deploys LATE as NAME (one instance, 128 MB, timeout 3 s): request a holds the one
    worker for 1.5 s, b (`late_path`) waits for it, then runs past its deadline and is
    answered 504 by the runtime. The answers, a's and b's, checked."""
    lambdad.deploy(_function(tmp_path, name, LATE), "--name", name, "--memory", "128",
                   "--concurrency", "4", "--max-instances", "1", "--timeout", "3",
                   "--prewarm", "1")
    assert wait_for(lambda: len(lambdad.containers(name)) == 1, timeout=30)
    answers: dict[str, HttpResult] = {}

    def call(key: str, path: str) -> None:
        answers[key] = lambdad.http(name, path)

    first = threading.Thread(target=call, args=("a", "/?sleep=1.5"))
    second = threading.Thread(target=call, args=("b", late_path))
    first.start()
    time.sleep(0.3)
    second.start()
    for thread in (first, second):
        thread.join(60)
    assert answers["a"].status == 200, answers["a"].body[:300]
    assert answers["b"].status == 504, answers["b"].body[:300]
    assert b"waited for a worker" in answers["b"].body
    return answers


def test_a_reply_after_the_wait_timeout_is_not_a_second_answer(lambdad: Lambdad,
                                                              tmp_path: Path) -> None:
    """Attack: the request that waited for memory and ran into its timeout is answered by the
    runtime (504) and its worker killed; a child of the worker holding the worker's channel
    writes a complete reply right then. The old runtime took it as the request's answer: it
    answered the request a second time on lambdad's connection (the next request sent on it
    could read it as its own), logged the request as ended normally (no timeout line), and
    put the killed worker back among the idle ones."""
    answers = _late_for_memory(lambdad, tmp_path, "latewait", "/?late=1&sleep=30")
    b_id = answers["b"].headers["lambda-request-id"]

    def stopped() -> list[str]:
        return [m for m in _logs(lambdad, "latewait")
                if b_id in m and "its worker was stopped" in m]

    assert wait_for(stopped, timeout=15), [m for m in _logs(lambdad, "latewait") if b_id in m]
    reports = [m for m in _logs(lambdad, "latewait") if m.startswith("REPORT ") and b_id in m]
    assert len(reports) == 1, reports
    for _ in range(3):  # the same instance serves on, each answer its own
        after = lambdad.http("latewait")
        assert after.status == 200 and b"pid" in after.body, after.body[:300]
        assert "x-late" not in after.headers, after.headers


def test_a_request_late_for_memory_stops_what_its_worker_started(lambdad: Lambdad,
                                                                tmp_path: Path) -> None:
    """A request late for memory whose handler started a process (a subprocess that hangs):
    its timeout stops that process with the worker, as lambdad's own timeout does by
    stopping the container. The old runtime killed the worker alone, so the process ran on
    in the instance lambdad keeps (holding memory the next requests wait for), and a
    hanging handler's work was never cleaned up."""
    _late_for_memory(lambdad, tmp_path, "latechild", "/?child=1&sleep=30")
    [container] = lambdad.containers("latechild")

    def started() -> list[str]:
        return [" ".join(p) for p in container.top()["Processes"]
                if "time.sleep(987)" in " ".join(p)]

    assert wait_for(lambda: not started(), timeout=10), started()
    assert lambdad.http("latechild").status == 200
    assert [c.id for c in lambdad.containers("latechild")] == [container.id]
