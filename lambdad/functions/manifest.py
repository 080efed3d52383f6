"""lambda.toml: parsed and validated before anything is written.

Pure functions: the daemon reads the manifest from the uploaded tarball and lays the
deploy flags over it; every mistake is an InvalidArgument naming the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lambdad.errors import InvalidArgument
from lambdad.functions.names import validate_name

DEFAULT_HANDLER = "handler.handler"
DEFAULT_TIMEOUT_S = 30
DEFAULT_MEMORY_MB = 128
MAX_TIMEOUT_S = 900  # AWS Lambda's ceiling
MIN_MEMORY_MB, MAX_MEMORY_MB = 16, 10240
RUNTIMES = ("python3.11", "docker")
NETWORKS = ("none", "bridge")
MAX_ENV_BYTES = 4096  # AWS Lambda's limit on all variables together

_HANDLER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = ("AWS_", "LAMBDA_", "_HANDLER")
_KNOWN_KEYS = {"name", "runtime", "handler", "timeout", "memory", "env", "network", "description"}


@dataclass(frozen=True)
class FunctionConfig:
    runtime: str = "python3.11"
    handler: str = DEFAULT_HANDLER
    timeout_s: int = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    env: Mapping[str, str] = field(default_factory=dict)
    network: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "handler": self.handler,
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "env": dict(self.env),
            "network": self.network,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunctionConfig:
        return cls(
            runtime=str(data["runtime"]),
            handler=str(data["handler"]),
            timeout_s=int(data["timeout_s"]),
            memory_mb=int(data["memory_mb"]),
            env=dict(data.get("env", {})),
            network=str(data.get("network", "none")),
        )


@dataclass(frozen=True)
class Overrides:
    """Deploy flags; None keeps what the manifest says."""

    handler: str | None = None
    timeout_s: int | None = None
    memory_mb: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None


@dataclass(frozen=True)
class Manifest:
    name: str | None
    config: FunctionConfig


def parse_manifest(text: str | None, *, has_dockerfile: bool) -> Manifest:
    """Parses lambda.toml (None: no manifest) into a validated Manifest."""
    data: dict[str, Any] = {}
    if text is not None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"lambda.toml: {exc}") from None
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise InvalidArgument(f"lambda.toml: unknown key(s) {', '.join(unknown)}")
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidArgument("lambda.toml: name must be a string")
        validate_name(name)
    default_runtime = "docker" if has_dockerfile else "python3.11"
    runtime = _typed(data, "runtime", str, default_runtime)
    if runtime not in RUNTIMES:
        raise InvalidArgument(
            f"lambda.toml: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}"
        )
    if runtime == "docker" and not has_dockerfile:
        raise InvalidArgument("lambda.toml: runtime 'docker' needs a Dockerfile in the folder")
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise InvalidArgument("lambda.toml: env must be a table of strings")
    config = FunctionConfig(
        runtime=runtime,
        handler=_typed(data, "handler", str, DEFAULT_HANDLER),
        timeout_s=_typed(data, "timeout", int, DEFAULT_TIMEOUT_S),
        memory_mb=_typed(data, "memory", int, DEFAULT_MEMORY_MB),
        env={str(k): _env_value(k, v) for k, v in env.items()},
        network=_typed(data, "network", str, "none"),
    )
    return Manifest(name=name, config=validate_config(config))


def apply_overrides(config: FunctionConfig, overrides: Overrides) -> FunctionConfig:
    merged = replace(
        config,
        handler=config.handler if overrides.handler is None else overrides.handler,
        timeout_s=config.timeout_s if overrides.timeout_s is None else overrides.timeout_s,
        memory_mb=config.memory_mb if overrides.memory_mb is None else overrides.memory_mb,
        env={**config.env, **overrides.env},
        network=config.network if overrides.network is None else overrides.network,
    )
    return validate_config(merged)


def validate_config(config: FunctionConfig) -> FunctionConfig:
    if not _HANDLER.match(config.handler):
        raise InvalidArgument(
            f"handler {config.handler!r} must look like module.function (e.g. handler.handler)"
        )
    if not 1 <= config.timeout_s <= MAX_TIMEOUT_S:
        raise InvalidArgument(f"timeout must be 1-{MAX_TIMEOUT_S} seconds, got {config.timeout_s}")
    if not MIN_MEMORY_MB <= config.memory_mb <= MAX_MEMORY_MB:
        raise InvalidArgument(
            f"memory must be {MIN_MEMORY_MB}-{MAX_MEMORY_MB} MiB, got {config.memory_mb}"
        )
    if config.network not in NETWORKS:
        raise InvalidArgument(
            f"network {config.network!r} is not one of {', '.join(NETWORKS)}"
        )
    size = 0
    for key, value in config.env.items():
        if not _ENV_KEY.match(key):
            raise InvalidArgument(f"environment variable name {key[:64]!r} is not valid")
        if key.startswith(_RESERVED_ENV):
            raise InvalidArgument(f"environment variable {key!r} is reserved by the runtime")
        if "\x00" in value:
            raise InvalidArgument(f"environment variable {key!r} contains a NUL byte")
        size += len(key.encode()) + len(value.encode())
    if size > MAX_ENV_BYTES:
        raise InvalidArgument(f"environment variables total {size} bytes, over {MAX_ENV_BYTES}")
    return config


def _typed(data: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = data.get(key, default)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise InvalidArgument(f"lambda.toml: {key} must be a{'n' if kind is int else ''} "
                              f"{kind.__name__}, got {value!r}")
    return value


def _env_value(key: object, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidArgument(f"lambda.toml: env.{key} must be a string or number")
