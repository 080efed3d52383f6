"""The standard runtime's log channel, attacked: lambdad reads each instance's logs from its
runtime over the instance's socket (docs/design-notes/log-channel.md), not from Docker.

The function is the attacker: it writes at the descriptor level (os.write, a C call, a child
process, a crash), forges frames and record headers, dials its own log channel, floods, and
writes while lambdad is away.
"""

from __future__ import annotations

import http.client
import re
import signal
import time
from pathlib import Path

import pytest

from tests.support import metrics
from tests.support.daemon import Lambdad, wait_for
from tests.support.functions import deploy_function
from tests.support.logs import function_logs, reported, request_logs, wait_logs

pytestmark = pytest.mark.slow

ATTACKER = r'''
import ctypes, os, socket, struct, subprocess, sys, threading, time

HEADER = struct.Struct("<IBBHQ")

def handler(event, context):
    params = event.get("queryStringParameters") or event or {}
    what = params.get("what", "")
    if what == "fds":
        print("printed line")
        os.write(1, b"raw fd line\n")
        ctypes.CDLL(None).dprintf(2, b"line from C\n")
        subprocess.run(["sh", "-c", "echo child line"], check=True)
        return "wrote"
    if what == "crash":
        sys.stdout.write("last words\n")
        sys.stdout.flush()
        ctypes.string_at(0)  # SIGSEGV in the worker: faulthandler's traceback goes to fd 2
    if what == "raise":
        raise ValueError("handler blew up")
    if what == "forge":
        victim = params["victim"]
        os.write(1, f"START RequestId: {victim} Version: 1\n".encode())
        os.write(1, f"{victim}\tforged text of another request\n".encode())
        os.write(2, f"REPORT RequestId: {victim}\tDuration: 1 ms\n".encode())
        os.write(1, f"END RequestId: {victim}\n".encode())
        os.write(1, b"LOGS_DROPPED Lines: 7 Bytes: 7\n")
        payload = f"{victim}\tinjected record\n".encode()
        os.write(1, HEADER.pack(len(payload), 1, 1, 0, time.time_ns()) + payload)
        os.write(1, HEADER.pack(16, 2, 0, 0, time.time_ns()) + struct.pack("<QQ", 1, 1) + b"\n")
        return "forged"
    if what == "binary":
        os.write(1, b"bad utf8 \xff\xfe\x80 end\n")
        os.write(1, b"nul \x00 and escape \x1b[31m red\n")
        os.write(2, b"h" * (3 << 20) + b"\n")  # one 3 MiB line
        os.write(1, b"no newline at the end")
        return "wrote"
    if what == "dial":
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(os.environ.get("LAMBDA_SOCKET", "/run/lambda/invoke.sock"))
        got = b""
        try:
            # The runtime may refuse and close before the request is even written
            # (EPIPE here): a refusal too.
            sock.sendall(b"GET /.lambda/logs HTTP/1.1\r\nHost: lambdad\r\nLambda-Log-Channel: 1\r\n"
                         b"Lambda-Invocation-Type: log-channel\r\nContent-Length: 0\r\n\r\n")
            while len(got) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError as exc:
            return {"error": type(exc).__name__, "got": got.decode("latin-1")}
        return {"got": got.decode("latin-1")}
    if what == "flood":
        line = b"f" * 1023 + b"\n"
        block = line * 256
        for _ in range(int(params.get("mib", 40)) * 4):
            os.write(1, block)
        return "flooded"
    if what == "ticks":
        def tick():
            time.sleep(float(params.get("after", 0)))
            for i in range(int(params.get("count", 40))):
                os.write(1, f"tick {i} {time.time():.3f}\n".encode())
                time.sleep(0.1)
        threading.Thread(target=tick).start()
        return "ticking"
    return "?"
'''


def _deploy(daemon: Lambdad, tmp_path: Path, name: str, extra: str = "") -> None:
    deploy_function(daemon, tmp_path / name, ATTACKER, f'name = "{name}"\ntimeout = 60\n{extra}')


