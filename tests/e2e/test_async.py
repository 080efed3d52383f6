"""Asynchronous invocations: queued durably, delivered, retried, dead-lettered, redriven."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from tests.support.daemon import Lambdad, wait_for

pytestmark = pytest.mark.slow

# Fails on its first `fail_times` calls for a tag, counted in the instance's /tmp (the
# functions below run one instance, so the count holds across attempts).
FLAKY = (
    "import os, time\n\n"
    "def handler(event, context):\n"
    "    print('got', event)\n"
    "    time.sleep(float(event.get('sleep', 0)))\n"
    "    marker = '/tmp/calls-' + str(event.get('tag', 'x'))\n"
    "    calls = int(open(marker).read()) if os.path.exists(marker) else 0\n"
    "    open(marker, 'w').write(str(calls + 1))\n"
    "    if calls < int(event.get('fail_times', 0)):\n"
    "        raise RuntimeError(f'failing on purpose, call {calls + 1}')\n"
    "    return {'tag': event.get('tag'), 'calls': calls + 1}\n"
)


def _deploy(daemon: Lambdad, tmp_path: Path, name: str, extra: str = "") -> None:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(FLAKY)
    (folder / "lambda.toml").write_text(f'name = "{name}"\n[scaling]\nmax_instances = 1\n{extra}')
    daemon.deploy(folder)


def _info(daemon: Lambdad, invocation_id: str) -> dict[str, object]:
    result = daemon.cli("invocation", invocation_id, "-o", "json")
    assert result.code == 0, result.stderr
    return dict(result.json())


def _wait_status(daemon: Lambdad, invocation_id: str, status: str,
                 timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        info = _info(daemon, invocation_id)
        if info["status"] == status or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def _queue(daemon: Lambdad, name: str, payload: dict[str, object]) -> str:
    result = daemon.cli("invoke", name, "--async", "--data", json.dumps(payload))
    assert result.code == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def quick(fresh_lambdad: Lambdad) -> Lambdad:
    """A daemon whose retries come after 1 and 2 seconds instead of minutes."""
    fresh_lambdad.stop()
    fresh_lambdad.extra_args += ["--async-backoff", "1"]
    fresh_lambdad.start()
    return fresh_lambdad


def test_async_happy_path_over_the_cli_and_http(quick: Lambdad, tmp_path: Path) -> None:
    _deploy(quick, tmp_path, "later")
    invocation_id = _queue(quick, "later", {"tag": "cli"})
    info = _wait_status(quick, invocation_id, "succeeded")
    assert info["status"] == "succeeded" and info["attempts"] == 1
    assert info["result"] == {"tag": "cli", "calls": 1}
    # Over HTTP: the one Lambda-* header the gateway accepts from outside.
    conn = http.client.HTTPConnection("127.0.0.1", quick.gateway_port, timeout=10)
    conn.request("POST", "/", body=json.dumps({"tag": "http"}),
                 headers={"Host": "later.localhost", "Lambda-Invocation-Type": "Event"})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 202 and body["status"] == "queued"
    assert response.getheader("lambda-request-id") == body["invocationId"]
    assert _wait_status(quick, body["invocationId"], "succeeded")["source"] == "http"
    listed = quick.cli("invocations", "later", "--status", "succeeded", "-o", "json").json()
    assert {i["id"] for i in listed} == {invocation_id, body["invocationId"]}
    # The event's log lines carry the invocation id as their request id.
    logs = quick.cli("logs", "later", "--request-id", invocation_id, "-o", "json")
    assert any("got" in json.loads(line)["message"] for line in logs.stdout.splitlines())


def test_retries_with_backoff_then_success(quick: Lambdad, tmp_path: Path) -> None:
    _deploy(quick, tmp_path, "flaky")
    started = time.monotonic()
    invocation_id = _queue(quick, "flaky", {"tag": "r", "fail_times": 2})
    info = _wait_status(quick, invocation_id, "succeeded")
    assert info["status"] == "succeeded" and info["attempts"] == 3
    assert time.monotonic() - started >= 3  # 1 s, then 2 s of backoff


def test_dead_letter_and_redrive(quick: Lambdad, tmp_path: Path) -> None:
    _deploy(quick, tmp_path, "doomed", "[async]\nretries = 1\n")
    invocation_id = _queue(quick, "doomed", {"tag": "d", "fail_times": 2})
    info = _wait_status(quick, invocation_id, "failed")
    assert info["status"] == "failed" and info["attempts"] == 2
    assert "failing on purpose, call 2" in str(info["last_error"])
    assert quick.cli("redrive", invocation_id[:8]).code == 0
    info = _wait_status(quick, invocation_id, "succeeded")
    assert info["status"] == "succeeded"  # the third call succeeds
    again = quick.cli("redrive", invocation_id)
    assert again.code == 8 and "only failed ones" in again.stderr


def test_redrive_all_failed(quick: Lambdad, tmp_path: Path) -> None:
    _deploy(quick, tmp_path, "batch", "[async]\nretries = 0\n")
    ids = [_queue(quick, "batch", {"tag": f"b{n}", "fail_times": 1}) for n in range(3)]
    for invocation_id in ids:
        assert _wait_status(quick, invocation_id, "failed")["status"] == "failed"
    result = quick.cli("redrive", "--all-failed", "batch")
    assert result.code == 0 and "3 invocation" in result.stderr
    for invocation_id in ids:
        assert _wait_status(quick, invocation_id, "succeeded")["status"] == "succeeded"


def test_kill_9_loses_no_queued_or_running_event(quick: Lambdad, tmp_path: Path) -> None:
    _deploy(quick, tmp_path, "durable")
    running = _queue(quick, "durable", {"tag": "slow", "sleep": 10})
    queued = [_queue(quick, "durable", {"tag": f"q{n}"}) for n in range(3)]
    assert _wait_status(quick, running, "running", timeout=15)["status"] == "running"
    quick.stop(signal.SIGKILL)
    quick.start()
    assert "invocation(s) cut short" in quick.log()
    for invocation_id in [running, *queued]:
        info = _wait_status(quick, invocation_id, "succeeded", timeout=40)
        assert info["status"] == "succeeded", info
    assert _info(quick, running)["attempts"] == 2  # at-least-once: run again


def _post_events(daemon: Lambdad, name: str, accepted: list[str], stop: threading.Event,
                 errors: list[str]) -> None:
    """Queues events over HTTP until `stop` or the daemon goes away; keeps every 202's id."""
    n = 0
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", daemon.gateway_port, timeout=10)
            conn.request("POST", "/", body=json.dumps({"tag": f"b{n}", "sleep": 0.02}),
                         headers={"Host": f"{name}.localhost",
                                  "Lambda-Invocation-Type": "Event"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
        except OSError:
            return  # killed: this request never heard a 202
        n += 1
        if response.status != 202:
            errors.append(f"{response.status} {body[:200]!r}")
            return
        accepted.append(json.loads(body)["invocationId"])


def _invocations(daemon: Lambdad, name: str) -> dict[str, pb.Invocation]:
    with grpc.insecure_channel(f"unix://{daemon.socket_path}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.ListInvocations(pb.ListInvocationsRequest(name=name, limit=100_000),
                                     timeout=30)
    return {inv.id: inv for inv in reply.invocations}


def test_kill_9_in_the_middle_of_batches_loses_no_accepted_event(
        quick: Lambdad, tmp_path: Path) -> None:
    """Events are stored in group commits and claimed in batches: every event that got its
    202 is in the store after kill -9 (stored before the answer), and each is delivered
    after the restart, those cut short at the kill again."""
    _deploy(quick, tmp_path, "batched", "concurrency = 4\n")
    accepted: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=_post_events, args=(quick, "batched", accepted, stop,
                                                           errors)) for _ in range(6)]
    for sender in senders:
        sender.start()
    try:
        assert wait_for(lambda: len(accepted) >= 150, 60), (len(accepted), errors)
        # Kill while deliveries (a claimed batch) are under way.
        assert wait_for(lambda: any(i.status == "running" for i in
                                    _invocations(quick, "batched").values()), 30)
        quick.stop(signal.SIGKILL)
    finally:
        stop.set()
        for sender in senders:
            sender.join(30)
    assert not errors
    quick.start()
    assert "invocation(s) cut short" in quick.log()
    ids = set(accepted)

    def all_delivered() -> bool:
        found = _invocations(quick, "batched")
        return ids <= found.keys() and all(found[i].status == "succeeded" for i in ids)

    assert set(accepted) <= _invocations(quick, "batched").keys()  # none lost
    assert wait_for(all_delivered, 120)
    found = _invocations(quick, "batched")
    assert all(1 <= found[i].attempts <= 2 for i in ids)  # at most the one cut short again
    assert any(found[i].attempts == 2 for i in ids)


def test_bad_async_input(lambdad: Lambdad, tmp_path: Path) -> None:
    assert lambdad.cli("invoke", "nosuch", "--async").code == 4
    lambdad.deploy("echo", "--name", "echo-async")
    conn = http.client.HTTPConnection("127.0.0.1", lambdad.gateway_port, timeout=10)
    conn.request("POST", "/", body=b"not json",
                 headers={"Host": "echo-async.localhost", "Lambda-Invocation-Type": "Event"})
    response = conn.getresponse()
    assert response.status == 400
    assert "must be JSON" in json.loads(response.read())["message"]
    assert lambdad.cli("invocation", "zzzzzzzz").code == 4
    assert lambdad.cli("invocation", "ab").code == 5
