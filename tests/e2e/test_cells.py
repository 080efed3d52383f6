"""Stem cells on the real engine: cold starts from zero specialize a pre-started cell."""

from __future__ import annotations

import concurrent.futures
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import docker

from tests.support.daemon import HttpResult, Lambdad, wait_for

PROBE = '''
import os, socket, sys

MARK = os.environ.get("MARK", "unset at import")
if os.path.exists(os.path.join(os.path.dirname(__file__), "broken.txt")):
    raise RuntimeError("broken on purpose")


def _try(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return type(exc).__name__


def _memory_limit():
    for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return None


def handler(event, context):
    print("probe ran for", context.function_name)
    if "sleep" in (event.get("rawQueryString") or ""):
        import time
        time.sleep(5)
    return {
        "function": context.function_name,
        "version": context.function_version,
        "host": socket.gethostname(),
        "mark": MARK,
        "files": sorted(os.listdir("/var/task")),
        "write_own_code": _try(lambda: open(__file__, "a").close()),
        "create_in_task": _try(lambda: open("/var/task/new.py", "w").close()),
        "write_deps": _try(lambda: open("/opt/lambda/deps/x.py", "w").close()),
        "memory_limit": _memory_limit(),
        "helper": (__import__("lambdahelper").shout("hi")
                   if "deps" in (event.get("rawQueryString") or "") else None),
    }
'''


def write_probe(folder: Path, name: str, *, memory: int = 128, deps: bool = False,
                max_instances: int = 10, timeout: int = 10, min_instances: int = 0,
                env: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(PROBE)
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\nhandler = "handler.handler"\ntimeout = {timeout}\nmemory = {memory}\n'
        f'[env]\nMARK = "{name}-env"\n{env}'
        f"[scaling]\nmin_instances = {min_instances}\nmax_instances = {max_instances}\n"
        "idle_timeout = 1\n")
    if deps:
        (folder / "requirements.txt").write_text("lambdahelper==1.2.3\n")
    return folder




def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # moved into a cell or removed meanwhile
        return ""


def ready_cells(daemon: Lambdad) -> list[object]:
    return [c for c in daemon.containers()
            if "lambda.cell" in c.labels and daemon.owner(c)[0] is None
            and c.status == "running"]


def cold_call(daemon: Lambdad, name: str, path: str = "/") -> HttpResult:
    """Waits until `name` scaled to zero and the pool is full, then calls it."""
    assert wait_for(lambda: daemon.containers(name) == []), "did not scale to zero"
    assert wait_for(lambda: len(ready_cells(daemon)) >= 2), "pool did not fill"
    return daemon.http(name, path)


