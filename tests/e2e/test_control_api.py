"""The control API as automation sees it: grpcurl over the Unix socket and TCP, raw streams."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from tests.support.daemon import Lambdad

GRPCURL = shutil.which("grpcurl") or str(Path(__file__).resolve().parents[2] / ".venv/bin/grpcurl")
SERVICE = "lambdad.api.v1.FunctionService"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)


def test_grpcurl_over_the_unix_socket(lambdad: Lambdad) -> None:
    lambdad.deploy("greet", "--name", "greet-grpc")
    listed = grpcurl("-plaintext", "-unix", str(lambdad.socket_path), "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert SERVICE in services and "grpc.health.v1.Health" in services
    described = grpcurl("-plaintext", "-unix", str(lambdad.socket_path), "describe", SERVICE)
    assert "rpc Deploy ( stream .lambdad.api.v1.DeployRequest )" in described.stdout
    functions = grpcurl("-plaintext", "-unix", str(lambdad.socket_path),
                        f"{SERVICE}/ListFunctions")
    assert functions.returncode == 0, functions.stderr
    names = [f["name"] for f in json.loads(functions.stdout)["functions"]]
    assert "greet-grpc" in names
    invoked = grpcurl("-plaintext", "-unix", "-d", '{"name": "greet-grpc", "payload": "'
                      'eyJuYW1lIjogImdycGN1cmwifQ=="}', str(lambdad.socket_path),
                      f"{SERVICE}/Invoke")
    assert invoked.returncode == 0, invoked.stderr
    reply = json.loads(invoked.stdout)
    assert reply["status_code"] == 200, reply
    assert json.loads(base64.b64decode(reply["payload"])) == {"message": "Hello, grpcurl!"}


def test_tcp_needs_the_api_key(lambdad: Lambdad) -> None:
    address = f"127.0.0.1:{lambdad.grpc_port}"
    without = grpcurl("-plaintext", address, f"{SERVICE}/ListFunctions")
    assert without.returncode != 0
    assert "Unauthenticated" in without.stderr
    wrong = grpcurl("-plaintext", "-H", "authorization: Bearer wrong", address,
                    f"{SERVICE}/ListFunctions")
    assert "Unauthenticated" in wrong.stderr and "invalid or revoked API key" in wrong.stderr
    reflection = grpcurl("-plaintext", address, "list")
    assert reflection.returncode != 0
    with_key = grpcurl("-plaintext", "-H", f"authorization: Bearer {lambdad.api_key}",
                       address, f"{SERVICE}/ListFunctions")
    assert with_key.returncode == 0, with_key.stderr
    listed = grpcurl("-plaintext", "-H", f"authorization: Bearer {lambdad.api_key}",
                     address, "list")
    assert SERVICE in listed.stdout.split()
    # Health stays open without a key (grpcurl would need reflection, which needs the key).
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_cli_over_tcp(lambdad: Lambdad) -> None:
    tcp = lambdad.env(LAMBDA_HOST=f"127.0.0.1:{lambdad.grpc_port}")
    denied = lambdad.cli("list", env=tcp)
    assert denied.code == 77 and "API key" in denied.stderr
    allowed = lambdad.cli("list", "-o", "json", env={**tcp, "LAMBDA_API_KEY": lambdad.api_key})
    assert allowed.code == 0, allowed.stderr
    from_file = lambdad.cli("--api-key-file", str(lambdad.key_file), "list", env=tcp)
    assert from_file.code == 0, from_file.stderr


def _tarball(members: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra or []:
            archive.addfile(info)
    return buffer.getvalue()


def _deploy(lambdad: Lambdad, name: str, data: bytes, *, size: int | None = None,
            sha256: str | None = None, chunk: int = 64 * 1024) -> list[pb.DeployResponse]:
    header = pb.DeployHeader(name=name, size=len(data) if size is None else size,
                             sha256=sha256 or hashlib.sha256(data).hexdigest())

    def requests() -> Iterator[pb.DeployRequest]:
        yield pb.DeployRequest(header=header)
        for start in range(0, len(data), chunk):
            yield pb.DeployRequest(chunk=data[start:start + chunk])

    with grpc.insecure_channel(f"unix://{lambdad.socket_path}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        return list(stub.Deploy(requests(), timeout=120))


HANDLER = {"handler.py": b"def handler(e, c):\n    return 1\n"}


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("data", "kwargs", "code", "message"),
    [
        (_tarball({**HANDLER, "/etc/cron.d/x": b"x"}), {}, grpc.StatusCode.INVALID_ARGUMENT,
         "'/etc/cron.d/x': absolute path"),
        (_tarball({**HANDLER, "../../x.py": b"x"}), {}, grpc.StatusCode.INVALID_ARGUMENT,
         "'../../x.py': '..' in path"),
        (_tarball(HANDLER, [_symlink("evil", "/var/run/docker.sock")]), {},
         grpc.StatusCode.INVALID_ARGUMENT, "'evil': symlink to absolute path"),
        (_tarball(HANDLER), {"sha256": "0" * 64}, grpc.StatusCode.INVALID_ARGUMENT,
         "checksum mismatch"),
        (_tarball(HANDLER), {"size": 10**6}, grpc.StatusCode.INVALID_ARGUMENT,
         "upload truncated"),
        (_tarball(HANDLER), {"size": 10**9}, grpc.StatusCode.RESOURCE_EXHAUSTED,
         "the limit is"),
        (b"\x1f\x8bnot really gzip", {}, grpc.StatusCode.INVALID_ARGUMENT,
         "not a valid tar archive"),
    ],
)
def test_hostile_uploads_are_refused_and_nothing_is_written(
    lambdad: Lambdad, data: bytes, kwargs: dict[str, object], code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _deploy(lambdad, "hostile", data, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code() == code
    assert message in str(caught.value.details())
    assert lambdad.images("hostile") == []
    assert list((lambdad.state_dir / "spool").iterdir()) == []
    assert lambdad.cli("get", "hostile").code == 4


def test_deploy_stream_must_start_with_a_header(lambdad: Lambdad) -> None:
    with grpc.insecure_channel(f"unix://{lambdad.socket_path}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Deploy(iter([pb.DeployRequest(chunk=b"x")]), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first Deploy message must be the header" in str(caught.value.details())


def test_raw_deploy_reports_progress_and_result(lambdad: Lambdad) -> None:
    responses = _deploy(lambdad, "raw", _tarball(HANDLER), chunk=7)
    kinds = [r.WhichOneof("kind") for r in responses]
    assert kinds[0] == "progress" and kinds[-1] == "result"
    # A standard-runtime version without requirements.txt is built with no image and no
    # pip: its build has no output lines, only its steps' progress.
    steps = [(r.progress.step, r.progress.state) for r in responses if r.HasField("progress")]
    assert [step for step, _ in steps] == [2, 2, 3, 3]  # step 1 is the CLI's packaging
    result = responses[-1].result
    assert (result.name, result.version) == ("raw", 1)
    assert result.url == f"http://raw.localhost:{lambdad.gateway_port}"


def test_oversized_metadata_is_refused_and_the_daemon_keeps_serving(lambdad: Lambdad) -> None:
    with grpc.insecure_channel(f"unix://{lambdad.socket_path}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListFunctions(pb.ListFunctionsRequest(), metadata=(("x-big", "a" * 64_000),),
                               timeout=10)
        assert caught.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
        assert stub.ListFunctions(pb.ListFunctionsRequest(), timeout=10) is not None


def test_get_version_describes_the_daemon(lambdad: Lambdad) -> None:
    with grpc.insecure_channel(f"unix://{lambdad.socket_path}") as channel:
        info = pb_grpc.FunctionServiceStub(channel).GetVersion(pb.GetVersionRequest(), timeout=10)
    assert (info.version, info.api_version, info.domain) == ("0.1.0", "v1", "localhost")
    assert info.url_template == f"http://{{name}}.localhost:{lambdad.gateway_port}"
    assert info.python_version.startswith("3.") and info.docker_version
    assert info.started_at.seconds > 0
    # Over TCP any valid key may ask, the least role (invoker) included.
    created = lambdad.cli("keys", "create", "--name", "version-rpc", "--role", "invoker")
    metadata = (("authorization", f"Bearer {created.stdout.strip()}"),)
    with grpc.insecure_channel(f"127.0.0.1:{lambdad.grpc_port}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        assert stub.GetVersion(pb.GetVersionRequest(), metadata=metadata,
                               timeout=10).version == "0.1.0"
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetVersion(pb.GetVersionRequest(), timeout=10)
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
