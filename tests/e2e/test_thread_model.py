"""The thread and process model a handler runs under, the same on both cold paths.

Two daemons on the real engine: one with stem cells (each deploy below takes a ready cell)
and one with `--cell-pool-size 0` (each deploy starts a container). The probe does at
import what Lambda apps do there (AWS's graceful-shutdown sample's `signal.signal`,
`asyncio.get_event_loop()`, a thread-local and a contextvar, a Mangum-like adapter made at
import) and reports what its handler sees; both paths must report the same, at concurrency
1 and with 8 requests in flight. A handler run off the main thread fails here: the import
raises (signal.signal, get_event_loop) and every "main" flag would be False.
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import HttpResult, Lambdad, wait_for

pytestmark = pytest.mark.slow

PROBE = '''
"""Records the thread model it runs under."""

import asyncio
import contextvars
import locale
import os
import resource
import signal
import sys
import threading
import time


def _thread():
    return {"main": threading.current_thread() is threading.main_thread(),
            "name": threading.current_thread().name}


IMPORTED = {**_thread(), "pid": os.getpid()}


def _on_sigterm(signum, frame):  # AWS's graceful-shutdown sample
    print(f"[runtime] SIGTERM received pid={os.getpid()}", flush=True)
    print("[runtime] cleaning up", flush=True)
    print("[runtime] exiting", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, _on_sigterm)  # ValueError off the main thread
LOOP = asyncio.get_event_loop()  # RuntimeError off the main thread (no loop there)
LOCAL = threading.local()
LOCAL.value = "set at import"
VAR = contextvars.ContextVar("VAR", default="never set")
VAR.set("set at import")


class Adapter:
    """Like Mangum: made at import, asks asyncio for the current loop on every call."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.get_event_loop()

    def __call__(self, event, context):
        loop = asyncio.get_event_loop()
        asyncio.set_event_loop(loop)
        task = loop.create_task(self.app(event, context))
        loop.run_until_complete(task)
        return {**task.result(), "same_loop_as_import": loop is self.loop}


async def app(event, context):
    await asyncio.sleep(0.001)
    in_executor = await asyncio.get_running_loop().run_in_executor(None, lambda: 21 * 2)
    return {"var_in_task": VAR.get() == context.aws_request_id, "executor": in_executor,
            **_thread()}


ADAPTED = Adapter(app)