def test_cold_start_specializes_a_cell_with_env_limits_and_read_only_code(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    lambdad.deploy(write_probe(tmp_path / "big", "cellbig", memory=256))
    response = cold_call(lambdad, "cellbig")
    assert response.status == 200, response.body
    assert response.headers["lambda-cold-start"] == "cell"
    event = json.loads(response.body)
    assert event["function"] == "cellbig" and event["mark"] == "cellbig-env"  # env before import
    assert event["files"] == ["handler.py", "lambda.toml"]
    assert event["write_own_code"] != "ok" and event["create_in_task"] != "ok"
    assert event["write_deps"] != "ok"
    assert event["memory_limit"] == 256 * 1024 * 1024
    warm = lambdad.http("cellbig", "/")
    assert warm.headers["lambda-cold-start"] == "warm"
    # The specialized cell carries the function's name; the pool refilled behind it.
    assert wait_for(lambda: len(lambdad.containers("cellbig")) == 1)  # renamed once loaded
    assert wait_for(lambda: len(ready_cells(lambdad)) >= 2)
    logs = lambdad.cli("logs", "cellbig", "--since", "5m")
    assert logs.code == 0
    report = [line for line in logs.stdout.splitlines() if "REPORT RequestId" in line]
    assert any("Start: cell" in line and "Init Duration" in line for line in report), logs.stdout
    # The code folder is the daemon's: a function's user can read, not write, and the
    # artifacts themselves are not reachable by other users on the host.
    artifacts = lambdad.state_dir / "artifacts"
    assert stat.S_IMODE(artifacts.stat().st_mode) == 0o700


def test_dependencies_from_requirements_load_in_a_cell(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(write_probe(tmp_path / "deps", "celldeps", deps=True))
    response = cold_call(lambdad, "celldeps", "/?deps=1")
    assert response.status == 200, response.body
    assert response.headers["lambda-cold-start"] == "cell"
    assert json.loads(response.body)["helper"] == "HI!"


def test_cold_starts_move_in_a_copy_linked_ahead(lambdad: Lambdad, tmp_path: Path) -> None:
    """A deployed version's files are linked ahead of its first cold start through a cell,
    and again after each (runtime/staging.py); the start only moves them in: the same
    files, read-only, deps importable. The copy of a deleted version is removed."""

    def copies() -> list[Path]:  # other functions' copies lie beside: read each one's name
        return [stage for stage in (lambdad.state_dir / "c").glob("stage-*")
                if 'name = "cellstaged"' in _read(stage / "task" / "lambda.toml")]

    lambdad.deploy(write_probe(tmp_path / "staged", "cellstaged", deps=True))
    for _ in range(2):
        assert wait_for(lambda: len(copies()) == 1)
        response = cold_call(lambdad, "cellstaged", "/?deps=1")
        assert response.status == 200, response.body
        assert response.headers["lambda-cold-start"] == "cell"
        event = json.loads(response.body)
        assert event["helper"] == "HI!"
        assert event["files"] == ["handler.py", "lambda.toml", "requirements.txt"]
        assert event["write_own_code"] != "ok" and event["create_in_task"] != "ok"
        assert event["write_deps"] != "ok"
    lines = [line for line in lambdad.log().splitlines()
             if "instance specialized function=cellstaged" in line]
    # (the deploy's own start, before the version is active, may come first, linked)
    assert len(lines) >= 2 and all("staged=True" in line for line in lines[-2:]), \
        "\n".join(lines)
    assert wait_for(lambda: len(copies()) == 1)  # for the next one
    assert lambdad.cli("delete", "cellstaged").code == 0
    assert wait_for(lambda: copies() == [], timeout=10)


def test_a_cell_never_serves_another_function(lambdad: Lambdad, tmp_path: Path) -> None:
    for name in ("isola", "isolb"):
        lambdad.deploy(write_probe(tmp_path / name, name))
    assert wait_for(lambda: lambdad.containers("isola") == [] and
                    lambdad.containers("isolb") == [])

    def call(i: int) -> tuple[str, str]:
        name = "isola" if i % 2 else "isolb"
        response = lambdad.http(name, "/", method="POST", body=b"{}")
        assert response.status == 200, response.body
        data = json.loads(response.body)
        assert data["files"] == ["handler.py", "lambda.toml"]
        return data["host"], data["function"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        served = list(pool.map(call, range(40)))
    by_host: dict[str, set[str]] = {}
    for host, function in served:
        by_host.setdefault(host, set()).add(function)
    assert all(len(functions) == 1 for functions in by_host.values()), by_host
    assert {f for fs in by_host.values() for f in fs} == {"isola", "isolb"}


def test_init_error_is_a_502_with_the_error_and_the_cell_is_discarded(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    lambdad.deploy(write_probe(tmp_path / "brk", "cellbroken"))
    # Break the stored artifact, as a bad file in the code would at a later cold start.
    task = lambdad.state_dir / "artifacts" / "cellbroken" / "v1" / "task"
    (task / "broken.txt").write_text("yes")
    response = cold_call(lambdad, "cellbroken")
    assert response.status == 502
    error = json.loads(response.body)
    assert "failed to initialize" in error["message"]
    assert "Runtime.ImportModuleError" in error["message"]
    assert "broken on purpose" in error["message"]
    assert wait_for(lambda: lambdad.containers("cellbroken") == [])  # discarded, not kept
    logs = lambdad.cli("logs", "cellbroken", "--since", "5m")
    assert "INIT_REPORT Init Duration" in logs.stdout and "Error Type: Runtime.ImportModuleError" \
        in logs.stdout
    assert "RuntimeError: broken on purpose" in logs.stdout  # the traceback
    (task / "broken.txt").unlink()
    assert cold_call(lambdad, "cellbroken").status == 200


def test_a_burst_at_zero_instances_is_served_and_the_pool_refills(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    daemon.deploy(write_probe(tmp_path / "burst", "burst", max_instances=100))
    assert wait_for(lambda: daemon.containers("burst") == [])
    assert wait_for(lambda: len(ready_cells(daemon)) >= 2)

    def call(_: int) -> tuple[int, str]:
        response = daemon.http("burst", "/", method="POST", body=b"{}", timeout=60)
        return response.status, response.headers.get("lambda-cold-start", "")

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        results = list(pool.map(call, range(100)))
    assert [status for status, _ in results] == [200] * 100
    starts = {start for _, start in results}
    assert "cell" in starts and starts <= {"cell", "container", "warm"}
    assert wait_for(lambda: len(ready_cells(daemon)) == 2)  # refilled, and no more
    assert wait_for(lambda: daemon.containers("burst") == [])  # scaled back to zero
    # Deleting the function and stopping the daemon leave no container behind.
    assert daemon.cli("delete", "burst").code == 0
    daemon.stop()
    assert daemon.containers() == []


def test_dockerfile_functions_pause_when_idle_and_unpause_on_request(
    fresh_lambdad: Lambdad
) -> None:
    daemon = fresh_lambdad
    daemon.stop()
    daemon.extra_args += ["--pause-after", "0.5"]
    daemon.start()
    daemon.deploy("raw-http", "--name", "frozen", "--min-instances", "1")
    client = docker.from_env()

    def paused() -> bool:
        (container,) = daemon.containers("frozen")
        return bool(client.api.inspect_container(container.id)["State"]["Paused"])

    assert wait_for(paused, timeout=10)
    response = daemon.http("frozen", "/")
    answered = time.time()
    assert response.status == 200 and response.headers["lambda-cold-start"] == "unpaused"
    assert daemon.http("frozen", "/").headers["lambda-cold-start"] == "warm"
    # Thawed through its cgroup freezer: Docker hears of it once the instance is idle
    # (lambdad settles Docker's view: its unpause event), then it is frozen again.
    (container,) = daemon.containers("frozen")
    assert wait_for(lambda: list(client.events(
        since=int(answered), until=int(time.time()) + 1, decode=True,
        filters={"container": container.id, "event": "unpause"})), timeout=10)
    assert wait_for(paused, timeout=10)  # idle again: frozen again
    # A paused instance still stops cleanly with its function.
    assert daemon.cli("delete", "frozen").code == 0
    assert daemon.containers("frozen") == []
    assert os.path.isdir(daemon.state_dir / "c")


def test_stats_report_the_pool_and_instance_memory(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(write_probe(tmp_path / "mem", "cellmem", min_instances=1))
    assert lambdad.http("cellmem", "/").status == 200  # a live instance to measure
    assert wait_for(lambda: len(ready_cells(lambdad)) >= 2)

    def small_class() -> dict[str, Any]:
        pool = lambdad.cli("stats", "--cells", "-o", "json")
        assert pool.code == 0, pool.stderr
        (small,) = [c for c in pool.json()
                    if c["resource_class"] == "128MiB/1cpu/256pids/none"]
        return dict(small)

    # Docker says running before the cell's socket answers; lambdad counts it ready then.
    assert wait_for(lambda: small_class()["ready"] >= 2)
    small = small_class()
    assert small["ready"] >= 2 and small["memory_bytes"] > 0
    stats = lambdad.cli("stats", "cellmem", "-o", "json")
    assert stats.code == 0, stats.stderr
    (function,) = stats.json()
    assert function["instances_now"] >= 1 and function["memory_bytes"] > 0
    table = lambdad.cli("stats", "cellmem")
    assert "STEM CELLS (CLASS)" in table.stdout and "128MiB/1cpu/256pids/none" in table.stdout


def test_a_cell_enforces_the_function_timeout(lambdad: Lambdad, tmp_path: Path) -> None:
    lambdad.deploy(write_probe(tmp_path / "slow", "cellslow", timeout=1))
    started = time.monotonic()
    response = cold_call(lambdad, "cellslow", "/?sleep=1")
    assert response.status == 504, response.body
    assert time.monotonic() - started < 30
    assert "timeout of 1 s" in json.loads(response.body)["message"]
    assert wait_for(lambda: lambdad.containers("cellslow") == [])  # the instance was stopped


def test_a_restrictive_umask_leaves_code_and_wheels_readable_on_both_paths(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    """The unit runs lambdad with a umask; pip and mkdir honour it, and the function's user
    (uid 10001, neither owner nor group) must still read packages and wheels."""
    daemon = fresh_lambdad
    daemon.stop()
    daemon.umask = 0o077
    daemon.start()
    folder = write_probe(tmp_path / "umask", "umasked", deps=True)
    (folder / "pkg" / "inner").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "inner" / "__init__.py").write_text("VALUE = 'deep'\n")
    (folder / "handler.py").write_text(
        "import lambdahelper\nfrom pkg.inner import VALUE\n\n"
        "def handler(event, context):\n    return {'v': VALUE, 'h': lambdahelper.shout('x')}\n")
    daemon.deploy(folder)  # the deploy's instance: a new container of the image
    first = daemon.http("umasked", "/")
    assert first.status == 200, first.body
    assert first.json() == {"v": "deep", "h": "X!"}
    again = cold_call(daemon, "umasked")  # from zero: a specialized stem cell
    assert again.status == 200, again.body
    assert again.headers["lambda-cold-start"] == "cell"
    assert again.json() == {"v": "deep", "h": "X!"}


def test_a_variable_read_at_process_start_gets_its_own_container(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    """PYTHONHASHSEED set after the interpreter started would do nothing: such a function
    never takes a cell, so it behaves the same on every path."""
    lambdad.deploy(write_probe(tmp_path / "seed", "cellseed", env='PYTHONHASHSEED = "0"\n'))
    response = cold_call(lambdad, "cellseed")
    assert response.status == 200, response.body
    assert response.headers["lambda-cold-start"] == "container"