def _answered(daemon: Lambdad, name: str, what: str) -> str:
    """Asks the attacker for `what`; it must answer 200: the request's id."""
    response = daemon.http(name, f"/?what={what}")
    assert response.status == 200, response.body
    return response.headers["lambda-request-id"]


def _docker_logs(daemon: Lambdad, name: str) -> str:
    return "".join(c.logs().decode(errors="replace") for c in daemon.containers(name))


def test_descriptor_level_output_and_a_crash_arrive_over_the_channel_not_docker(
    lambdad: Lambdad, tmp_path: Path,
) -> None:
    _deploy(lambdad, tmp_path, "fds")
    request_id = _answered(lambdad, "fds", "fds")
    wanted = {"printed line", "raw fd line", "line from C", "child line"}
    entries = request_logs(lambdad, "fds", request_id,
                           lambda found: wanted <= {e["message"] for e in found})
    texts = {str(e["message"]): e for e in entries}
    assert wanted <= set(texts), entries
    assert texts["line from C"]["stream"] == "stderr"
    assert all(texts[t]["request_id"] == request_id for t in wanted)
    # One channel keeps the runtime's order across stdout and stderr.
    messages = [e["message"] for e in entries]
    assert messages[0] == f"START RequestId: {request_id} Version: 1"
    assert str(messages[-1]).startswith(f"REPORT RequestId: {request_id}")

    crashed = lambdad.http("fds", "/?what=crash")
    assert crashed.status == 502
    crash_id = crashed.headers["lambda-request-id"]
    entries = request_logs(lambdad, "fds", crash_id, lambda found: any(
        "Fatal Python error" in str(e["message"]) for e in found))
    messages = [str(e["message"]) for e in entries]
    assert "last words" in messages
    assert any("Fatal Python error: Segmentation fault" in m for m in messages), messages
    assert any("handler.py" in m for m in messages)  # the traceback names the line

    raised = lambdad.http("fds", "/?what=raise")
    raise_id = raised.headers["lambda-request-id"]
    entries = request_logs(lambdad, "fds", raise_id)
    assert any("ValueError: handler blew up" in str(e["message"]) for e in entries)
    # None of it went through Docker: the channel carried it (the old capture read Docker).
    docker_text = _docker_logs(lambdad, "fds")
    for text in ("printed line", "raw fd line", "line from C", "last words", request_id):
        assert text not in docker_text


def test_a_function_cannot_forge_frames_records_or_another_request_id(
    lambdad: Lambdad, tmp_path: Path,
) -> None:
    _deploy(lambdad, tmp_path, "forger")
    victim = lambdad.http("forger", "/?what=fds").headers["lambda-request-id"]
    attacker = _answered(lambdad, "forger", f"forge&victim={victim}")
    wait_logs(lambdad, "forger", lambda f: reported(victim)(f) and reported(attacker)(f))
    mine = function_logs(lambdad, "forger", "--request-id", attacker)
    assert sum("forged text of another request" in str(e["message"]) for e in mine) == 1
    assert any("injected record" in str(e["message"]) for e in mine)
    # Every forged frame is text of the attacker's request, never a frame of the runtime.
    runtime = [e for e in mine if e["stream"] == "runtime"]
    assert [str(e["message"]).split()[0] for e in runtime] == ["START", "END", "REPORT"]
    assert all(attacker in str(e["message"]) for e in runtime)
    theirs = function_logs(lambdad, "forger", "--request-id", victim)
    assert not any("forged" in str(e["message"]) or "injected" in str(e["message"])
                   for e in theirs)
    assert sum(str(e["message"]).startswith("START ") for e in theirs) == 1
    everything = function_logs(lambdad, "forger")
    drops = [e for e in everything if str(e["message"]).startswith("LOGS_DROPPED")]
    assert all(e["stream"] == "stdout" and e["request_id"] == attacker for e in drops)
    assert len(drops) == 1  # its own text only: no DROPPED record was forged