def _rendezvous(folder, request_id, count, timeout=30.0):
    """Returns once `count` requests of this instance are in flight at once (/tmp is the
    container's, shared by its processes)."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, request_id), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(folder))} of {count} requests came")
        time.sleep(0.005)


def _signal_name(handler):
    return getattr(handler, "__name__", None) or str(handler)


def _environment():
    """What else a handler can observe about its process."""
    fds = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            fds.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}').split(':')[0]}")
        except OSError:
            pass
    mask = os.umask(0o22)
    os.umask(mask)
    return {
        "uid": [os.getuid(), os.getgid(), os.getgroups()], "umask": mask,
        "cwd": os.getcwd(), "sys_path": sys.path, "argv": sys.argv,
        "executable": sys.executable, "flags": list(sys.flags),
        "env": {k: v for k, v in sorted(os.environ.items()) if k != "HOSTNAME"},
        "rlimits": {name: resource.getrlimit(getattr(resource, name))
                    for name in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CORE",
                                 "RLIMIT_STACK", "RLIMIT_FSIZE")},
        "signals": {sig.name: _signal_name(signal.getsignal(sig))
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE,
                                signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1)},
        "fds": fds,
        "stdout": [type(sys.stdout).__name__, sys.stdout.encoding, sys.stdout.line_buffering],
        "locale": locale.getlocale(), "tz": time.tzname,
        "modules": sorted(m for m in sys.modules if not m.startswith("_")),
        "file": __file__, "name": __name__,
        "writable": [os.access(__file__, os.W_OK), os.access(os.path.dirname(__file__),
                                                               os.W_OK)],
        "policy": type(asyncio.get_event_loop_policy()).__name__, "loop": type(LOOP).__name__,
    }


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    if "rendezvous" in query:
        _rendezvous(f"/tmp/rv-{query['rendezvous']}", context.aws_request_id,
                    int(query["count"]))
    LOCAL.calls = getattr(LOCAL, "calls", 0) + 1
    var_seen = VAR.get()
    VAR.set(context.aws_request_id)
    threads = threading.active_count()
    result = {
        "request_id": context.aws_request_id,
        "imported": IMPORTED,
        "handler": _thread(),
        "pid": os.getpid(),
        "threads": threads,
        "local": getattr(LOCAL, "value", "missing"),
        "calls": LOCAL.calls,
        "var_seen": var_seen,
        "get_event_loop_is_import_loop": asyncio.get_event_loop() is LOOP,
        "loop_run": LOOP.run_until_complete(app(event, context)),
        "adapter": ADAPTED(event, context),
        "sigterm_handler_set": signal.getsignal(signal.SIGTERM) is _on_sigterm,
    }
    if "environment" in query:
        result["environment"] = _environment()
    return result
'''

PATHS = ("cell", "container")


def write_probe(folder: Path, name: str, *, concurrency: int, idle_timeout: int = 300) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.py").write_text(PROBE)
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\nhandler = "probe.handler"\ntimeout = 60\n'
        f"[scaling]\nconcurrency = {concurrency}\nmax_instances = 1\n"
        f"idle_timeout = {idle_timeout}\n")
    return folder


def cells_ready(daemon: Lambdad) -> int:
    """Stem cells ready as lambdad counts them (a running container may not answer yet)."""
    pool = daemon.cli("stats", "--cells", "-o", "json")
    assert pool.code == 0, pool.stderr
    return sum(int(c["ready"]) for c in pool.json())


def deploy_on_path(daemon: Lambdad, path: str, folder: Path, name: str) -> str:
    """Deploys through the real CLI; checks that step 3 names `path`, and that it is the
    path taken: a specialized cell keeps its `lambda.cell` label, a container has its
    function's labels. Returns the CLI's progress output."""
    if path == "cell":
        assert wait_for(lambda: cells_ready(daemon) >= 1, 60), "no stem cell got ready"
    result = daemon.deploy(folder)
    words = {"cell": "stem cell", "container": "container"}[path]
    assert f"[3/3] Starting instance ({words})... Done." in result.stderr.splitlines(), \
        result.stderr
    [container] = daemon.containers(name)
    assert ("lambda.cell" in container.labels) == (path == "cell"), container.labels
    assert ("lambda.function" in container.labels) == (path == "container")
    return result.stderr


@dataclass
class Deployed:
    daemon: Lambdad
    progress: dict[str, str]  # function -> the deploy's progress lines


@pytest.fixture(scope="module")
def no_cells(wheelhouse: Path) -> Iterator[Lambdad]:
    daemon = Lambdad(extra_args=["--wheelhouse", str(wheelhouse), "--cell-pool-size", "0"])
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def deployed(lambdad: Lambdad, no_cells: Lambdad, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Deployed]:
    """tm1 (concurrency 1) and tm8 (concurrency 8), deployed on each path."""
    root = tmp_path_factory.mktemp("thread-model")
    # Stem cells are kept for the classes of routed functions: a first function brings them.
    lambdad.deploy("greet", "--name", "seed")
    result: dict[str, Deployed] = {}
    for path, daemon in (("cell", lambdad), ("container", no_cells)):
        progress = {name: deploy_on_path(daemon, path, write_probe(
            root / path / name, name, concurrency=concurrency), name)
            for name, concurrency in (("tm1", 1), ("tm8", 8))}
        result[path] = Deployed(daemon, progress)
    return result


def get(daemon: Lambdad, name: str, query: str = "") -> dict[str, Any]:
    response = daemon.http(name, f"/?{query}")
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def sequential(daemon: Lambdad, name: str) -> list[dict[str, Any]]:
    return [get(daemon, name, "environment=1" if i == 0 else "") for i in range(3)]


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between any two requests (ids, pids)."""
    out = {key: value for key, value in result.items() if key not in ("request_id", "pid")}
    out["imported"] = {k: v for k, v in result["imported"].items() if k != "pid"}
    out["var_seen"] = "import" if result["var_seen"] == "set at import" else "earlier call"
    return out


def test_deploy_says_which_path_it_took(deployed: dict[str, Deployed]) -> None:
    # deploy_on_path checked each deploy's message against the labels of what it started.
    for path, words in (("cell", "stem cell"), ("container", "container")):
        for progress in deployed[path].progress.values():
            lines = progress.splitlines()
            assert lines[0] == "[1/3] Packaging function code... Done."
            assert f"[3/3] Starting instance ({words})... Done." in lines


def test_import_and_handler_share_the_main_thread_on_both_paths(
    deployed: dict[str, Deployed]
) -> None:
    runs = {path: sequential(deployed[path].daemon, "tm1") for path in PATHS}
    for path, results in runs.items():
        first, second, third = results
        assert first["imported"]["main"] and first["imported"]["name"] == "MainThread", path
        for result in results:
            assert result["handler"] == {"main": True, "name": "MainThread"}, (path, result)
            assert result["local"] == "set at import"  # the import's thread-local
            assert result["get_event_loop_is_import_loop"] and result["sigterm_handler_set"]
            for run in (result["loop_run"], result["adapter"]):  # a task sees its own call's
                assert run == {**run, "main": True, "name": "MainThread", "executor": 42,
                               "var_in_task": True}
            assert result["adapter"]["same_loop_as_import"]
        # One process serves these calls, one after another, as one Lambda environment
        # would: its thread-local and contextvar carry over from call to call.
        assert [r["calls"] for r in results] == [1, 2, 3]
        assert first["var_seen"] == "set at import"
        assert second["var_seen"] == first["request_id"]
        assert third["var_seen"] == second["request_id"]
        assert len({r["pid"] for r in results}) == 1
        assert first["pid"] != first["imported"]["pid"]  # a worker forked after the import
    assert [comparable(r) for r in runs["cell"]] == [comparable(r) for r in runs["container"]]


