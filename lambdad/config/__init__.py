"""lambdad's settings: one table, read from flags, the environment and a TOML file.

Every setting has one name in three spellings: the flag `--gateway-listen`, the
environment variable `LAMBDAD_GATEWAY_LISTEN` and the key `gateway_listen` in
lambdad.toml. Precedence is flags > environment > file > defaults, so a unit
file's `Environment=` or a one-off flag beats the operator's config file.

The package holds what the daemon reads (`Config`, here) apart from how it is made:
`values` (text to value, pure), `settings` (the table), `parser` (the argparse parser
the table makes), `resolve` (argv, env and the file's text in, a Config or
ConfigError out; pure, so it is unit tested without touching the machine), `check`
(the checks that look at files: what `lambdad --check-config` runs) and `render` (the
effective settings and the example file as TOML).

Nothing here imports grpc or docker: argparse-manpage imports `parser` to write
lambdad.8 from the real parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
# An instance socket is STATE_DIR/i/<12 hex>/invoke.sock; sun_path holds 107 bytes.
MAX_SOCKET_PATH = 107
INSTANCE_SOCKET_SUFFIX = len("/i/0123456789ab/invoke.sock")

Raw = str | int | float | bool


class ConfigError(Exception):
    """The configuration is unusable; `problems` names each bad setting and where it came from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    state_dir: Path
    database: str  # 'sqlite' or a postgresql:// URL (print it with lambdad.dburl.redacted)
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
    body_timeout: float = 60.0
    max_buffered_body_bytes: int = 256 * MIB
    max_queued_events: int = 1000
    max_event_bytes: int = 256 * 1024
    cell_pool_size: int = 2
    pause_after: float = 5.0
    freeze_window: float = 600.0
    frozen_memory_bytes: int = 512 * MIB
    build_timeout: float = 600.0
    build_memory_bytes: int = 2048 * MIB
    build_user: int = 65534
    build_max_image_bytes: int = 4096 * MIB
    build_min_free_disk_bytes: int = 1024 * MIB
    build_cache_bytes: int = 2048 * MIB
    pid_file: Path | None = None
    config_file: Path | None = None
    # cluster mode (a postgresql database); see lambdad/cluster
    node_name: str = ""  # "" until resolved: the host name
    advertise_address: str | None = None
    node_down_after: float = 10.0
    cluster_key_file: Path | None = None
