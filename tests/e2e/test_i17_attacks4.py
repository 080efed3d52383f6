"""Issue 17 attacks (round 4), the function's code hostile, through a real lambdad, real
Docker and its gateway.

A worker that ends before its first request: an after-restore hook that calls os._exit
(or a registry whose getter raises SystemExit, or a zygote that cannot fork). The runtime
forked a replacement for each such worker, in a loop, until lambdad's timeout: the caller
got a 504, the instance was discarded, the logs said nothing. Now the request fails at once
with Runtime.ExitError, the instance stays, and a request after the hook relents is served.
(Runtime changes: run with LAMBDA_TEST_RUNTIME_IMAGE set to a runtime image built from
this tree until the shared one is rebuilt.)

A worker that renames itself "VmHWM:999999kB": its REPORT said Max Memory Used: 976 MB (the
supervisor took the first "VmHWM:" of /proc/PID/status, the Name line), and the forged peak
kept its memory cost from being measured again. Now the kernel's figure is read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad
from tests.support.functions import write_function
from tests.support.logs import request_logs

pytestmark = pytest.mark.docker

EXITS_IN_AFTER_RESTORE = '''
import os

from snapshot_restore_py import register_after_restore


@register_after_restore
def gone():
    if not os.path.exists("/tmp/let-live"):
        os._exit(3)


def handler(event, context):
    return {"pid": os.getpid()}
'''


def test_a_worker_that_exits_in_its_after_restore_hook_fails_its_request_at_once(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    lambdad.deploy(write_function(
        tmp_path / "arexit", EXITS_IN_AFTER_RESTORE,
        'name = "arexit"\ntimeout = 5\n[scaling]\nconcurrency = 1\nmax_instances = 1\n'))
    (instance,) = lambdad.containers("arexit")
    began = time.monotonic()
    failed = lambdad.http("arexit")
    # The old runtime: 504 after the function's timeout of 5 s, the instance discarded.
    assert failed.status == 502, failed.body
    assert time.monotonic() - began < 4
    error = failed.json()
    assert error["errorType"] == "Runtime.ExitError", error
    assert "worker process ended before its first request" in error["errorMessage"], error
    assert [c.id for c in lambdad.containers("arexit")] == [instance.id]  # it serves on

    # Once the hook relents (its mark in the instance's own /tmp), the next request gets a
    # worker that lives, in the same instance.
    marked = instance.exec_run(["touch", "/tmp/let-live"], user="10001")
    assert marked.exit_code == 0, marked.output
    served = lambdad.http("arexit")
    assert served.status == 200, served.body
    assert [c.id for c in lambdad.containers("arexit")] == [instance.id]
    logs = lambdad.cli("logs", "arexit", "--tail", "200", "-o", "json")
    messages = [str(json.loads(line)["message"]) for line in logs.stdout.splitlines()]
    assert any(m.startswith("[ERROR] the function's worker process ended before its first "
                            "request") for m in messages), messages


RENAMED = '''
def handler(event, context):
    # /proc/PID/status begins "Name:\\t<comm>": the supervisor read the first "VmHWM:".
    with open("/proc/self/comm", "w") as f:
        f.write("VmHWM:999999kB")
    return "renamed"
'''


def test_a_worker_cannot_forge_its_reports_max_memory_used(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    lambdad.deploy(write_function(tmp_path / "renamed", RENAMED, 'name = "renamed"\n'))
    ids = []
    for _ in range(2):  # the rename, then a request by the renamed worker
        answer = lambdad.http("renamed")
        assert answer.status == 200, answer.body
        ids.append(answer.headers["lambda-request-id"])
    for rid in ids:
        reports = [str(e["message"]) for e in request_logs(lambdad, "renamed", rid)
                   if str(e["message"]).startswith("REPORT ")]
        assert len(reports) == 1, reports
        used = int(reports[0].split("Max Memory Used: ")[1].split(" MB")[0])
        assert used <= 128, reports  # the old supervisor: 976 MB
