"""Attacks from the invoker's side, on the real engine: a client that trickles its body, an
`Expect: 100-continue` before any key, a pinned URL to a version that wanted a key, a public
function fishing for callers' API keys (in any auth scheme), JSON nested past the recursion
limit, and a flood of events meant to starve the queue. Floods against the shared limits
(body memory, file descriptors) are in test_gateway_limits.py."""

from __future__ import annotations

import base64
import http.client
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from tests.support.daemon import Lambdad, running_daemon, wait_for
from tests.support.functions import deploy_function
from tests.support.gateway import connect, read_to_close

BODY_TIMEOUT = 2  # seconds; the per-read timeout stays at the daemon's 10 s
CAP = 200  # --max-queued-events for this module's daemon


@pytest.fixture(scope="module")
def daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    with running_daemon("--wheelhouse", str(wheelhouse), "--body-timeout", str(BODY_TIMEOUT),
                        "--max-queued-events", str(CAP)) as started:
        yield started


def _key(daemon: Lambdad, name: str) -> str:
    result = daemon.cli("keys", "create", "--name", name, "--role", "invoker")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def test_a_trickled_body_is_cut_at_the_body_deadline(daemon: Lambdad) -> None:
    """Slowloris on bodies: a byte every half second, far inside the 10 s per-read
    timeout, used to keep the connection for as long as the client liked."""
    daemon.deploy("echo", "--name", "trickle")
    with connect(daemon) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: trickle.localhost\r\nContent-Length: 200\r\n"
                     b"Content-Type: application/json\r\n\r\n")
        sock.settimeout(0.5)
        sent, out = 0, b""
        while sent < 40 and not out:  # 40 bytes take 20 s: 10 times the deadline
            try:
                out = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b" ")
                sent += 1
        sock.settimeout(10)
        out += read_to_close(sock)  # the gateway closes the connection after its answer
    assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "request_timeout"
    assert sent < 40  # cut while the client was still trickling


VERSIONED = (
    "def handler(event, context):\n"
    "    headers = event.get('headers') or {}\n"
    "    return {'version': context.function_version,\n"
    "            'authorization': headers.get('authorization')}\n"
)


def test_auth_is_decided_by_the_version_that_serves(daemon: Lambdad, tmp_path: Path) -> None:
    key = _key(daemon, "pinned-caller")
    bearer = {"Authorization": f"Bearer {key}"}
    # v1 wanted a key; v2, now active, is public. v1's pinned URL must still want one.
    folder = tmp_path / "vault"
    deploy_function(daemon, folder, VERSIONED, 'name = "vault"\nauth = "key"\n')
    deploy_function(daemon, folder, VERSIONED, 'name = "vault"\nauth = "none"\n')
    old = daemon.http(None, host="v1.vault.localhost")
    assert old.status == 401 and old.json()["error"] == "unauthenticated", old.body
    allowed = daemon.http(None, host="v1.vault.localhost", headers=bearer)
    assert allowed.status == 200 and allowed.json() == {"version": "1", "authorization": None}
    assert daemon.http("vault").json()["version"] == "2"  # public, no key
    assert daemon.http(None, host="v2.vault.localhost").status == 200
    # No 100 Continue (and no body read) before the key is checked.
    with connect(daemon) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: v1.vault.localhost\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        refused = read_to_close(sock)
    assert refused.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 100" not in refused
    with connect(daemon) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: v1.vault.localhost\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n"
                     + f"Authorization: Bearer {key}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"{}")
        assert read_to_close(sock).startswith(b"HTTP/1.1 200 ")
    # The reverse: v1 was public, v2 (active) wants a key; v1's pinned URL wants one too.
    folder = tmp_path / "gate"
    deploy_function(daemon, folder, VERSIONED, 'name = "gate"\nauth = "none"\n')
    deploy_function(daemon, folder, VERSIONED, 'name = "gate"\nauth = "key"\n')
    assert daemon.http("gate").status == 401
    assert daemon.http(None, host="v1.gate.localhost").status == 401
    pinned = daemon.http(None, host="v1.gate.localhost", headers=bearer)
    assert pinned.status == 200 and pinned.json()["version"] == "1"
    assert daemon.http("gate", headers=bearer).json()["version"] == "2"
    # A public function never sees a caller's API key, but keeps its own tokens.
    assert daemon.http("vault", headers=bearer).json()["authorization"] is None
    own = daemon.http("vault", headers={"Authorization": "Bearer app-token"})
    assert own.json()["authorization"] == "Bearer app-token"


