"""The runtime's entry point: the image's CMD starts the supervisor isolated from the
function's files and variables; the zygote alone gets the task root, the deps and the
function's start-only variables (exec'd with them when it sets one).

Runs the image's real CMD (read from the Dockerfile, with the runtime's folder in place of
/opt/lambda/runtime) as a stem cell, from a working folder and with PYTHON* variables that
carry attacks: each attack records the pid of the process it ran in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_runtime_stem import RUNTIME_DIR, Cell

sys.path.insert(0, str(RUNTIME_DIR))

from lambda_runtime import worker
from lambda_runtime.worker import start_changes

from lambdad.runtime import cells

DOCKERFILE = RUNTIME_DIR / "Dockerfile"


def _attack(marks: Path, tag: str) -> str:
    return (f"import os\nopen({str(marks)!r} + '/{tag}-' + str(os.getpid()), 'w').close()\n")


APP = """
import os, sys
import helper, mine

def handler(event, context):
    return {"pid": os.getpid(), "ppid": os.getppid(), "path": sys.path,
            "shout": helper.shout(mine.WORD), "warnings": sys.warnoptions,
            "flags_isolated": sys.flags.isolated}
"""


def _cmd() -> list[str]:
    line = next(x for x in DOCKERFILE.read_text().splitlines() if x.startswith("CMD "))
    cmd: list[str] = json.loads(line[4:])
    assert cmd[0] == "python3"
    return [sys.executable,
            *(part.replace("/opt/lambda/runtime", str(RUNTIME_DIR)) for part in cmd[1:])]


@pytest.fixture
def booted() -> Iterator[tuple[Cell, Path]]:
    folder = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))
    marks, task, deps, extra = (folder / n for n in ("marks", "task", "deps", "extra"))
    for sub in (marks, task, deps, extra):
        sub.mkdir()
    (task / "lambda_runtime").mkdir()
    (task / "lambda_runtime" / "__init__.py").write_text(_attack(marks, "runtime"))
    (task / "lambda_runtime" / "__main__.py").write_text(_attack(marks, "runtime"))
    (task / "json.py").write_text(_attack(marks, "json"))
    (task / "app.py").write_text(APP)
    (task / "mine.py").write_text("WORD = 'own'\n")
    (deps / "helper.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (deps / "sitecustomize.py").write_text(_attack(marks, "deps-site"))
    (deps / "socket.py").write_text(_attack(marks, "socket"))
    (extra / "sitecustomize.py").write_text(_attack(marks, "env-site"))
    sock_path = str(folder / "s.sock")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # What the image and a function could set: the supervisor must ignore them all.
        "PYTHONPATH": f"{extra}:{deps}:{task}",
        "PYTHONSTARTUP": str(task / "json.py"),
        "PYTHONWARNINGS": "error",
        "LAMBDA_STEM_CELL": "1", "LAMBDA_SOCKET": sock_path,
        "LAMBDA_TASK_ROOT": str(task), "LAMBDA_DEPS_ROOT": str(deps),
    }
    proc = subprocess.Popen(_cmd(), env=env, cwd=task,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 5
    while not os.path.exists(sock_path):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    yield Cell(proc, folder, sock_path), marks
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=5)
    shutil.rmtree(folder, ignore_errors=True)


def _invoke(cell: Cell) -> dict[str, object]:
    status, body = cell.post("/", {}, {"Lambda-Invocation-Type": "direct",
                                       "Lambda-Request-Id": "req-1"})
    assert status == 200, body
    return body


def _init(cell: Cell, **env: str) -> None:
    status, body = cell.post("/init", {"handler": "app.handler",
                                       "task_root": str(cell.folder / "task"), "env": env})
    assert status == 200, body


def test_the_supervisor_runs_none_of_the_function_s_files(
        booted: tuple[Cell, Path]) -> None:
    cell, marks = booted
    assert list(marks.iterdir()) == []  # nothing ran at start
    _init(cell)
    body = _invoke(cell)
    assert body["shout"] == "OWN!"  # the task root and the deps are on the zygote's path
    path = body["path"]
    assert isinstance(path, list)
    assert path[:2] == [str(cell.folder / "task"), str(cell.folder / "deps")]
    assert body["warnings"] == [] and body["flags_isolated"] == 1  # a fork of the supervisor
    assert list(marks.iterdir()) == []  # modules the runtime imported are not re-imported


def test_start_only_variables_exec_the_zygote_not_the_supervisor(
        booted: tuple[Cell, Path]) -> None:
    cell, marks = booted
    extra = cell.folder / "extra"
    _init(cell, PYTHONPATH=str(extra), PYTHONWARNINGS="ignore::DeprecationWarning")
    body = _invoke(cell)
    assert body["shout"] == "OWN!"
    assert body["warnings"] == ["ignore::DeprecationWarning"]
    assert body["flags_isolated"] == 0
    path = body["path"]
    assert isinstance(path, list) and str(extra) in path
    assert path[:2] == [str(cell.folder / "task"), str(cell.folder / "deps")]
    # Its sitecustomize ran once, in the exec'd zygote, never in the supervisor.
    found = [m.name for m in marks.iterdir()]
    assert len(found) == 1 and found[0].startswith("env-site-")
    assert found[0] != f"env-site-{cell.proc.pid}" and found[0] != f"env-site-{body['pid']}"


def test_lambdad_and_the_runtime_agree_on_the_start_only_variables() -> None:
    """The runtime ships in the image and cannot import lambdad, so the list is written
    twice; lambdad sends such functions to containers, the runtime execs their zygote."""
    assert worker.STARTUP_ONLY_PREFIXES == cells.STARTUP_ONLY_PREFIXES
    assert worker.STARTUP_ONLY_NAMES == cells.STARTUP_ONLY_NAMES


def test_start_changes_lists_only_new_values_of_start_only_variables() -> None:
    current = {"TZ": "UTC", "PYTHONPATH": "/opt/lambda/runtime", "PATH": "/bin"}
    assert start_changes({"TZ": "UTC", "GREETING": "hi", "PATH": "/x"}, current) == []
    assert start_changes({"TZ": "Europe/Paris", "LD_PRELOAD": "/var/task/x.so",
                          "PYTHONPATH": "/opt/lambda/runtime", "LC_ALL": "C",
                          "MALLOC_ARENA_MAX": "2", "LANG": "C"}, current) == [
        "LANG", "LC_ALL", "LD_PRELOAD", "MALLOC_ARENA_MAX", "TZ"]
    assert start_changes({"GLIBC_TUNABLES": "x"}, {}) == ["GLIBC_TUNABLES"]
