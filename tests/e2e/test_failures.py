"""Bad input and bad functions get clear errors; the daemon keeps serving; nothing is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for


def _function(folder: Path, source: str, manifest: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(source)
    if manifest is not None:
        (folder / "lambda.toml").write_text(manifest)
    return folder


def test_unknown_function_and_unknown_host(lambdad: Lambdad) -> None:
    missing = lambdad.http("nope")
    assert missing.status == 404 and missing.json()["error"] == "not_found"
    assert "lambda-request-id" in missing.headers
    assert lambdad.http(None, host="127.0.0.1").status == 404
    result = lambdad.cli("invoke", "nope")
    assert result.code == 4 and result.stderr.strip() == "error: no function named 'nope'"


def test_handler_exception_is_a_500_and_a_function_error(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "boom", "def handler(event, context):\n"
                       "    raise KeyError('missing thing')\n")
    lambdad.deploy(folder, "--name", "boom")
    response = lambdad.http("boom")
    assert response.status == 500
    assert response.json() == {"errorMessage": "'missing thing'", "errorType": "KeyError"}
    invoked = lambdad.cli("invoke", "boom")
    assert invoked.code == 1
    assert json.loads(invoked.stdout)["errorType"] == "KeyError"
    assert "KeyError" in invoked.stderr
    # The instance survives a handler exception.
    assert lambdad.http("boom").status == 500
    assert len(lambdad.containers("boom")) == 1


def test_timeout_is_a_504_and_the_instance_is_replaced(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "slow", "import time\n\ndef handler(event, context):\n"
                       "    time.sleep(float(event.get('sleep', 0)) if 'sleep' in event "
                       "else 30)\n    return 'done'\n")
    lambdad.deploy(folder, "--name", "slow", "--timeout", "1")
    first = lambdad.containers("slow")[0].id
    response = lambdad.http("slow")
    assert response.status == 504
    assert response.json()["error"] == "gateway_timeout"
    assert "1 s" in response.json()["message"]
    invoked = lambdad.cli("invoke", "slow", "--data", '{"sleep": 0}')
    assert invoked.code == 0 and json.loads(invoked.stdout) == "done"
    assert [c.id for c in lambdad.containers("slow")] != [first]
    timed_out = lambdad.cli("invoke", "slow", "--data", '{"sleep": 5}')
    assert timed_out.code == 9, timed_out.stderr


def test_crash_is_a_502_that_says_what_happened(lambdad: Lambdad, tmp_path: Path) -> None:
    """A handler's process that dies mid-request: AWS's Runtime.ExitError, its output kept
    in the request's logs, and a fresh worker of the same instance serves the next one."""
    folder = _function(tmp_path / "crash", "import os\n\ndef handler(event, context):\n"
                       "    if event.get('crash', True):\n"
                       "        print('last words', flush=True)\n        os._exit(3)\n"
                       "    return 'ok'\n")
    lambdad.deploy(folder, "--name", "crash")
    instance = [c.id for c in lambdad.containers("crash")]
    response = lambdad.http("crash")
    assert response.status == 502
    assert response.headers["lambda-function-error"] == "Unhandled"
    error = response.json()
    assert error["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exited with code 3" in error["errorMessage"]
    request_id = response.headers["lambda-request-id"]
    assert error["errorMessage"].startswith(f"RequestId: {request_id} ")
    again = lambdad.cli("invoke", "crash", "--data", '{"crash": false}')
    assert again.code == 0 and json.loads(again.stdout) == "ok"
    assert [c.id for c in lambdad.containers("crash")] == instance  # the instance lives on
    invoked = lambdad.cli("invoke", "crash")  # a function error, as for an exception
    assert invoked.code == 1 and json.loads(invoked.stdout)["errorType"] == "Runtime.ExitError"
    assert wait_for(lambda: any(
        e["stream"] == "runtime" and str(e["message"]).startswith("REPORT ")
        for e in _logs(lambdad, "crash", request_id)), timeout=15)
    assert wait_for(lambda: [str(e["message"]) for e in _logs(lambdad, "crash", request_id)
                             if e["stream"] == "stderr"][-2:] == [
        f"RequestId: {request_id} Error: Runtime exited with error: exited with code 3",
        "Runtime.ExitError"], timeout=15)
    messages = [str(e["message"]) for e in _logs(lambdad, "crash", request_id)]
    assert "last words" in messages  # what it wrote before dying is its request's


def _logs(daemon: Lambdad, name: str, request_id: str) -> list[dict[str, object]]:
    result = daemon.cli("logs", name, "--request-id", request_id, "-o", "json")
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_out_of_memory_is_reported(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "hog", "def handler(event, context):\n"
                       "    if (event.get('queryStringParameters') or {}).get('ok'):\n"
                       "        return 'fine'\n"
                       "    hog = []\n    while True:\n        hog.append(bytearray(16 << 20))\n")
    lambdad.deploy(folder, "--name", "hog", "--memory", "64")
    response = lambdad.http("hog")
    assert response.status == 502
    assert response.json()["errorType"] == "Runtime.OutOfMemory"
    assert "out of memory: limit 64 MiB" in response.json()["errorMessage"]
    # The kernel killed the worker, not the runtime: the instance serves on.
    assert lambdad.http("hog", "/?ok=1").json() == "fine"


def test_oversized_body_is_413(lambdad: Lambdad) -> None:
    lambdad.deploy("echo", "--name", "echo-big")
    big = lambdad.http("echo-big", method="POST", body=b"x" * (6 * 1024 * 1024 + 1))
    assert big.status == 413 and big.json()["error"] == "payload_too_large"
    assert lambdad.http("echo-big").status == 200


def test_build_failure_leaves_nothing(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = tmp_path / "badbuild"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM lambda-runtime/python:3.11\nRUN exit 7\n")
    result = lambdad.cli("deploy", str(folder), "--name", "badbuild")
    assert result.code == 6, result.stderr
    assert "returned a non-zero code: 7" in result.stderr
    assert lambdad.images("badbuild") == [] and lambdad.containers("badbuild") == []
    assert lambdad.cli("get", "badbuild").code == 4


def test_function_that_cannot_start_leaves_nothing(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "imperr", "import not_a_module\n")
    result = lambdad.cli("deploy", str(folder), "--name", "imperr")
    assert result.code == 9, result.stderr
    # A new container exits; a stem cell answers its init with the error. Either way the
    # deploy says why, once.
    assert ("exited with code 1 during start" in result.stderr
            or "imperr v1 failed to initialize: Runtime.ImportModuleError: Unable to import "
               "module 'handler': No module named 'not_a_module'" in result.stderr)
    assert result.stderr.count("Runtime.ImportModuleError") == 1
    assert lambdad.images("imperr") == [] and lambdad.containers("imperr") == []
    assert lambdad.cli("get", "imperr").code == 4


def test_failed_redeploy_keeps_the_old_version_serving(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "keep", "def handler(event, context):\n    return 'v1'\n")
    lambdad.deploy(folder, "--name", "keep")
    (folder / "handler.py").write_text("syntax error here\n")
    assert lambdad.cli("deploy", str(folder), "--name", "keep").code == 9
    assert lambdad.http("keep").json() == "v1"
    assert [f["version"] for f in lambdad.cli("list", "-o", "json").json()
            if f["name"] == "keep"] == [1]


@pytest.mark.parametrize(
    ("args", "manifest", "message"),
    [
        (["--name", "Bad_Name"], None, "invalid function name"),
        (["--name", "x", "--timeout", "901"], None, "timeout must be 1-900"),
        (["--name", "x"], "memory = 'lots'", "memory must be an int"),
        (["--name", "x"], "handler = 'nomodule.handler'", "no nomodule.py"),
        (["--name", "x", "--env", "AWS_SECRET=1"], None, "reserved"),
    ],
)
def test_invalid_input_is_exit_5_with_a_message(
    lambdad: Lambdad, tmp_path: Path, args: list[str], manifest: str | None, message: str
) -> None:
    folder = _function(tmp_path / "f", "def handler(e, c):\n    return 1\n", manifest)
    result = lambdad.cli("deploy", str(folder), *args)
    assert result.code == 5, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_requirements_fail_the_build_cleanly(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _function(tmp_path / "req", "def handler(e, c):\n    return 1\n")
    (folder / "requirements.txt").write_text("-r /etc/shadow\n")
    result = lambdad.cli("deploy", str(folder), "--name", "req")
    assert result.code == 5 and "requirements.txt line 1: '-r /etc/shadow'" in result.stderr
    (folder / "requirements.txt").write_text("no-such-package-anywhere==9.9\n")
    result = lambdad.cli("deploy", str(folder), "--name", "req")
    assert result.code == 6
    assert "no version of no-such-package-anywhere==9.9 has a wheel" in result.stderr
    assert lambdad.images("req") == []