def test_a_key_in_any_form_never_reaches_a_public_function(daemon: Lambdad,
                                                            tmp_path: Path) -> None:
    """`Authorization: bearer<TAB>KEY` (schemes are case-insensitive, RFC 9110) or a key
    in another scheme was not seen as a key: a public function received it as sent."""
    key = _key(daemon, "careless-caller")
    deploy_function(daemon, tmp_path / "mirror", VERSIONED, 'name = "mirror"\nauth = "none"\n')
    deploy_function(daemon, tmp_path / "locked", VERSIONED, 'name = "locked"\nauth = "key"\n')
    basic = base64.b64encode(f"user:{key}".encode()).decode()
    for value in (f"bearer\t{key}", f"BEARER   {key}", f"Bearer \t {key}", f"Token {key}",
                  key, f"Basic {basic}"):
        seen = daemon.http("mirror", headers={"Authorization": value})
        assert seen.status == 200 and seen.json()["authorization"] is None, value
    for value in (f"bearer\t{key}", f"bEaReR  {key}"):  # and they open a private function
        allowed = daemon.http("locked", headers={"Authorization": value})
        assert allowed.status == 200 and allowed.json()["authorization"] is None, value
    assert daemon.http("locked", headers={"Authorization": f"Token {key}"}).status == 401
    own = daemon.http("mirror", headers={"Authorization": "bearer\tapp-token"})
    assert own.json()["authorization"] == "bearer\tapp-token"  # not a key: the app's own


