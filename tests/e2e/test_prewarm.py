"""Pre-warming on deploy and the import's share of a cold start, with real containers, a
real lambdad and the real CLI: a function whose import sleeps IMPORT_S (an import-heavy
app, as far as timing goes).

- `deploy --prewarm N` starts N instances of the new version, their code imported, before
  traffic moves: the first requests to it are served warm, none waits for the import;
- a pre-warm whose import raises fails the deploy with the function's error, and the live
  version keeps serving; --prewarm above max_instances is refused before anything builds;
- a cold start that must import says how long the import took (Server-Timing import;dur=
  within init;dur=, the REPORT's Init Duration), through a stem cell and a container.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from lambdactl.package import pack
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.logs import reported, wait_logs

pytestmark = pytest.mark.slow

IMPORT_S = 1.5

SLOW_IMPORT = (
    "import socket\nimport time\n\n"
    f"time.sleep({IMPORT_S})  # what an import-heavy app's imports cost\n"
    "VERSION = {version!r}\n\n"
    "def handler(event, context):\n"
    "    params = event.get('queryStringParameters') or {{}}\n"
    "    start = time.time()\n"
    "    time.sleep(float(params.get('sleep', 0)))\n"
    "    if params.get('who'):  # which container served it, and when\n"
    "        return {{'version': VERSION, 'host': socket.gethostname(), 'start': start,\n"
    "                'end': time.time()}}\n"
    "    return VERSION\n"
)


def _function(folder: Path, name: str, version: str, *, scaling: str = "",
              extra: str = "", code: str | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(code or SLOW_IMPORT.format(version=version))
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\n{extra}\n[scaling]\nmax_instances = 2\n{scaling}\n')
    return folder


def _timed(lambdad: Lambdad, name: str, path: str = "/") -> tuple[float, dict[str, str], Any]:
    started = time.monotonic()
    response = lambdad.http(name, path)
    assert response.status == 200, response.body
    return time.monotonic() - started, response.headers, response.json()


def _durations(server_timing: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([\d.]+)", server_timing)}


def test_prewarmed_instances_serve_the_first_requests_warm(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    folder = _function(tmp_path / "pw", "prewarmed", "v1", scaling="idle_timeout = 120")
    lambdad.deploy(folder)
    assert lambdad.http("prewarmed").json() == "v1"
    _function(folder, "prewarmed", "v2", scaling="idle_timeout = 120")
    answers: list[tuple[int, bytes]] = []
    deploying = threading.Event()
    deploying.set()

    def keep_calling() -> None:  # v1 serves throughout the deploy, then v2: no gap
        while deploying.is_set():
            response = lambdad.http("prewarmed")
            answers.append((response.status, response.body))

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        result = lambdad.cli("deploy", str(folder), "--prewarm", "2")
    finally:
        deploying.clear()
        caller.join()
    assert result.code == 0, result.stderr
    assert "[3/3] Pre-warming 2 instances (" in result.stderr
    assert re.search(r"\[3/3\] Pre-warming 2 instances \((2 stem cells|2 containers|1 stem "
                     r"cell, 1 container)\)\.\.\. Done\.", result.stderr), result.stderr
    assert answers and all(status == 200 for status, _ in answers), answers
    assert {body for _, body in answers} <= {b'"v1"', b'"v2"'}
    # Both of v2's instances imported before the switch: two requests at once, the first
    # ones v2 sees, are served at the same time by two instances, both warm, neither
    # waiting for an import. (With one instance loaded, the second would wait for the
    # first to end, or for a cold start's import.)
    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(lambda _: _timed(lambdad, "prewarmed", "/?sleep=0.5&who=1"),
                              range(2)))
    for elapsed, headers, body in first:
        assert body["version"] == "v2"
        assert headers["lambda-cold-start"] == "warm", headers
        assert set(_durations(headers["server-timing"])) == {"gateway", "function"}, headers
        assert elapsed < IMPORT_S, elapsed  # it did not wait for an import
    (_, _, one), (_, _, other) = first
    assert one["host"] != other["host"]
    assert max(one["start"], other["start"]) < min(one["end"], other["end"])  # at once
    assert wait_for(lambda: len(lambdad.containers("prewarmed")) == 2)  # v1's went


FAILING_IMPORTS = {
    # an import that raises: the function's error, as Lambda words it
    "raise": ("import time\ntime.sleep(0.5)\nraise RuntimeError('no database configured')\n",
              "failed to initialize: Runtime.ImportModuleError: Unable to import module "
              "'handler': no database configured", "Runtime.ImportModuleError"),
    # a process that dies while importing
    "crash": ("import os, time\ntime.sleep(0.5)\nos._exit(3)\n",
              "failed to initialize: Runtime.ExitError", "Runtime.ExitError"),
}


@pytest.mark.parametrize("kind", sorted(FAILING_IMPORTS))
def test_a_prewarm_whose_import_fails_fails_the_deploy_and_v1_serves(
    lambdad: Lambdad, tmp_path: Path, kind: str
) -> None:
    name = f"prewarmfail-{kind}"
    code, error, error_type = FAILING_IMPORTS[kind]
    folder = _function(tmp_path / "pf", name, "v1")
    lambdad.deploy(folder)
    (folder / "handler.py").write_text(code)
    result = lambdad.cli("deploy", str(folder), "--prewarm", "2")
    assert result.code == 9, result.stderr
    # The function's init error, once (both instances failed alike; the first is told).
    assert f"{name} v2 {error}" in result.stderr, result.stderr
    assert result.stderr.count(error_type) == 1, result.stderr
    assert "[3/3] Pre-warming 2 instances (" in result.stderr
    assert lambdad.http(name).json() == "v1"
    versions = lambdad.cli("versions", name, "-o", "json").json()
    assert [v["version"] for v in versions] == [1]
    info = lambdad.cli("get", name, "-o", "json").json()
    assert info["version"] == 1
    # The pre-warmed containers are gone (stem cells or not): only v1's instance runs.
    assert wait_for(lambda: [lambdad.owner(c) for c in lambdad.containers(name)]
                    == [(name, 1)] and not _loaded_cells_without_owner(lambdad))


def _loaded_cells_without_owner(lambdad: Lambdad) -> list[str]:
    """Stem cells that were given a version's code but never became its instance: a
    failed specialization that is still there."""
    left = []
    for container in lambdad.containers():
        if "lambda.cell" in container.labels and lambdad.owner(container)[0] is None:
            task = lambdad.state_dir / "c" / container.labels["lambda.instance"] / "task"
            if task.is_dir() and any(task.iterdir()):
                left.append(container.name)
    return left


def _ready_cells(lambdad: Lambdad) -> int:
    return sum(1 for c in lambdad.containers() if "lambda.cell" in c.labels
               and lambdad.owner(c)[0] is None and c.status == "running")


def test_prewarm_above_max_instances_is_refused(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "pm", "prewarmmax", "v1",
                       code="def handler(event, context):\n    return 'v1'\n")
    lambdad.deploy(folder)
    result = lambdad.cli("deploy", str(folder), "--prewarm", "3")
    assert result.code == 5, result.stderr
    assert "--prewarm 3 is more than the function's max_instances (2)" in result.stderr
    assert [v["version"] for v in
            lambdad.cli("versions", "prewarmmax", "-o", "json").json()] == [1]
    # A deploy flag can raise the limit for the version it deploys.
    raised = lambdad.cli("deploy", str(folder), "--prewarm", "3", "--max-instances", "3")
    assert raised.code == 0, raised.stderr
    assert "[3/3] Pre-warming 3 instances (" in raised.stderr
    # gRPC users get INVALID_ARGUMENT for the same request.
    code = pack(folder)
    data = code.file.read()
    code.file.close()
    header = pb.DeployHeader(name="prewarmmax", size=len(data),
                             sha256=hashlib.sha256(data).hexdigest(), prewarm=4)
    with grpc.insecure_channel(f"unix://{lambdad.socket_path}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Deploy(iter([pb.DeployRequest(header=header),
                                   pb.DeployRequest(chunk=data)]), timeout=60))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "max_instances (2)" in (refused.value.details() or "")  # lambda.toml's


@pytest.mark.parametrize("path", ["cell", "container"])
def test_a_cold_start_says_how_long_the_import_took(
    lambdad: Lambdad, tmp_path: Path, path: str
) -> None:
    """Server-Timing's import;dur= is the import, init;dur= the whole start around it;
    the REPORT's Init Duration is the import too. TZ is a variable a started process
    ignores, so that function gets a container of its own, never a stem cell."""
    name = f"coldimport{path}"
    env = '[env]\nTZ = "UTC"\n' if path == "container" else ""
    lambdad.deploy(_function(tmp_path / name, name, "v1", scaling="idle_timeout = 1",
                             extra=env))
    assert wait_for(lambda: lambdad.containers(name) == [], timeout=30)
    if path == "cell":  # the stem cells are back after the deploy took one
        assert wait_for(lambda: _ready_cells(lambdad) >= 2)
    response = lambdad.http(name)
    assert response.status == 200 and response.json() == "v1"
    assert response.headers["lambda-cold-start"] == path
    timing = _durations(response.headers["server-timing"])
    assert set(timing) == {"gateway", "function", "init", "import"}, timing
    assert IMPORT_S * 1000 <= timing["import"] <= timing["init"], timing
    request_id = response.headers["lambda-request-id"]
    entries = wait_logs(lambdad, name, reported(request_id), "--request-id", request_id)
    report = next(str(e["message"]) for e in entries
                  if str(e["message"]).startswith("REPORT "))
    init = re.search(r"Init Duration: ([\d.]+) ms", report)
    assert init is not None, report
    assert IMPORT_S * 1000 <= float(init[1]) <= timing["init"], (report, timing)


def test_a_prewarm_that_times_out_fails_the_deploy_and_v1_serves(tmp_path: Path) -> None:
    """An import that outlasts the start timeout: the deploy says so, the instances still
    importing are removed, and v1 serves on. (A daemon of its own, with a 2 s timeout.)"""
    with running_daemon("--start-timeout", "2") as daemon:
        folder = _function(tmp_path / "pt", "prewarmslow", "v1",
                           code="def handler(event, context):\n    return 'v1'\n")
        daemon.deploy(folder)
        (folder / "handler.py").write_text(
            "import time\ntime.sleep(30)\n\ndef handler(event, context):\n    return 'v2'\n")
        started = time.monotonic()
        result = daemon.cli("deploy", str(folder), "--prewarm", "2")
        assert result.code == 1, result.stderr
        assert "prewarmslow v2 did not finish loading its code within 2 s" in result.stderr
        assert time.monotonic() - started < 30  # it did not wait for the import
        assert daemon.http("prewarmslow").json() == "v1"
        assert [v["version"] for v in
                daemon.cli("versions", "prewarmslow", "-o", "json").json()] == [1]
        assert wait_for(lambda: [daemon.owner(c) for c in daemon.containers("prewarmslow")]
                        == [("prewarmslow", 1)] and not _loaded_cells_without_owner(daemon))
