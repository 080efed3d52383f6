"""A real lambdad subprocess for end-to-end tests, and the real lambdactl next to it.

Each daemon gets a short temporary state folder, free loopback ports, an API key
file and its own image prefix, so tests never touch a developer's daemon. `close`
removes every container and image the daemon created.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def container_owner(container: Any) -> tuple[str | None, int | None]:
    """(function, version) from an instance's labels (see Lambdad.owner for stem cells)."""
    labels = container.labels
    if "lambda.function" in labels:
        return labels["lambda.function"], int(labels["lambda.version"])
    return None, None


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    """Polls `predicate` until it is true or `timeout` seconds passed; returns the outcome."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def runtime_image_args() -> list[str]:
    """`--runtime-image` from LAMBDA_TEST_RUNTIME_IMAGE: a runtime image under test (built
    under its own tag) instead of the shared lambda-runtime/python:3.11."""
    image = os.environ.get("LAMBDA_TEST_RUNTIME_IMAGE", "")
    return ["--runtime-image", image] if image else []


def daemon_env() -> dict[str, str]:
    """This process's environment without lambdad settings or systemd's directories."""
    systemd = {"STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CONFIGURATION_DIRECTORY",
               "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("LAMBDAD_", "LAMBDA_")) and k not in systemd}


class Lambdad:
    def __init__(self, *, extra_args: list[str] | None = None) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))
        self.gateway_port = free_port()
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.api_key = secrets.token_urlsafe(24)
        self.key_file = self.state_dir / "api-key"
        self.key_file.write_text(self.api_key + "\n")
        self.image_prefix = f"lambda-test-{secrets.token_hex(4)}"
        self.extra_args = extra_args or []
        self.log_path = self.state_dir / "lambdad.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_env: dict[str, str] = {}  # extra environment for the daemon process
        self.umask: int | None = None  # the daemon's umask (None: this process's)
        self.command_prefix: list[str] = []  # e.g. setpriv, to run it without capabilities
        self.docker = docker.from_env()

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "run" / "lambdad.sock"

    @property
    def daemon_id(self) -> str:
        return (self.state_dir / "daemon-id").read_text().strip()

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "lambdad",
            "--config", "none",  # an installed /etc/lambdad/lambdad.toml must not leak in
            "--state-dir", str(self.state_dir),
            "--gateway-listen", f"127.0.0.1:{self.gateway_port}",
            "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--api-key-file", str(self.key_file),
            "--image-prefix", self.image_prefix,
            "--drain-grace", "3",
            # An idle instance stops at its idle_timeout, as the tests of scaling to zero
            # expect; tests/e2e/test_freeze.py sets a window of its own (a later flag wins).
            "--freeze-window", "0",
            *runtime_image_args(),
            *self.extra_args,
        ]

    def start(self, timeout: float = 120.0) -> None:
        # Generous: a Docker engine busy removing the images of the previous test can
        # make the daemon's first API calls (ping, reconcile) slow on 2 shared cores.
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([*self.command_prefix, *self.command()],
                                        stdout=log, stderr=log, cwd=ROOT,
                                        env={**daemon_env(), **self.start_env},
                                        umask=-1 if self.umask is None else self.umask)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lambdad exited with {self.process.returncode}:\n{self.log()}")
            if self.socket_path.exists() and self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"lambdad did not become ready:\n{self.log()}")

    def _healthy(self) -> bool:
        try:
            with grpc.insecure_channel(f"unix://{self.socket_path}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        """Stops the daemon and removes every container and image it made."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        with contextlib.suppress(FileNotFoundError):
            label = f"lambda.daemon={self.daemon_id}"
            for container in self.docker.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
            for image in self.docker.images.list(filters={"label": label}):
                with contextlib.suppress(docker.errors.ImageNotFound):
                    self.docker.images.remove(image.id, force=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # Clients

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_")}
        env["LAMBDA_HOST"] = f"unix://{self.socket_path}"
        env.update(extra)
        return env

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180,
            stdin: str | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "lambdactl", *args],
            env=env if env is not None else self.env(), capture_output=True, text=True,
            timeout=timeout, cwd=ROOT, input=stdin,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    @contextlib.contextmanager
    def cli_running(self, *args: str) -> Iterator[subprocess.Popen[str]]:
        """`lambdactl ARGS` left running while the block runs (for a test to interrupt it
        or kill lambdad under it), killed on the way out if it has not ended."""
        proc = subprocess.Popen([sys.executable, "-m", "lambdactl", *args], env=self.env(),
                                cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def deploy(self, folder: Path | str, *args: str) -> CliResult:
        path = folder if isinstance(folder, Path) else FUNCTIONS / folder
        result = self.cli("deploy", str(path), *args)
        assert result.code == 0, f"deploy failed ({result.code}):\n{result.stderr}\n{self.log()}"
        return result

    def http(self, function: str | None, path: str = "/", *, method: str = "GET",
             body: bytes | None = None, headers: dict[str, str] | None = None,
             host: str | None = None, timeout: float = 60) -> HttpResult:
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway_port, timeout=timeout)
        try:
            all_headers = {"Host": host or f"{function}.localhost:{self.gateway_port}"}
            all_headers.update(headers or {})
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return HttpResult(response.status, {k.lower(): v for k, v in response.getheaders()},
                              response.read())
        finally:
            conn.close()

    def containers(self, function: str | None = None) -> list[Any]:
        """This daemon's containers: all (stem cells included), or one function's."""
        found = self.docker.containers.list(  # a cell may go between the list and inspect
            all=True, filters={"label": f"lambda.daemon={self.daemon_id}"}, ignore_removed=True)
        if function is None:
            return list(found)
        return [c for c in found if self.owner(c)[0] == function]

    def owner(self, container: Any) -> tuple[str | None, int | None]:
        """(function, version) of an instance: its labels, or for a specialized stem cell
        (labels are fixed at creation) the owner file lambdad writes once it is loaded."""
        if "lambda.cell" in container.labels:
            owner = self.state_dir / "c" / container.labels["lambda.instance"] / "owner"
            try:
                function, version = owner.read_text().split()[:2]  # then its stamp
                return function, int(version)
            except (OSError, ValueError):
                return None, None
        return container_owner(container)

    def images(self, function: str | None = None) -> list[Any]:
        filters = [f"lambda.daemon={self.daemon_id}"]
        if function:
            filters.append(f"lambda.function={function}")
        return list(self.docker.images.list(filters={"label": filters}))


@contextlib.contextmanager
def running_daemon(*extra_args: str, remove: Path | None = None) -> Iterator[Lambdad]:
    """A started daemon, closed at the end; `remove` (a temporary wheelhouse) goes with it."""
    daemon = Lambdad(extra_args=list(extra_args))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
