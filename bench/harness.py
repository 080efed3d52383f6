"""A private lambdad for the benchmarks, and the clients that talk to it.

The daemon gets a short temporary state folder, a free loopback port for the gateway,
no TCP control API and its own image prefix, so it never touches a developer's daemon
or images. Traffic goes only to 127.0.0.1 and to Unix sockets: never to a container IP.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GRPC_OPTIONS = [("grpc.enable_http_proxy", 0)]


def free_port() -> int:
    """A loopback port nobody listens on now (lambdad does not report port 0 back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def executable(name: str) -> str:
    """The venv's console script next to this Python, else one on PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: cannot find {name!r}; run `make bench` (it installs the venv)")
    return found


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX; keep-alive works as with TCP."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class BenchDaemon:
    def __init__(self, *, log_level: str = "warning", extra_args: list[str] | None = None
                 ) -> None:
        self.extra_args = list(extra_args or [])  # more lambdad flags, e.g. --pause-after 0.5
        self.state_dir = Path(tempfile.mkdtemp(prefix="lb-", dir="/tmp"))
        self.image_prefix = f"lambda-bench-{secrets.token_hex(4)}"
        self.gateway_port = 0
        self.log_level = log_level
        self.log_path = self.state_dir / "lambdad.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.docker = docker.from_env()
        self._daemon_id: str | None = None

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "run" / "lambdad.sock"

    @property
    def grpc_target(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def daemon_id(self) -> str | None:
        if self._daemon_id is None:
            with contextlib.suppress(FileNotFoundError):
                self._daemon_id = (self.state_dir / "daemon-id").read_text().strip()
        return self._daemon_id

    def env(self) -> dict[str, str]:
        """The environment of lambdactl: aimed at this daemon only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_")}
        env["LAMBDA_HOST"] = self.grpc_target
        return env

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.gateway_port = free_port()
            if self._start_once(timeout):
                return
            if attempt + 1 < attempts and "cannot listen" in self.log():
                continue  # lost the race for the free port: pick another
            break
        raise RuntimeError(f"lambdad did not become ready; its log:\n{self.log()}")

    def _start_once(self, timeout: float) -> bool:
        command = [
            executable("lambdad"),
            "--state-dir", str(self.state_dir),
            "--gateway-listen", f"127.0.0.1:{self.gateway_port}",
            "--grpc-listen", "none",
            "--admin-listen", "none",
            "--image-prefix", self.image_prefix,
            "--drain-grace", "2",
            "--log-level", self.log_level,
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT,
                                            env=self.env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.socket_path.exists() and self._healthy():
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def _healthy(self) -> bool:
        try:
            with grpc.insecure_channel(self.grpc_target, options=GRPC_OPTIONS) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def function_containers(self, function: str, *, running: bool = False
                            ) -> list[dict[str, Any]]:
        """The function's containers (low-level list entries, no inspect races): those
        labelled for it (started as containers) and those named after it (specialized stem
        cells keep only their `lambda.cell` label and are renamed lambda-<fn>-v<N>-<id>)."""
        daemon_id = self.daemon_id
        if daemon_id is None:
            raise RuntimeError("lambdad wrote no daemon-id")
        found: list[dict[str, Any]] = self.docker.api.containers(
            all=not running, filters={"label": f"lambda.daemon={daemon_id}"})
        named = re.compile(rf"^/?lambda-{re.escape(function)}-v(\d+)-[0-9a-f]{{12}}\Z")
        return [c for c in found
                if (c.get("Labels") or {}).get("lambda.function") == function
                or any(named.match(n) for n in c.get("Names") or [])]

    @staticmethod
    def container_version(container: dict[str, Any]) -> int:
        """The version a container of `function_containers` serves (label, else name)."""
        labels = container.get("Labels") or {}
        if "lambda.version" in labels:
            return int(labels["lambda.version"])
        for name in container.get("Names") or []:
            match = re.search(r"-v(\d+)-[0-9a-f]{12}\Z", name)
            if match:
                return int(match[1])
        return 0

    def instance_socket(self, function: str) -> Path:
        """The invoke socket of the function's newest instance (found by its container)."""
        found = self.function_containers(function, running=True)
        if not found:
            raise RuntimeError(f"no running instance of {function!r}")
        newest = max(found, key=self.container_version)
        instance = (newest.get("Labels") or {}).get("lambda.instance", "?")
        path = self.state_dir / "i" / str(instance) / "invoke.sock"
        if not path.exists():
            raise RuntimeError(f"instance socket {path} is missing")
        return path

    def close(self) -> list[str]:
        """Stops the daemon, removes what it made; returns a line per leftover it removed."""
        self.stop()
        removed: list[str] = []
        daemon_id = self.daemon_id
        if daemon_id is not None:
            label = f"lambda.daemon={daemon_id}"
            for container in self.docker.containers.list(all=True, filters={"label": label}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                    removed.append(f"container {container.name}")
            images = {i.id: i for i in self.docker.images.list(filters={"label": label})}
        else:
            images = {}
        for image in self.docker.images.list(filters={"reference": f"{self.image_prefix}/*"}):
            images[image.id] = image
        for image in images.values():
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                self.docker.images.remove(image.id, force=True)
                removed.append(f"image {', '.join(image.tags) or image.short_id}")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return removed