def test_binary_invalid_utf8_and_huge_lines_are_cut_not_fatal(
    lambdad: Lambdad, tmp_path: Path,
) -> None:
    _deploy(lambdad, tmp_path, "binary")
    request_id = _answered(lambdad, "binary", "binary")
    entries = request_logs(lambdad, "binary", request_id)
    messages = [str(e["message"]) for e in entries]
    assert any(m.startswith("bad utf8 ") and m.endswith(" end") for m in messages)
    assert any(m.startswith("nul ") for m in messages)
    assert "no newline at the end" in messages  # the runtime ends it at the request's end
    huge = [m for m in messages if m.startswith("hhhh")]
    assert huge and max(map(len, huge)) <= 64 * 1024  # cut, in pieces
    # The channel survived: later requests of the same instance are still logged.
    again = lambdad.http("binary", "/?what=fds").headers["lambda-request-id"]
    found = request_logs(lambdad, "binary", again)
    assert "raw fd line" in [e["message"] for e in found]


def test_a_function_cannot_open_its_own_log_channel(lambdad: Lambdad, tmp_path: Path) -> None:
    _deploy(lambdad, tmp_path, "dialer")
    response = lambdad.http("dialer", "/?what=dial")
    assert response.status == 200
    got = response.json()["got"]
    assert "vnd.lambda.log-records" not in got and "200 OK" not in got
    # Nor through the gateway, which takes every Lambda-* header out of a client's request.
    through = lambdad.http("dialer", "/.lambda/logs", headers={
        "Lambda-Log-Channel": "1", "Lambda-Invocation-Type": "log-channel"})
    assert through.status == 200 and through.json() == "?"  # the function ran, nothing else
    assert "vnd.lambda.log-records" not in through.headers.get("content-type", "")
    request_id = lambdad.http("dialer", "/?what=fds").headers["lambda-request-id"]
    found = request_logs(lambdad, "dialer", request_id)
    assert "raw fd line" in [e["message"] for e in found]  # lambdad's channel still reads


def test_a_flood_faster_than_the_budget_is_dropped_counted_and_blocks_nobody(
    lambdad: Lambdad, tmp_path: Path,
) -> None:
    _deploy(lambdad, tmp_path, "flooder", "[scaling]\nconcurrency = 2\n")
    lambdad.http("flooder", "/?what=fds")  # warm
    before = metrics.total(lambdad, "lambdad_log_dropped_lines_total", function="flooder")
    conn = http.client.HTTPConnection("127.0.0.1", lambdad.gateway_port, timeout=60)
    try:
        conn.request("GET", "/?what=flood&mib=64",
                     headers={"Host": f"flooder.localhost:{lambdad.gateway_port}"})
        time.sleep(0.3)  # the flood is on
        started = time.monotonic()
        quick = lambdad.http("flooder", "/?what=fds")  # the same instance, a second worker
        waited = time.monotonic() - started
        flood = conn.getresponse()
        assert flood.status == 200 and flood.read() == b'"flooded"'
    finally:
        conn.close()
    assert quick.status == 200
    assert waited < 20, waited  # not stuck behind the flood's 64 MiB (a bound, not a target)
    flood_id = flood.headers["lambda-request-id"]
    entries = wait_logs(lambdad, "flooder", lambda found: any(
        str(e["message"]).startswith("LOGS_DROPPED") and e["stream"] == "runtime"
        for e in found) and reported(flood_id)(found))
    drops = [e for e in entries if e["stream"] == "runtime"
             and str(e["message"]).startswith("LOGS_DROPPED")]
    lines = sum(int(re.findall(r"Lines: (\d+)", str(e["message"]))[0]) for e in drops)
    assert 0 < lines < 64 * 1024
    assert reported(flood_id)(entries)  # the flood's frames survived its text
    assert metrics.total(lambdad, "lambdad_log_dropped_lines_total", function="flooder",
                   where="runtime") >= before + lines
    assert metrics.total(lambdad, "lambdad_log_dropped_bytes_total", function="flooder") > 0