def test_deeply_nested_json_is_refused_with_400_not_a_dropped_connection(
    daemon: Lambdad, tmp_path: Path
) -> None:
    """200,000 `[` in an anonymous event made json.loads raise RecursionError, which only
    ValueError was caught for: no answer, and a traceback in the log per request."""
    daemon.deploy("echo", "--name", "nested")
    nested = b"[" * 200_000  # under max_event_size (256 KiB)
    reply = daemon.http("nested", method="POST", body=nested,
                        headers={"Lambda-Invocation-Type": "Event"})
    assert reply.status == 400, reply.body[:300]
    assert reply.json() == {"error": "bad_request", "message": "an asynchronous "
                            "invocation's payload must be JSON: it is nested too deeply"}
    # lambdactl refuses it before sending, as for any payload that is not JSON.
    payload = tmp_path / "nested.json"
    payload.write_bytes(nested)
    for extra in ((), ("--async",)):
        result = daemon.cli("invoke", "nested", "--data-file", str(payload), *extra)
        assert result.code == 5 and "nested too deeply" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # And the daemon refuses it from clients that do not check: raw gRPC.
    with grpc.insecure_channel(f"unix://{daemon.socket_path}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        for kind in (pb.INVOCATION_TYPE_REQUEST_RESPONSE, pb.INVOCATION_TYPE_EVENT):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Invoke(pb.InvokeRequest(name="nested", payload=nested, type=kind),
                            timeout=30)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "nested too deeply" in (raised.value.details() or "")
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateSchedule(pb.CreateScheduleRequest(
                name="nested", cron="* * * * *", tz="UTC", data=b"[" * 60_000,
                overlap="skip"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nested too deeply" in (raised.value.details() or "")
    assert daemon.http("nested", method="POST", body=b"{}").status == 200  # still serving
    assert "RecursionError" not in daemon.log()


SLOW = (
    "import time\n\n"
    "def handler(event, context):\n"
    "    time.sleep(float(event.get('sleep', 0)))\n"
    "    return event\n"
)


def _status(daemon: Lambdad, invocation_id: str) -> str:
    result = daemon.cli("invocation", invocation_id, "-o", "json")
    assert result.code == 0, result.stderr
    return str(result.json()["status"])


def _queued(daemon: Lambdad, name: str) -> int:
    """Straight from the daemon's database (read-only): the CLI lists at most 100."""
    db = sqlite3.connect(f"file:{daemon.state_dir / 'lambda.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT COUNT(*) FROM invocations WHERE function = ? AND "
                         "status = 'queued'", (name,)).fetchone()
    finally:
        db.close()
    return int(row[0])


def _schedule(daemon: Lambdad, name: str) -> str:
    result = daemon.cli("schedule", name, "--cron", "* * * * * *", "--overlap", "allow")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def _last_schedule_run(daemon: Lambdad, name: str) -> dict[str, object]:
    listed = daemon.cli("schedules", name, "-o", "json").json()
    return dict(listed[0])


@pytest.mark.slow
def test_a_flood_of_events_neither_starves_other_functions_nor_grows_the_queue(
    daemon: Lambdad, tmp_path: Path
) -> None:
    manifest = 'name = "{}"\ntimeout = 30\n[scaling]\nmax_instances = 1\nconcurrency = 1\n'
    deploy_function(daemon, tmp_path / "hog", SLOW, manifest.format("hog"))
    deploy_function(daemon, tmp_path / "bystander", SLOW, manifest.format("bystander"))
    # Anyone can queue events for a public function: flood it, over one connection.
    conn = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=30)
    accepted, refused = 0, None
    for _ in range(CAP + 10):
        conn.request("POST", "/", body=json.dumps({"sleep": 20}),
                     headers={"Host": "hog.localhost", "Lambda-Invocation-Type": "Event"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 202:
            refused = (response.status, response.getheader("retry-after"), json.loads(body))
            break
        accepted += 1
    conn.close()
    # One event left the queue for the hog's only slot, where it sleeps for 20 s.
    assert CAP <= accepted <= CAP + 1, accepted
    assert _queued(daemon, "hog") in (CAP - 1, CAP)
    assert refused is not None and refused[0] == 429, refused
    assert refused[1] is not None and int(refused[1]) >= 1
    assert refused[2]["error"] == "throttled" and "max_queued_events" in refused[2]["message"]
    cli = daemon.cli("invoke", "hog", "--async", "--data", "{}")
    assert cli.code == 9, (cli.code, cli.stderr)  # RESOURCE_EXHAUSTED, reason Throttled
    assert "max_queued_events" in cli.stderr
    # The bystander's event is delivered while the hog's backlog is still there.
    reply = daemon.http("bystander", method="POST", body=b'{"who": "bystander"}',
                        headers={"Lambda-Invocation-Type": "Event"})
    assert reply.status == 202
    event_id = reply.json()["invocationId"]
    assert wait_for(lambda: _status(daemon, event_id) == "succeeded", timeout=30), \
        _status(daemon, event_id)
    assert _queued(daemon, "hog") >= CAP - 1
    assert daemon.http("hog", method="POST", body=b"{}",
                       headers={"Lambda-Invocation-Type": "Event"}).status == 429
    # Cron events are events too: the bystander's schedule runs, the hog's is skipped.
    bystander_schedule = _schedule(daemon, "bystander")
    hog_schedule = _schedule(daemon, "hog")
    assert wait_for(lambda: _last_schedule_run(daemon, "bystander")
                    .get("last_invocation_status") == "succeeded", timeout=30)
    assert wait_for(lambda: _last_schedule_run(daemon, "hog").get("last_result") == "skipped",
                    timeout=30)
    assert daemon.cli("unschedule", bystander_schedule).code == 0
    assert daemon.cli("unschedule", hog_schedule).code == 0
    assert _queued(daemon, "hog") <= CAP  # the skipped runs did not grow it
    assert "schedule skipped" in daemon.log() and "queue full" in daemon.log()
    metrics = http.client.HTTPConnection("127.0.0.1", daemon.admin_port, timeout=10)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    refused_lines = [line for line in text.splitlines()
                     if line.startswith("lambdad_async_refused_total{")
                     and 'function="hog"' in line]
    sources = {line.split('source="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in refused_lines}
    assert sources.get("http", 0) >= 1 and sources.get("api", 0) >= 1
    assert sources.get("schedule", 0) >= 1
