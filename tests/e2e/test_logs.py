"""Captured function logs: framing, request ids, follow, durability and rotation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad
from tests.support.functions import deploy_function
from tests.support.logs import function_logs, reported, request_logs, wait_logs

pytestmark = pytest.mark.slow

CHATTY = (
    "import logging, time\n\n"
    "def handler(event, context):\n"
    "    params = event.get('queryStringParameters') or event or {}\n"
    "    tag = params.get('tag', 'x')\n"
    "    for i in range(int(params.get('lines', 3))):\n"
    "        print(f'line {i} of {tag}')\n"
    "        time.sleep(float(params.get('pause', 0)))\n"
    "    logging.getLogger().warning('warned %s', tag)\n"
    "    return tag\n"
)


def _deploy_chatty(daemon: Lambdad, tmp_path: Path, name: str, extra: str = "") -> None:
    deploy_function(daemon, tmp_path / name, CHATTY, f'name = "{name}"\n{extra}')


def test_each_invocation_is_framed_and_its_lines_carry_its_id(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    _deploy_chatty(lambdad, tmp_path, "chatty")
    response = lambdad.http("chatty", "/?tag=alpha&lines=2")
    request_id = response.headers["lambda-request-id"]
    # stdout and stderr arrive through separate readers: wait for both streams' lines.
    entries = request_logs(lambdad, "chatty", request_id, lambda found: any(
        "warned alpha" in str(e["message"]) for e in found))
    # Order holds within the container's stdout, where the runtime writes its frames too;
    # across stdout and stderr it is only as good as Docker's timestamps.
    out = [e for e in entries if e["stream"] in ("stdout", "runtime")]
    messages = [e["message"] for e in out]
    assert messages[:3] == [f"START RequestId: {request_id} Version: 1",
                            "line 0 of alpha", "line 1 of alpha"]
    warned = [e for e in entries if "warned alpha" in str(e["message"])]
    assert warned and warned[0]["stream"] == "stderr"
    assert messages[3] == f"END RequestId: {request_id}"
    report = str(messages[-1])
    assert report.startswith(f"REPORT RequestId: {request_id}")
    assert "Duration:" in report and "Max Memory Used:" in report
    # the frames are the runtime's, the lines the function's
    assert [e["stream"] for e in out] == ["runtime", "stdout", "stdout", "runtime", "runtime"]
    assert all(e["request_id"] == request_id and e["version"] == 1 for e in entries)


def test_concurrent_invocations_keep_their_own_request_ids(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    _deploy_chatty(lambdad, tmp_path, "together", "[scaling]\nconcurrency = 4\n")
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(
            lambda tag: lambdad.http("together", f"/?tag={tag}&lines=5&pause=0.02"),
            ["a", "b", "c"]))
    for response in responses:
        request_id = response.headers["lambda-request-id"]
        tag = response.json()
        entries = request_logs(lambdad, "together", request_id)
        lines = [str(e["message"]) for e in entries if str(e["message"]).startswith("line ")]
        assert lines == [f"line {i} of {tag}" for i in range(5)], entries


def test_follow_sees_a_new_instance_and_ends_when_the_client_goes(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    _deploy_chatty(lambdad, tmp_path, "followed", "[scaling]\nidle_timeout = 1\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "lambdactl", "logs", "followed", "-f", "-o", "json"],
        env=lambdad.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while lambdad.containers("followed") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lambdad.containers("followed") == []  # scaled to zero
        cold = lambdad.http("followed", "/?tag=later&lines=1")  # a new instance starts
        assert cold.headers["lambda-cold-start"] in ("cell", "container")
        request_id = cold.headers["lambda-request-id"]
        assert follower.stdout is not None
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = follower.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if (seen[-1]["stream"] == "runtime"
                    and str(seen[-1]["message"]).startswith(f"REPORT RequestId: {request_id}")):
                break
        assert any(e["message"] == "line 0 of later" for e in seen), seen
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)
    assert follower.returncode == 130
    # The daemon let go of the stream: a metric-free check through its own behaviour is
    # that it keeps serving and the next follower works.
    assert lambdad.http("followed", "/?tag=after").status == 200


def test_invoke_log_prints_the_invocation_lines(lambdad: Lambdad, tmp_path: Path) -> None:
    _deploy_chatty(lambdad, tmp_path, "tail")
    result = lambdad.cli("invoke", "tail", "--data", '{"tag": "direct", "lines": 2}', "--log")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == "direct"
    assert "line 1 of direct" in result.stderr
    assert "REPORT RequestId:" in result.stderr


def test_logs_survive_instance_removal_and_restart_and_rotate(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    daemon.stop()
    daemon.extra_args += ["--function-log-size", "0.01", "--function-log-files", "3"]
    daemon.start()
    _deploy_chatty(daemon, tmp_path, "durable")
    first = daemon.http("durable", "/?tag=before&lines=2").headers["lambda-request-id"]
    request_logs(daemon, "durable", first)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    entries = function_logs(daemon, "durable", "--request-id", first)
    assert any(e["message"] == "line 1 of before" for e in entries)
    # Rotation: ~10 KiB files, 3 kept: lots of output stays under the cap.
    for _ in range(6):
        daemon.http("durable", "/?tag=flood&lines=200")
    last = daemon.http("durable", "/?tag=end&lines=1").headers["lambda-request-id"]
    wait_logs(daemon, "durable", reported(last), "--tail", "5")
    files = sorted((daemon.state_dir / "logs" / "durable").iterdir())
    assert len(files) <= 3, files
    assert sum(f.stat().st_size for f in files) < 3 * 12 * 1024 + 64 * 1024
    assert len(function_logs(daemon, "durable", "--tail", "5")) == 5


FORGER = '''
import ctypes, os, socket, sys, threading

FAKE = "0b5e8a1c-3f2d-4c1e-9a7b-123456789abc"
libc = ctypes.CDLL(None)
HOWS = ("print", "dunder", "fd1", "fd2", "proc-self", "libc", "proc-1")


def emit(how, line):
    data = (line + "\\n").encode()
    if how == "print":
        print(line, flush=True)
    elif how == "dunder":
        sys.__stderr__.write(line + "\\n")
        sys.__stderr__.flush()
    elif how == "fd1":
        os.write(1, data)
    elif how == "fd2":
        os.write(2, data)
    elif how == "proc-self":
        with open("/proc/self/fd/1", "w") as f:
            f.write(line + "\\n")
    elif how == "libc":
        libc.write(1, data, len(data))
    elif how == "proc-1":  # the container's first process: its stdout is Docker's stream
        with open("/proc/1/fd/1", "w") as f:
            f.write(line + "\\n")


def forge(rid, where):
    """Frames and a tagged line for `rid`, each way; what each way came to."""
    outcome = {}
    for how in HOWS:
        mark = f"forged-by={where}/{how}"
        try:
            for line in (f"START RequestId: {rid} Version: 1 {mark}",
                         f"END RequestId: {rid} {mark}",
                         f"REPORT RequestId: {rid}\\tDuration: 1.00 ms\\tBilled Duration: 1 ms"
                         f"\\tMemory Size: 128 MB\\tMax Memory Used: 1 MB {mark}",
                         f"{rid}\\tline for another request {mark}"):
                emit(how, line)
            outcome[how] = "written"
        except OSError as exc:
            outcome[how] = type(exc).__name__
    return outcome


def dial(rid):
    """A request of its own making on the runtime's socket, under a chosen request id."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(os.environ["LAMBDA_SOCKET"])
        s.sendall(b"POST / HTTP/1.1\\r\\nLambda-Invocation-Type: direct\\r\\n"
                  b"Lambda-Request-Id: " + rid.encode() + b"\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
        return s.recv(4096).decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__


AT_IMPORT = forge(FAKE, "import")
_thread = threading.Thread(target=lambda: AT_IMPORT.update(
    {f"thread-{k}": v for k, v in forge(FAKE, "thread").items()}))
_thread.start()
_thread.join()


def handler(event, context):
    params = event.get("queryStringParameters") or {}
    other = params.get("other")
    if not other:
        return {"import": AT_IMPORT}
    # On a terminal this would overwrite the columns of `lambdactl logs` with its own.
    print(f"\\r\\x1b[2K{other[:8]}  rt START RequestId: {other} Version: 1 steer", flush=True)
    return {"other": forge(other, "request"),
            "own": forge(context.aws_request_id, "own"),
            "dial": dial(other)}
'''


def test_a_function_cannot_forge_frames_or_request_ids(lambdad: Lambdad, tmp_path: Path) -> None:
    """The attack: at import, from a thread it starts and inside an invocation, a function
    writes START/END/REPORT lines and lines tagged with another request's id, every way it
    can reach an output (print, sys.__stderr__, os.write on fds 1 and 2, /proc/self/fd/1,
    libc's write, the container's first process's stdout), and dials the runtime's socket
    to have a request of its own framed under the other request's id. The logs show those
    only as plain output of the request that wrote them (or of none, at import); the real
    frames come from the runtime, once per request."""
    folder = tmp_path / "forger"
    folder.mkdir()
    (folder / "handler.py").write_text(FORGER)
    (folder / "lambda.toml").write_text('name = "forger"\n')
    lambdad.deploy(folder)
    first = lambdad.http("forger", "/")
    assert first.status == 200, first.body
    victim = first.headers["lambda-request-id"]
    # The first process of the container cannot be reached; the others write, to no avail.
    assert first.json()["import"]["proc-1"] == "PermissionError"
    assert first.json()["import"]["thread-proc-1"] == "PermissionError"
    second = lambdad.http("forger", f"/?other={victim}")
    assert second.status == 200, second.body
    attacker = second.headers["lambda-request-id"]
    outcome = second.json()
    assert outcome["other"]["proc-1"] == outcome["own"]["proc-1"] == "PermissionError"
    assert outcome["other"]["fd1"] == "written" and outcome["own"]["libc"] == "written"
    assert outcome["dial"] in ("", "ConnectionResetError", "BrokenPipeError"), outcome["dial"]

    attackers = wait_logs(
        lambdad, "forger",
        lambda found: reported(attacker)(found)
        and sum("forged-by=own/fd2" in str(e["message"]) for e in found) == 4,
        "--request-id", attacker)
    victims = function_logs(lambdad, "forger", "--request-id", victim)
    everything = function_logs(lambdad, "forger")

    def frames(entries: list[dict[str, object]]) -> list[tuple[object, str]]:
        return [(e["request_id"], str(e["message"]).split(" ")[0]) for e in entries
                if e["stream"] == "runtime"]

    # The victim's request: its own three frames, none of the attacker's lines.
    assert frames(victims) == [(victim, "START"), (victim, "END"), (victim, "REPORT")]
    assert not any("forged-by" in str(e["message"]) for e in victims), victims
    # The attacker's request: its three real frames; every forged line is its own text.
    assert frames(attackers) == [(attacker, "START"), (attacker, "END"), (attacker, "REPORT")]
    forged = [e for e in attackers if "forged-by" in str(e["message"])]
    assert [e["request_id"] for e in attackers if str(e["message"]).endswith(" steer")] == [
        attacker]
    written = [h for h in ("print", "dunder", "fd1", "fd2", "proc-self", "libc")]
    assert len(forged) == 2 * 4 * len(written)  # other and own, four lines, each way
    assert all(e["stream"] in ("stdout", "stderr") and e["request_id"] == attacker
               for e in forged)
    assert {str(e["message"]).split("forged-by=")[1] for e in forged} == {
        f"{where}/{how}" for where in ("request", "own") for how in written}
    # Import-time forgeries (main thread and its thread) belong to no request.
    at_import = [e for e in everything if "forged-by=import/" in str(e["message"])
                 or "forged-by=thread/" in str(e["message"])]
    assert len(at_import) == 2 * 4 * len(written)
    assert all(e["request_id"] is None and e["stream"] in ("stdout", "stderr")
               for e in at_import)
    # Across the whole log: frames only from the runtime, once per real request.
    assert sorted(frames(everything), key=str) == sorted(
        [(rid, kind) for rid in (victim, attacker) for kind in ("START", "END", "REPORT")],
        key=str)
    assert not any(e["request_id"] == "0b5e8a1c-3f2d-4c1e-9a7b-123456789abc"
                   for e in everything)
    # The text view: every line of the victim's request is the victim's, and the attacker's
    # text cannot steer the terminal (carriage returns and escapes are shown escaped).
    text = lambdad.cli("logs", "forger", "--request-id", victim)
    assert text.code == 0 and text.stdout.count("\n") == 3
    assert all(f" {victim[:8]}  rt " in line for line in text.stdout.splitlines())
    steer = lambdad.cli("logs", "forger", "--request-id", attacker)
    assert steer.code == 0 and "\\x0d\\x1b[2K" in steer.stdout
    assert not any(c in steer.stdout for c in "\r\x1b")
