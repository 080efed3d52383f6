"""lambdad's settings and its argument parser.

This module imports neither grpc nor docker: argparse-manpage imports it to write
lambdad.8 from the real parser.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


def default_state_dir() -> Path:
    """Where `make run` keeps state: $LAMBDA_STATE_DIR, else the XDG state folder."""
    explicit = os.environ.get("LAMBDA_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "lambdad"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    state_dir: Path
    socket: Path
    grpc_listen: Listen | None
    api_key_file: Path | None
    gateway_listen: Listen
    admin_listen: Listen | None
    tcp_reflection: str
    max_connections: int
    tls_cert: Path | None
    tls_key: Path | None
    domain: str
    public_port: int
    runtime_image: str
    image_prefix: str
    wheelhouse: Path | None
    max_code_bytes: int
    max_unpacked_bytes: int
    keep_versions: int
    max_body_bytes: int
    start_timeout: float
    drain_grace: float
    log_file_bytes: int
    log_files: int
    async_backoff: float
    catch_up_window: float
    log_level: str


def _mib(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in MiB, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return int(value * MIB)


def _optional_listen(text: str) -> Listen | None:
    return None if text.lower() in ("", "none", "off") else Listen.parse(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambdad",
        description="The lambda daemon: builds functions into images, runs them in hardened "
        "containers, serves them through an HTTP gateway and exposes a gRPC control API.",
    )
    state = parser.add_argument_group("state")
    state.add_argument("--state-dir", type=Path, default=None,
                       help="folder for lambda.db, the build spool and instance sockets "
                       "(default: $LAMBDA_STATE_DIR or ~/.local/state/lambdad)")
    control = parser.add_argument_group("control API")
    control.add_argument("--socket", type=Path, default=None,
                         help="Unix socket of the control API; its folder is made 0750 "
                         "(default: STATE_DIR/run/lambdad.sock)")
    control.add_argument("--grpc-listen", type=_optional_listen, default="127.0.0.1:50051",
                         metavar="HOST:PORT", help="TCP address of the control API, or 'none' "
                         "(default: 127.0.0.1:50051); every call there needs an API key")
    control.add_argument("--api-key-file", type=Path, default=None,
                         help="file holding the API key accepted on TCP, one per line; "
                         "without it TCP refuses everything but health checks")
    control.add_argument("--tcp-reflection", choices=("key", "open"), default="key",
                         help="gRPC server reflection on TCP: needs a key (default) or open "
                         "to anyone who can connect; always open on the Unix socket")
    control.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                         help="serve the TCP control API over TLS with this certificate chain")
    control.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                         help="the private key of --tls-cert")
    gateway = parser.add_argument_group("gateway")
    gateway.add_argument("--gateway-listen", type=Listen.parse, default="127.0.0.1:8080",
                         metavar="HOST:PORT", help="HTTP gateway address (default: 127.0.0.1:8080)")
    gateway.add_argument("--admin-listen", type=_optional_listen, default="127.0.0.1:8081",
                         metavar="HOST:PORT", help="admin listener with /metrics (Prometheus) "
                         "and /healthz, or 'none' (default: 127.0.0.1:8081)")
    gateway.add_argument("--domain", default="localhost",
                         help="functions answer at NAME.DOMAIN (default: localhost)")
    gateway.add_argument("--public-port", type=int, default=None,
                         help="port shown in function URLs (default: the gateway's port)")
    gateway.add_argument("--max-connections", type=int, default=1024, metavar="N",
                         help="open client connections the gateway accepts; more are closed at "
                         "once (default: 1024)")
    gateway.add_argument("--max-body-size", type=_mib, default=6 * MIB, metavar="MiB",
                         help="largest request body the gateway accepts (default: 6)")
    build = parser.add_argument_group("build")
    build.add_argument("--runtime-image", default="lambda-runtime/python:3.11",
                       help="base image of Python functions (default: lambda-runtime/python:3.11)")
    build.add_argument("--image-prefix", default="lambda-fn",
                       help="repository prefix of function images (default: lambda-fn)")
    build.add_argument("--wheelhouse", type=Path, default=None,
                       help="resolve requirements.txt offline from this folder of wheels")
    build.add_argument("--keep-versions", type=int, default=10, metavar="K",
                       help="keep the images of the newest K versions of each function; older "
                       "ones are pruned, their rows kept as history (default: 10)")
    build.add_argument("--max-code-size", type=_mib, default=50 * MIB, metavar="MiB",
                       help="largest uploaded code archive (default: 50)")
    build.add_argument("--max-unpacked-size", type=_mib, default=250 * MIB, metavar="MiB",
                       help="largest unpacked code size (default: 250, as AWS Lambda)")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--start-timeout", type=float, default=30.0, metavar="SECONDS",
                         help="how long an instance may take to open its socket (default: 30)")
    runtime.add_argument("--drain-grace", type=float, default=10.0, metavar="SECONDS",
                         help="on SIGTERM, how long in-flight requests may finish (default: 10)")
    runtime.add_argument("--function-log-size", type=_mib, default=4 * MIB, metavar="MiB",
                         help="size at which a function's log file rotates (default: 4)")
    runtime.add_argument("--function-log-files", type=int, default=5, metavar="N",
                         help="log files kept per function, the current one included; the "
                         "cap per function is about N x size (default: 5)")
    runtime.add_argument("--async-backoff", type=float, default=60.0, metavar="SECONDS",
                         help="asynchronous invocations: attempt N waits N x this before the "
                         "next (default: 60, so retries come after 1 and 2 more minutes)")
    runtime.add_argument("--schedule-catch-up", type=float, default=3600.0, metavar="SECONDS",
                         help="a schedule run missed while lambdad was down runs once at start "
                         "if it was due within this window; 0 disables (default: 3600)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="daemon log level (default: info)")
    return parser


def parse_config(argv: list[str] | None = None) -> Config:
    args = build_parser().parse_args(argv)
    state_dir: Path = (args.state_dir or default_state_dir()).expanduser().absolute()
    gateway: Listen = args.gateway_listen
    return Config(
        state_dir=state_dir,
        socket=(args.socket or state_dir / "run" / "lambdad.sock").expanduser().absolute(),
        grpc_listen=args.grpc_listen,
        api_key_file=args.api_key_file,
        gateway_listen=gateway,
        admin_listen=args.admin_listen,
        tcp_reflection=args.tcp_reflection,
        max_connections=max(1, args.max_connections),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        domain=args.domain.strip(".").lower(),
        public_port=args.public_port if args.public_port is not None else gateway.port,
        runtime_image=args.runtime_image,
        image_prefix=args.image_prefix,
        wheelhouse=args.wheelhouse,
        max_code_bytes=args.max_code_size,
        keep_versions=max(1, args.keep_versions),
        max_unpacked_bytes=args.max_unpacked_size,
        max_body_bytes=args.max_body_size,
        start_timeout=args.start_timeout,
        drain_grace=args.drain_grace,
        log_file_bytes=args.function_log_size,
        log_files=max(2, args.function_log_files),
        async_backoff=max(0.0, args.async_backoff),
        catch_up_window=max(0.0, args.schedule_catch_up),
        log_level=args.log_level,
    )
