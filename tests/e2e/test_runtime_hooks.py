"""Runtime hooks (snapshot_restore_py, Lambda SnapStart's API) on the real engine, through a
real lambdad and its gateway: the zygote is the snapshot.

- before-snapshot hooks run once per instance, in the zygote (the process that imported the
  code, which serves no request), in the reverse order of registration, with their
  arguments, before any worker exists; every worker inherits what they did;
- after-restore hooks run in each worker once, right after its fork and before its first
  request, in the order of registration;
- their time: Server-Timing `hooks;dur=` after `import;dur=` within `init;dur=`, and the first
  REPORT's Before Snapshot Duration within its Init Duration;
- a before-snapshot hook that raises fails the init (the deploy fails with its error, as
  Lambda's publish does; INIT_REPORT's Error Type Runtime.BeforeSnapshotError, the traceback
  in the logs; the live version serves on); an after-restore hook that raises
  fails that worker's first request (Runtime.AfterRestoreError, the traceback under that
  request) and the worker exits: the next request gets a new worker.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Lambdad, wait_for
from tests.support.logs import function_logs, request_logs, wait_logs

pytestmark = pytest.mark.slow

HOOK_S = 0.5
WORKERS = 4

PROBE = f'''
"""Records, in /tmp (its instance's own), where and when its hooks ran."""

import os
import time

from snapshot_restore_py import register_after_restore, register_before_snapshot

IMPORT_PID = os.getpid()
LOG = "/tmp/hooks.log"
WARM = {{}}
RESTORED = []


def _log(what):
    with open(LOG, "a") as f:
        f.write(f"{{what}} {{os.getpid()}}\\n")


@register_before_snapshot
def registered_first():
    _log("before:registered_first")


def warm(kind, *, size):
    time.sleep({HOOK_S})  # what warming an app costs
    WARM.update(kind=kind, table=list(range(size)), pid=os.getpid())
    _log("before:warm")


register_before_snapshot(warm, "routes", size=3)


@register_after_restore
def reconnect():
    RESTORED.append(os.getpid())
    _log("after:reconnect")


register_after_restore(_log, "after:second")


def handler(event, context):
    time.sleep(float((event.get("queryStringParameters") or {{}}).get("sleep", 0)))
    with open(LOG) as f:
        log = f.read().splitlines()
    return {{"pid": os.getpid(), "import_pid": IMPORT_PID, "warm": WARM,
             "restored": RESTORED, "log": log}}
'''

BEFORE_FAILS = '''
from snapshot_restore_py import register_before_snapshot


@register_before_snapshot
def connect():
    raise ConnectionError("database unreachable at snapshot")


def handler(event, context):
    return "never served"
'''

AFTER_FAILS_ONCE = '''
import os

from snapshot_restore_py import register_after_restore

MARK = "/tmp/failed-once"


@register_after_restore
def reopen():
    if not os.path.exists(MARK):  # the instance's first worker only
        open(MARK, "w").close()
        raise ConnectionError("cannot reopen the pool")


def handler(event, context):
    return {"pid": os.getpid()}
'''


def _function(folder: Path, name: str, code: str, concurrency: int = 1,
              idle_timeout: int = 300) -> Path:
    folder.mkdir()
    (folder / "handler.py").write_text(code)
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\n[scaling]\nconcurrency = {concurrency}\nmax_instances = 1\n'
        f"idle_timeout = {idle_timeout}\n")
    return folder


def _durations(server_timing: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([\d.]+)", server_timing)}


def test_hooks_run_once_in_the_zygote_and_once_in_each_worker(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    lambdad.deploy(_function(tmp_path / "hk", "hooks", PROBE, concurrency=WORKERS,
                             idle_timeout=2))
    assert wait_for(lambda: lambdad.containers("hooks") == [], timeout=30)
    cold = lambdad.http("hooks")
    assert cold.status == 200, cold.body
    assert cold.headers["lambda-cold-start"] in ("cell", "container"), cold.headers
    # The hooks' time is init's, shown apart from the import.
    timing = _durations(cold.headers["server-timing"])
    assert timing["hooks"] >= HOOK_S * 1000, timing
    assert timing["import"] < HOOK_S * 1000, timing  # the sleep is not counted as import
    assert timing["init"] >= timing["import"] + timing["hooks"] - 1, timing
    rid = cold.headers["lambda-request-id"]
    report = [e["message"] for e in request_logs(lambdad, "hooks", rid)
              if str(e["message"]).startswith("REPORT ")]
    found = re.search(r"Init Duration: ([\d.]+) ms\tBefore Snapshot Duration: ([\d.]+) ms",
                      "\n".join(map(str, report)))
    assert found and float(found[2]) >= HOOK_S * 1000, report
    assert float(found[1]) >= float(found[2])

    # WORKERS requests at once: each on a worker of its own, all forked from one zygote.
    with ThreadPoolExecutor(WORKERS) as pool:
        answers: list[dict[str, Any]] = list(pool.map(
            lambda _: lambdad.http("hooks", "/?sleep=1.5").json(), range(WORKERS)))
    zygote = cold.json()["import_pid"]
    workers = {a["pid"] for a in answers}
    assert len(workers) == WORKERS and zygote not in workers, answers
    for answer in [cold.json(), *answers]:
        assert answer["import_pid"] == zygote
        # The before-snapshot hooks' work, done in the zygote, is the workers' own.
        assert answer["warm"] == {"kind": "routes", "table": [0, 1, 2], "pid": zygote}
        # This worker's after-restore hook ran once, in it, before this request.
        assert answer["restored"] == [answer["pid"]]
    log = lambdad.http("hooks").json()["log"]
    # Once per instance, in the zygote, in the reverse order of registration, first of all.
    assert log[:2] == [f"before:warm {zygote}", f"before:registered_first {zygote}"], log
    assert sum(line.startswith("before:") for line in log) == 2, log
    # Once in each worker, in the order of registration, each pair before anything else
    # of that worker (a worker may be forked ahead of the request that uses it).
    restored = [line for line in log if line.startswith("after:")]
    pids = [line.split()[1] for line in restored[::2]]
    assert len(pids) == len(set(pids)) and {str(p) for p in workers} <= set(pids), log
    for pid in pids:
        assert [line for line in restored if line.endswith(f" {pid}")] == [
            f"after:reconnect {pid}", f"after:second {pid}"], log


def test_a_failing_before_snapshot_hook_fails_the_init_and_the_deploy(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    """As Lambda fails the publishing of a version whose before-snapshot hook raises: the
    deploy fails with the hook's error, and the live version serves on."""
    folder = _function(tmp_path / "bf", "hookinit", "def handler(event, context):\n"
                       "    return 'v1'\n")
    lambdad.deploy(folder)
    (folder / "handler.py").write_text(BEFORE_FAILS)
    result = lambdad.cli("deploy", str(folder))
    assert result.code == 9, result.stderr
    assert ("hookinit v2 failed to initialize: Runtime.BeforeSnapshotError: before-snapshot "
            "hook 'connect' failed: ConnectionError: database unreachable at snapshot"
            ) in result.stderr
    assert lambdad.http("hookinit").json() == "v1"
    entries = wait_logs(lambdad, "hookinit", lambda found: any(
        str(e["message"]).startswith("INIT_REPORT") for e in found))
    text = "\n".join(str(e["message"]) for e in entries)
    assert "Status: error\tError Type: Runtime.BeforeSnapshotError" in text, text
    assert "in connect" in text and "ConnectionError: database unreachable at snapshot" in text
    assert wait_for(lambda: [lambdad.owner(c) for c in lambdad.containers("hookinit")]
                    == [("hookinit", 1)])  # v2's instance is gone


def test_a_failing_after_restore_hook_fails_that_workers_request_and_the_next_worker_serves(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    lambdad.deploy(_function(tmp_path / "af", "hookrestore", AFTER_FAILS_ONCE))
    failed = lambdad.http("hookrestore")
    assert failed.status == 502, failed.body
    error = failed.json()
    assert error["errorType"] == "Runtime.AfterRestoreError", error
    assert error["errorMessage"] == ("after-restore hook 'reopen' failed: ConnectionError: "
                                     "cannot reopen the pool")
    rid = failed.headers["lambda-request-id"]
    entries = request_logs(lambdad, "hookrestore", rid,
                           lambda found: any("cannot reopen" in str(e["message"])
                                             for e in found))
    text = "\n".join(str(e["message"]) for e in entries)
    assert "[ERROR] Runtime.AfterRestoreError: after-restore hook 'reopen' failed" in text
    assert "Traceback" in text and "ConnectionError: cannot reopen the pool" in text, text
    # The worker is gone; a new one (its hook succeeds now) serves the next request, in the
    # same instance.
    served = lambdad.http("hookrestore")
    assert served.status == 200, served.body
    assert len(lambdad.containers("hookrestore")) == 1
    assert lambdad.http("hookrestore").json() == served.json()  # that worker stays
    assert any(str(e["message"]).startswith("REPORT ")
               for e in function_logs(lambdad, "hookrestore", "--request-id", rid))