def test_the_handler_sees_the_same_process_on_both_paths(
    deployed: dict[str, Deployed]
) -> None:
    seen = {path: get(deployed[path].daemon, "tm8", "environment=1")["environment"]
            for path in PATHS}
    cell, container = seen["cell"], seen["container"]
    assert {k for k in cell if cell[k] != container.get(k)} == set()
    assert cell["cwd"] == "/var/task" and cell["sys_path"][0] == "/var/task"
    assert cell["signals"]["SIGTERM"] == "_on_sigterm"  # set at import, kept in the worker
    assert cell["writable"] == [False, False]
    # How lambdad started the runtime is the supervisor's business, not the function's.
    assert "LAMBDA_STEM_CELL" not in cell["env"]


def test_eight_requests_in_flight_each_run_on_a_main_thread_of_their_own(
    deployed: dict[str, Deployed]
) -> None:
    summaries = {}
    for path in PATHS:
        daemon = deployed[path].daemon
        meeting = uuid.uuid4().hex

        def call(_: int, daemon: Lambdad = daemon, meeting: str = meeting) -> HttpResult:
            return daemon.http("tm8", f"/?rendezvous={meeting}&count=8")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
        assert [r.status for r in responses] == [200] * 8, [r.body for r in responses]
        results = [r.json() for r in responses]
        # All 8 met inside the one instance at once: 8 processes, each on its main thread.
        assert len({r["pid"] for r in results}) == 8, path
        for result in results:
            assert result["handler"] == {"main": True, "name": "MainThread"}
            assert result["imported"]["main"] and result["local"] == "set at import"
            assert result["loop_run"]["main"] and result["adapter"]["main"]
            assert result["get_event_loop_is_import_loop"]
        summaries[path] = sorted(json.dumps(comparable(r), sort_keys=True) for r in results)
    assert summaries["cell"] == summaries["container"]


def test_sigterm_handler_runs_when_an_instance_scales_down(
    deployed: dict[str, Deployed], tmp_path: Path
) -> None:
    for path in PATHS:
        daemon = deployed[path].daemon
        deploy_on_path(daemon, path, write_probe(tmp_path / path, "tmstop", concurrency=1,
                                                 idle_timeout=1), "tmstop")
        pid = get(daemon, "tmstop")["pid"]
        assert wait_for(lambda daemon=daemon: daemon.containers("tmstop") == [], 60)
        assert wait_for(lambda daemon=daemon, pid=pid: sigterm_lines(daemon, "tmstop")
                        == [f"[runtime] SIGTERM received pid={pid}"]), \
            daemon.cli("logs", "tmstop").stdout
        # A cold start after the scale-down takes this daemon's path again.
        if path == "cell":
            assert wait_for(lambda daemon=daemon: cells_ready(daemon) >= 1, 60)
        response = daemon.http("tmstop", "/")
        assert response.status == 200 and response.headers["lambda-cold-start"] == path


def sigterm_lines(daemon: Lambdad, name: str) -> list[str]:
    """The SIGTERM handler's first line, as `lambdactl logs` shows it; each must come
    with its handler's other lines, outside any request."""
    result = daemon.cli("logs", name, "-o", "json")
    assert result.code == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    received = [e for e in entries if str(e["message"]).startswith("[runtime] SIGTERM")]
    exiting = [e for e in entries if e["message"] == "[runtime] exiting"]
    if len(exiting) != len(received):
        return []
    assert all(e["request_id"] in ("", None) for e in received + exiting), received
    return [str(e["message"]) for e in received]


def test_sigterm_handler_runs_when_lambdad_stops(deployed: dict[str, Deployed]) -> None:
    """Last in this module: it stops both daemons."""
    for path in PATHS:
        daemon = deployed[path].daemon
        pid = get(daemon, "tm1")["pid"]
        assert daemon.stop() == 0
        logs = daemon.state_dir / "logs" / "tm1" / "current.jsonl"
        entries = [json.loads(line) for line in logs.read_text().splitlines()]
        messages = [e["message"] for e in entries]
        assert f"[runtime] SIGTERM received pid={pid}" in messages, (path, messages[-10:])
        assert messages.index("[runtime] exiting") > messages.index(
            f"[runtime] SIGTERM received pid={pid}")