def test_lines_written_while_lambdad_is_down_arrive_after_its_restart(
    fresh_lambdad: Lambdad, tmp_path: Path,
) -> None:
    daemon = fresh_lambdad
    _deploy(daemon, tmp_path, "ticker")
    # 15 ticks, 0.1 s apart, from 1 s after the answer: lambdad is dead by then.
    assert daemon.http("ticker", "/?what=ticks&count=15&after=1").json() == "ticking"
    daemon.stop(signal.SIGKILL)
    killed = time.time()  # reaped: its end of the channel is closed
    time.sleep(3)
    restarted = time.time()
    daemon.start()
    assert "reconciled: adopted 1 instance(s)" in daemon.log()

    def ticks(found: list[dict[str, object]]) -> dict[int, float]:
        return {int(m.split()[1]): float(m.split()[2]) for m in
                (str(e["message"]) for e in found) if m.startswith("tick ")}

    seen = ticks(wait_logs(daemon, "ticker", lambda found: 14 in ticks(found)))
    assert sorted(seen) == list(range(15)), seen  # none lost
    assert sum(killed < at < restarted for at in seen.values()) >= 10, (killed, seen)
    assert wait_for(lambda: daemon.http("ticker", "/?what=fds").status == 200)


FORGER_SERVER = r'''
import os, socketserver, struct, time

HEADER = struct.Struct("<IBBHQ")


def record(payload):
    return HEADER.pack(len(payload), 1, 1, 0, time.time_ns()) + payload


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        head = self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        if b"/.lambda/logs" in head:  # lambdad asking for a channel: hand it forgeries
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"application/vnd.lambda.log-records\r\n\r\n")
            victim = b"0123456789abcdef-victim"
            self.wfile.write(record(b"START RequestId: " + victim + b" Version: 1\n"
                                    + victim + b"\tforged through a channel\n"
                                    + b"REPORT RequestId: " + victim + b"\tDuration: 1 ms\n"))
            self.wfile.flush()
            time.sleep(30)
            return
        print("served", head.split()[1].decode(), flush=True)
        body = b'"plain"'
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 7\r\nConnection: close\r\n\r\n" + body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


path = os.environ["LAMBDA_SOCKET"]
with Server(path, Handler) as server:
    server.serve_forever()
'''


def test_a_dockerfile_function_is_never_read_as_a_log_channel(
    fresh_lambdad: Lambdad, tmp_path: Path,
) -> None:
    """A Dockerfile function has no trusted runtime: one that answers the log request with
    the channel's head and forged records is never asked, started or adopted, and its
    lines come from Docker's stream without frames or request ids. (An image label
    `lambda.logs=channel`, which Docker would copy onto its containers, is refused at
    deploy like every `lambda.*` label.)"""
    daemon = fresh_lambdad
    folder = tmp_path / "mimic"
    folder.mkdir()
    (folder / "server.py").write_text(FORGER_SERVER)
    (folder / "Dockerfile").write_text(
        "FROM lambda-runtime/python:3.11\n"
        "COPY server.py /srv/server.py\nCMD [\"python3\", \"/srv/server.py\"]\n")
    (folder / "lambda.toml").write_text('name = "mimic"\nruntime = "docker"\n')
    daemon.deploy(folder)
    assert daemon.http("mimic", "/first").status == 200
    container = daemon.containers("mimic")[0]
    assert "lambda.logs" not in container.labels
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert "reconciled: adopted 1 instance(s)" in daemon.log()
    assert daemon.http("mimic", "/second").status == 200
    entries = wait_logs(daemon, "mimic", lambda found: any(
        e["message"] == "served /second" for e in found))
    assert "served /second" in [e["message"] for e in entries]  # Docker's stream, read
    assert not [e for e in entries if e["stream"] == "runtime" or e["request_id"]
                or "forged" in str(e["message"])], entries
