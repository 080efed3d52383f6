"""What a key can still do, as attacks: an invoker reading secrets, a revoked key's stream.

Real daemon, real CLI subprocesses and real gRPC over TCP with API keys.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from tests.support.daemon import ROOT, Lambdad, wait_for

SECRET = "s3cr3t-value-for-the-attack-test"


def _tcp(daemon: Lambdad, key: str) -> dict[str, str]:
    return daemon.env(LAMBDA_HOST=f"127.0.0.1:{daemon.grpc_port}", LAMBDA_API_KEY=key)


def _key(daemon: Lambdad, name: str, role: str) -> str:
    result = daemon.cli("keys", "create", "--name", name, "--role", role)
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def _bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def with_secret(lambdad: Lambdad) -> str:
    lambdad.deploy("greet", "--name", "holder", "--env", f"DB_PASSWORD={SECRET}")
    return "holder"


def test_an_invoker_cannot_read_environment_values(lambdad: Lambdad, with_secret: str) -> None:
    invoker = _key(lambdad, "env-reader", "invoker")
    deployer = _key(lambdad, "env-deployer", "deployer")
    # The CLI: refused with the auth exit code, and the value never printed.
    attack = lambdad.cli("get", with_secret, "--show-env", env=_tcp(lambdad, invoker))
    assert attack.code == 77, (attack.code, attack.stdout, attack.stderr)
    assert "show_env" in attack.stderr and "needs deployer" in attack.stderr
    assert SECRET not in attack.stdout + attack.stderr
    # Without --show-env an invoker still sees the names, values masked.
    masked = lambdad.cli("get", with_secret, "-o", "json", env=_tcp(lambdad, invoker))
    assert masked.code == 0, masked.stderr
    assert SECRET not in masked.stdout and "DB_PASSWORD" in masked.stdout
    # Raw gRPC over TCP, as a client that skips the CLI would.
    with grpc.insecure_channel(f"127.0.0.1:{lambdad.grpc_port}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetFunction(pb.GetFunctionRequest(name=with_secret, show_env=True),
                             metadata=_bearer(invoker), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for reply in (
            stub.GetFunction(pb.GetFunctionRequest(name=with_secret),
                             metadata=_bearer(invoker), timeout=10),
            *stub.ListFunctions(pb.ListFunctionsRequest(), metadata=_bearer(invoker),
                                timeout=10).functions,
            *(v for v in stub.ListVersions(pb.ListVersionsRequest(name=with_secret),
                                           metadata=_bearer(invoker), timeout=10).versions),
        ):
            assert SECRET.encode() not in reply.SerializeToString()
        # A deployer (and the Unix socket) may read the values.
        shown = stub.GetFunction(pb.GetFunctionRequest(name=with_secret, show_env=True),
                                 metadata=_bearer(deployer), timeout=10)
        assert shown.config.env["DB_PASSWORD"] == SECRET
    local = lambdad.cli("get", with_secret, "--show-env", "-o", "json")
    assert local.code == 0 and SECRET in local.stdout


class Follower:
    """A real `lambdactl logs -f` over TCP, running until it ends by itself."""

    def __init__(self, daemon: Lambdad, key: str, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lambdactl", "logs", name, "-f"],
            env=_tcp(daemon, key), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_streaming(self, daemon: Lambdad, name: str) -> None:
        """Until the stream is open: a line logged now reaches it."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.lines:
            assert self.process.poll() is None, self.stderr()
            daemon.cli("invoke", name, "--data", '{"name": "probe"}')
            time.sleep(0.5)
        assert self.lines, "the follower never received a line"

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def test_revoking_a_key_ends_its_log_stream(lambdad: Lambdad, with_secret: str) -> None:
    revoked = Follower(lambdad, _key(lambdad, "tailer", "invoker"), with_secret)
    kept = Follower(lambdad, _key(lambdad, "tailer-kept", "invoker"), with_secret)
    try:
        revoked.wait_streaming(lambdad, with_secret)
        kept.wait_streaming(lambdad, with_secret)
        assert lambdad.cli("keys", "revoke", "tailer").code == 0
        revoked_at = time.monotonic()
        try:
            code = revoked.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("`logs -f` with a revoked key was still streaming 15 s later")
        # The requirement is "within a second"; a loaded CI machine gets slack here.
        assert time.monotonic() - revoked_at < 10
        stderr = revoked.stderr()
        assert code == 77, stderr
        assert "API key revoked" in stderr
        # Revoking a key ends only its own calls: the other follower still streams.
        assert kept.process.poll() is None
        seen = len(kept.lines)
        lambdad.cli("invoke", with_secret, "--data", '{"name": "after"}')
        assert wait_for(lambda: len(kept.lines) > seen, 30)
    finally:
        revoked.stop()
        kept.stop()


def test_revoking_a_key_ends_its_deploy_stream(lambdad: Lambdad) -> None:
    """A deploy waiting for its upload (or building) ends too, and leaves nothing behind."""
    key = _key(lambdad, "slow-ci", "deployer")
    data = os.urandom(4096)
    header = pb.DeployHeader(name="never", size=len(data) * 2,
                             sha256=hashlib.sha256(data * 2).hexdigest())
    hold = threading.Event()

    def requests() -> Iterator[pb.DeployRequest]:
        yield pb.DeployRequest(header=header)
        yield pb.DeployRequest(chunk=data)
        hold.wait(60)  # the second half never comes while the key is valid

    with grpc.insecure_channel(f"127.0.0.1:{lambdad.grpc_port}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        call = stub.Deploy(requests(), metadata=_bearer(key), timeout=60)
        spool = lambdad.state_dir / "spool"
        assert wait_for(lambda: any(spool.glob("upload-*")), 30), "the upload never started"
        assert lambdad.cli("keys", "revoke", "slow-ci").code == 0
        revoked_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            list(call)
        hold.set()
    assert time.monotonic() - revoked_at < 10
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ended.value.details() == "API key revoked"
    assert wait_for(lambda: not any(spool.glob("upload-*")), 10)
    assert lambdad.cli("get", "never").code == 4

