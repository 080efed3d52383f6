"""Attacks on what issue 15's restructuring moved: the daemon's start (host/, lifecycle),
the gateway's connection machine and the HTTP key check, against a real lambdad.

Real process, real Docker engine, raw HTTP to the gateway on 127.0.0.1.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad, daemon_env
from tests.support.functions import deploy_raw_server

EXIT_WITHIN = 10.0  # a failed start must say why and exit at once; slack for a loaded CI


@pytest.fixture
def unstarted() -> Iterator[Lambdad]:
    daemon = Lambdad()
    try:
        yield daemon
    finally:
        daemon.close()


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def _tls_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    garbage_cert, garbage_key = folder / "garbage.crt", folder / "garbage.key"
    garbage_cert.write_text("not a certificate\n")
    garbage_key.write_text("not a key\n")
    cert_a, _ = _self_signed(folder, "a")
    _, key_b = _self_signed(folder, "b")
    cert_c, key_c = _self_signed(folder, "c")
    swapped = folder / "swapped.crt"
    swapped.write_bytes(key_c.read_bytes())  # a key where the certificate belongs
    return {"garbage": (garbage_cert, garbage_key), "mismatched": (cert_a, key_b),
            "swapped": (swapped, cert_c)}


@pytest.mark.parametrize("pair", ["garbage", "mismatched", "swapped"])
def test_a_bad_tls_pair_fails_the_start_naming_tls_not_a_busy_address(
    unstarted: Lambdad, tmp_path: Path, pair: str
) -> None:
    """gRPC took any bytes as a certificate and only failed to bind later: lambdad said
    "cannot listen for gRPC on 127.0.0.1:PORT: the address is in use or not available",
    sending an operator after a port that was free."""
    cert, key = _tls_pairs(tmp_path)[pair]
    command = [*unstarted.command(), "--tls-cert", str(cert), "--tls-key", str(key)]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=daemon_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"lambdad still running {EXIT_WITHIN} s after a bad TLS pair:\n{stderr}")
    assert process.returncode == 1, stderr
    assert time.monotonic() - started < EXIT_WITHIN
    assert "cannot start" in stderr and str(cert) in stderr and str(key) in stderr, stderr
    assert "in use" not in stderr, stderr
    # The port it blamed was free all along, and nothing was left behind.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", unstarted.grpc_port))
    assert not unstarted.socket_path.exists()
    label = f"lambda.daemon={unstarted.daemon_id}"
    assert unstarted.docker.containers.list(all=True, filters={"label": label}) == []


SPY = (
    "def handler(event, context):\n"
    "    return {'authorization': (event.get('headers') or {}).get('authorization')}\n"
)


@pytest.fixture(scope="module")
def spy(lambdad: Lambdad, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A public function that tells what `Authorization` it received."""
    folder = tmp_path_factory.mktemp("spy")
    (folder / "handler.py").write_text(SPY)
    (folder / "lambda.toml").write_text('name = "spy"\nauth = "none"\n')
    lambdad.deploy(folder)
    return "spy"


def test_a_key_in_basic_without_padding_or_in_base64url_never_reaches_a_function(
    lambdad: Lambdad, spy: str
) -> None:
    """Basic was decoded only as padded standard base64: `Basic <base64(user:KEY)>` with
    the `=` stripped (or base64url) did not decode, so it was not seen as holding a key
    and the public function received it, and with it the caller's key."""
    created = lambdad.cli("keys", "create", "--name", "careless", "--role", "invoker")
    assert created.code == 0, created.stderr
    key = created.stdout.strip()
    padded = base64.b64encode(f"user:{key}".encode()).decode()
    assert padded.endswith("=")  # else stripping the padding would change nothing
    forms = [padded.rstrip("="),
             base64.urlsafe_b64encode(f"\xfb\xff:{key}".encode("latin-1")).decode()]
    assert "-" in forms[1] or "_" in forms[1]
    for form in forms:
        seen = lambdad.http(spy, headers={"Authorization": f"Basic {form}"})
        assert seen.status == 200 and seen.json()["authorization"] is None, form
    # The function's own Basic credentials still reach it, padded or not.
    own = base64.b64encode(b"user:app-password").decode().rstrip("=")
    assert lambdad.http(spy, headers={"Authorization": f"Basic {own}"}).json() == {
        "authorization": f"Basic {own}"}


@pytest.mark.parametrize("args", [
    ["config", "spy", "--memory", "99999999999"],
    ["config", "spy", "--timeout", "4294967296"],
    ["config", "spy", "--min-instances", "99999999999"],
    ["invoke", "spy", "--version", "99999999999"],
    ["rollback", "spy", "--to", "99999999999"],
])
def test_a_huge_number_in_a_flag_is_refused_clearly_not_with_a_traceback(
    lambdad: Lambdad, spy: str, args: list[str]
) -> None:
    """The flags checked the sign but not the size: protobuf raised ValueError building
    the request (its fields are uint32) and lambdactl died with a traceback, exit 1."""
    result = lambdad.cli(*args)
    assert result.code == 2, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    assert f"argument {args[2]}" in result.stderr and "at most 4294967295" in result.stderr


def test_a_start_failing_on_its_tls_pair_still_clears_a_killed_daemons_pid_file(
    unstarted: Lambdad, tmp_path: Path
) -> None:
    """The TLS pair is now checked before anything starts; the stale pid file of a killed
    daemon (its pid maybe another program's by now) must still go, as it did when the
    pair failed only at the bind."""
    pid_file = tmp_path / "lambdad.pid"
    pid_file.write_text("999999\n")
    cert, key = _tls_pairs(tmp_path)["garbage"]
    command = [*unstarted.command(), "--tls-cert", str(cert), "--tls-key", str(key),
               "--pid-file", str(pid_file)]
    result = subprocess.run(command, cwd=ROOT, env=daemon_env(), capture_output=True,
                            text=True, timeout=EXIT_WITHIN)
    assert result.returncode == 1 and str(cert) in result.stderr, result.stderr
    assert not pid_file.exists()


DESYNC_SERVER = r'''
def answer(conn, body, extra=b""):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s" % (len(body), body, extra))

def serve(conn):
    for _, path in heads(conn):
        forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
        if path == b"/past-its-length":  # a second answer right behind the first
            answer(conn, b"first", forged)
        elif path == b"/unasked":  # an answer sent later, to no request
            answer(conn, b"first")
            time.sleep(0.3)
            conn.sendall(forged)
        else:
            answer(conn, path)
'''


@pytest.fixture(scope="module")
def desync(lambdad: Lambdad, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Dockerfile function that answers some requests twice, on one instance."""
    return deploy_raw_server(lambdad, tmp_path_factory.mktemp("desync"), "desync", DESYNC_SERVER)


@pytest.mark.parametrize("path", ["/past-its-length", "/unasked"])
def test_bytes_an_instance_sends_beyond_its_answer_never_answer_the_next_caller(
    lambdad: Lambdad, desync: str, path: str
) -> None:
    """The kept-alive connection to the instance was reused with those bytes unread: the
    next caller got them as its answer, and from then on each caller got the answer to
    the request before its own (a response meant for one caller, read by another)."""
    first = lambdad.http(desync, path)
    assert first.status == 200 and first.body == b"first"
    time.sleep(0.6)  # the unasked answer has arrived on the idle connection
    for target in ("/alice", "/bob", "/carol"):
        got = lambdad.http(desync, target)
        assert got.status == 200 and got.body == target.encode(), (target, got.body)
