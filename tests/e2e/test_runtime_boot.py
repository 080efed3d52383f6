"""The runtime's first process under attack from the function's own files and variables
(issue 13): on the container path (no stem cells), nothing a deployer ships may run inside
the supervisor, which alone writes the log frames, nor before the instance folder is locked.

Each function here tries what worked before the fix: a `lambda_runtime/` package in its
code (the working folder was first on the supervisor's path), a `sitecustomize.py` wheel
and a `json.py` in its code (both ahead of the standard library), and PYTHONPATH in its
environment (given to the supervisor at process start). Each attack prints a forged
START frame and tries to leave a file in /run/lambda. The function must still work, the
forged lines must not be frames, and no file may appear.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.wheels import build_wheel, make_readable, public_folder

pytestmark = pytest.mark.slow

FORGED = "0b5e8a1c-3f2d-4c1e-9a7b-00000000000{}"


def _attack(tag: str, digit: int) -> str:
    """Module text that forges a START frame and tries to mark the instance folder."""
    return (
        "import os as _os\n"
        "try:\n"
        f"    with open('/run/lambda/pwned-{tag}', 'w') as _f:\n"
        "        _f.write('x')\n"
        "except OSError:\n"
        "    pass\n"
        f"print('START RequestId: {FORGED.format(digit)} Version: 1 forged-by={tag}',"
        " flush=True)\n"
        f"_os.environ['RAN_{tag.upper()}'] = str(_os.getpid())\n"
    )


# Shadows the runtime, then runs the real one so the function still looks normal.
FAKE_RUNTIME = _attack("runtime", 1) + (
    "import sys\n"
    "_os.chdir('/')\n"
    "_os.execv(sys.executable, [sys.executable, '-m', 'lambda_runtime'])\n"
)
# Shadows json, then hands the real one to whoever imported it.
FAKE_JSON = _attack("json", 3) + (
    "import importlib, sys\n"
    "_here = _os.path.dirname(_os.path.abspath(__file__))\n"
    "_saved = list(sys.path)\n"
    "sys.path[:] = [p for p in sys.path if p not in ('', '.', _here)]\n"
    "del sys.modules['json']\n"
    "try:\n"
    "    sys.modules['json'] = importlib.import_module('json')\n"
    "finally:\n"
    "    sys.path[:] = _saved\n"
)

HANDLER = '''
import os, sys
import mylib.tools
import lambdahelper


def handler(event, context):
    try:
        import bootonly
        boot = bootonly.WHERE
    except ImportError:
        boot = None
    return {
        "shout": lambdahelper.shout(mylib.tools.word()),
        "marks": sorted(n for n in os.listdir("/run/lambda") if n.startswith("pwned")),
        "ran": {k: v for k, v in os.environ.items() if k.startswith("RAN_")},
        "pid": os.getpid(), "boot": boot,
    }
'''


@pytest.fixture(scope="module")
def daemon() -> Iterator[Lambdad]:
    """No stem cells: every instance takes the container path."""
    wheels = public_folder()
    build_wheel(wheels, "lambdahelper", "1.2.3",
                'def shout(text):\n    return text.upper() + "!"\n')
    build_wheel(wheels, "sitecustomize", "1.0", _attack("site", 2))
    make_readable(wheels)
    with running_daemon("--wheelhouse", str(wheels), "--cell-pool-size", "0",
                        remove=wheels) as started:
        yield started


def _function(root: Path, name: str, toml: str = "") -> Path:
    folder = root / name
    (folder / "lambda_runtime").mkdir(parents=True)
    (folder / "lambda_runtime" / "__init__.py").write_text("")
    (folder / "lambda_runtime" / "__main__.py").write_text(FAKE_RUNTIME)
    (folder / "json.py").write_text(FAKE_JSON)
    (folder / "mylib").mkdir()
    (folder / "mylib" / "__init__.py").write_text("")
    (folder / "mylib" / "tools.py").write_text("def word():\n    return 'own'\n")
    (folder / "boot").mkdir()
    (folder / "boot" / "sitecustomize.py").write_text(_attack("env", 4))
    (folder / "boot" / "bootonly.py").write_text("WHERE = __file__\n")
    (folder / "handler.py").write_text(HANDLER)
    (folder / "requirements.txt").write_text("lambdahelper==1.2.3\nsitecustomize==1.0\n")
    (folder / "lambda.toml").write_text(f'name = "{name}"\n{toml}')
    return folder


def _logs(daemon: Lambdad, name: str) -> list[dict[str, object]]:
    result = daemon.cli("logs", name, "-o", "json")
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _check_frames(daemon: Lambdad, name: str, request_id: str) -> list[dict[str, object]]:
    """Frames only from the runtime, for the one real request; none with a forged id."""
    assert wait_for(lambda: any(str(e["message"]).startswith("REPORT ")
                                for e in _logs(daemon, name)), timeout=15)
    entries = _logs(daemon, name)
    frames = [(e["request_id"], str(e["message"]).split(" ")[0]) for e in entries
              if e["stream"] == "runtime" and e["request_id"] is not None]
    assert frames == [(request_id, "START"), (request_id, "END"), (request_id, "REPORT")]
    assert not any(str(e["request_id"]).startswith(FORGED[:-1]) for e in entries), entries
    forged = [e for e in entries if "forged-by=" in str(e["message"])]
    assert all(e["stream"] in ("stdout", "stderr") for e in forged), forged
    by_id = daemon.cli("logs", name, "--request-id", FORGED.format(1))
    assert by_id.code == 0 and "forged-by" not in by_id.stdout
    return forged


def test_the_function_s_files_never_run_in_the_supervisor(daemon: Lambdad,
                                                          tmp_path: Path) -> None:
    """A lambda_runtime/ package and a json.py in the code, a sitecustomize.py wheel: none
    of them runs (the supervisor cannot see them, the zygote imported its modules before
    the code's folders were on its path), and the function's own imports still work."""
    daemon.deploy(_function(tmp_path, "shadowed"))
    reply = daemon.http("shadowed", "/")
    assert reply.status == 200, (reply.body, daemon.log())
    body = reply.json()
    assert body["shout"] == "OWN!"
    assert body["marks"] == [] and body["ran"] == {} and body["boot"] is None
    assert _check_frames(daemon, "shadowed", reply.headers["lambda-request-id"]) == []
    assert not list(daemon.state_dir.glob("i/*/pwned-*"))


def test_start_only_variables_reach_the_function_not_the_supervisor(
        daemon: Lambdad, tmp_path: Path) -> None:
    """PYTHONPATH into the code, with a sitecustomize.py there: it takes effect in the
    function's process (its modules import, its sitecustomize ran there), after the
    instance folder was locked (no file), and its forged frame is plain output."""
    daemon.deploy(_function(tmp_path, "pythonpath",
                            '[env]\nPYTHONPATH = "/var/task/boot"\n'))
    reply = daemon.http("pythonpath", "/")
    assert reply.status == 200, (reply.body, daemon.log())
    body = reply.json()
    assert body["shout"] == "OWN!"
    assert body["boot"] == "/var/task/boot/bootonly.py"
    assert list(body["ran"]) == ["RAN_ENV"]  # only the sitecustomize of its PYTHONPATH
    assert body["marks"] == []
    forged = _check_frames(daemon, "pythonpath", reply.headers["lambda-request-id"])
    assert [str(e["message"]).split("forged-by=")[1] for e in forged] == ["env"]
    assert all(e["request_id"] is None for e in forged)
    assert not list(daemon.state_dir.glob("i/*/pwned-*"))
