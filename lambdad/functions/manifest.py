"""lambda.toml: parsed and validated before anything is written.

Pure functions: the daemon reads the manifest from the uploaded tarball and lays the
deploy flags over it; every mistake is an InvalidArgument naming the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from lambdad.errors import InvalidArgument
from lambdad.functions.names import validate_name
from lambdad.functions.overrides import NETWORKS, SETTING_FIELDS, Overrides

DEFAULT_HANDLER = "handler.handler"
DEFAULT_TIMEOUT_S = 30
DEFAULT_MEMORY_MB = 128
MAX_TIMEOUT_S = 900  # AWS Lambda's ceiling
MIN_MEMORY_MB, MAX_MEMORY_MB = 16, 10240
RUNTIMES = ("python3.11", "docker")
MAX_ENV_BYTES = 4096  # AWS Lambda's limit on all variables together
DEFAULT_CPU = 1.0
MIN_CPU, MAX_CPU = 0.05, 64.0
DEFAULT_PIDS_LIMIT = 256
MIN_PIDS_LIMIT, MAX_PIDS_LIMIT = 16, 32768
MAX_CONCURRENCY = 1000
MAX_INSTANCES = 1000
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600

_HANDLER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED_ENV = ("AWS_", "LAMBDA_", "_HANDLER")
_KNOWN_KEYS = {"name", "runtime", "handler", "timeout", "memory", "cpu", "pids_limit", "env",
               "network", "description", "scaling", "async", "auth"}
AUTH_MODES = ("none", "key")
_ASYNC_KEYS = {"retries", "max_event_age"}
MAX_ASYNC_RETRIES = 10
MIN_EVENT_AGE_S, MAX_EVENT_AGE_S = 60, 6 * 3600  # AWS Lambda's range
_SCALING_KEYS = {"concurrency", "min_instances", "max_instances", "idle_timeout",
                 "queue_timeout"}


@dataclass(frozen=True)
class Scaling:
    """How many instances serve a function, and how many requests each takes at once."""

    concurrency: int = 1
    min_instances: int = 0
    max_instances: int = 10
    idle_timeout_s: int = 300
    queue_timeout_s: int | None = None  # None: the function's timeout

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaling:
        """Reads a stored scaling block; a missing key takes its default."""
        values: dict[str, Any] = {
            name: None if value is None and name == "queue_timeout_s" else int(value)
            for name, value in _stored(cls, data).items()}
        return cls(**values)


@dataclass(frozen=True)
class FunctionConfig:
    runtime: str = "python3.11"
    handler: str = DEFAULT_HANDLER
    timeout_s: int = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    env: Mapping[str, str] = field(default_factory=dict)
    network: str = "none"
    cpu: float = DEFAULT_CPU
    pids_limit: int = DEFAULT_PIDS_LIMIT
    scaling: Scaling = field(default_factory=Scaling)
    async_retries: int = 2  # asynchronous invocations: retries after the first attempt
    async_max_age_s: int = MAX_EVENT_AGE_S
    auth: str = "none"  # "key": the gateway wants an API key with invoker rights

    @property
    def queue_timeout_s(self) -> int:
        queue = self.scaling.queue_timeout_s
        return self.timeout_s if queue is None else queue

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**values, "env": dict(self.env), "scaling": self.scaling.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunctionConfig:
        """Reads a stored config; keys added by later releases take their defaults."""
        missing = [key for key in _STORED_ALWAYS if key not in data]
        if missing:
            raise KeyError(missing[0])
        defaults = cls()
        values: dict[str, Any] = {
            name: (Scaling.from_dict(value) if name == "scaling"
                   else dict(value) if name == "env"
                   else type(getattr(defaults, name))(value))
            for name, value in _stored(cls, data).items()
        }
        return cls(**values)


_STORED_ALWAYS = ("runtime", "handler", "timeout_s", "memory_mb")  # in every stored config


def _stored(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The stored values of `cls`'s fields; a field the data lacks is left to its default."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


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
    scaling = data.get("scaling", {})
    if not isinstance(scaling, dict):
        raise InvalidArgument("lambda.toml: scaling must be a table")
    unknown = sorted(set(scaling) - _SCALING_KEYS)
    if unknown:
        raise InvalidArgument(f"lambda.toml: unknown key(s) in [scaling]: {', '.join(unknown)}")
    queue = scaling.get("queue_timeout")
    if queue is not None and (isinstance(queue, bool) or not isinstance(queue, int)):
        raise InvalidArgument(f"lambda.toml: scaling.queue_timeout must be an int, got {queue!r}")
    async_table = data.get("async", {})
    if not isinstance(async_table, dict):
        raise InvalidArgument("lambda.toml: async must be a table")
    unknown = sorted(set(async_table) - _ASYNC_KEYS)
    if unknown:
        raise InvalidArgument(f"lambda.toml: unknown key(s) in [async]: {', '.join(unknown)}")
    cpu = data.get("cpu", DEFAULT_CPU)
    if isinstance(cpu, bool) or not isinstance(cpu, int | float):
        raise InvalidArgument(f"lambda.toml: cpu must be a number, got {cpu!r}")
    config = FunctionConfig(
        runtime=runtime,
        handler=_typed(data, "handler", str, DEFAULT_HANDLER),
        timeout_s=_typed(data, "timeout", int, DEFAULT_TIMEOUT_S),
        memory_mb=_typed(data, "memory", int, DEFAULT_MEMORY_MB),
        env={str(k): _env_value(k, v) for k, v in env.items()},
        network=_typed(data, "network", str, "none"),
        cpu=float(cpu),
        pids_limit=_typed(data, "pids_limit", int, DEFAULT_PIDS_LIMIT),
        scaling=Scaling(
            concurrency=_typed(scaling, "concurrency", int, 1, "scaling."),
            min_instances=_typed(scaling, "min_instances", int, 0, "scaling."),
            max_instances=_typed(scaling, "max_instances", int, 10, "scaling."),
            idle_timeout_s=_typed(scaling, "idle_timeout", int, 300, "scaling."),
            queue_timeout_s=queue,
        ),
        async_retries=_typed(async_table, "retries", int, 2, "async."),
        async_max_age_s=_typed(async_table, "max_event_age", int, MAX_EVENT_AGE_S, "async."),
        auth=_typed(data, "auth", str, "none"),
    )
    return Manifest(name=name, config=validate_config(config))


def apply_overrides(config: FunctionConfig, overrides: Overrides) -> FunctionConfig:
    """The config with the given settings replaced and the env added, validated again."""
    top: dict[str, Any] = {}
    scaling: dict[str, Any] = {}
    for setting in SETTING_FIELDS:
        if setting.attr in overrides.settings:
            where = scaling if setting.scaling else top
            where[setting.attr] = overrides.settings[setting.attr]
    merged = replace(config, **top, env={**config.env, **overrides.env},
                     scaling=replace(config.scaling, **scaling))
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
    if not MIN_CPU <= config.cpu <= MAX_CPU:
        raise InvalidArgument(f"cpu must be {MIN_CPU}-{MAX_CPU} cores, got {config.cpu}")
    if not MIN_PIDS_LIMIT <= config.pids_limit <= MAX_PIDS_LIMIT:
        raise InvalidArgument(
            f"pids_limit must be {MIN_PIDS_LIMIT}-{MAX_PIDS_LIMIT}, got {config.pids_limit}"
        )
    _validate_scaling(config.scaling)
    if config.auth not in AUTH_MODES:
        raise InvalidArgument(f"auth must be one of {', '.join(AUTH_MODES)}, got {config.auth!r}")
    if not 0 <= config.async_retries <= MAX_ASYNC_RETRIES:
        raise InvalidArgument(
            f"async.retries must be 0-{MAX_ASYNC_RETRIES}, got {config.async_retries}")
    if not MIN_EVENT_AGE_S <= config.async_max_age_s <= MAX_EVENT_AGE_S:
        raise InvalidArgument(
            f"async.max_event_age must be {MIN_EVENT_AGE_S}-{MAX_EVENT_AGE_S} seconds, "
            f"got {config.async_max_age_s}")
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


def _validate_scaling(scaling: Scaling) -> None:
    if not 1 <= scaling.concurrency <= MAX_CONCURRENCY:
        raise InvalidArgument(
            f"concurrency must be 1-{MAX_CONCURRENCY}, got {scaling.concurrency}"
        )
    if not 1 <= scaling.max_instances <= MAX_INSTANCES:
        raise InvalidArgument(
            f"max_instances must be 1-{MAX_INSTANCES}, got {scaling.max_instances}"
        )
    if not 0 <= scaling.min_instances <= scaling.max_instances:
        raise InvalidArgument(
            f"min_instances must be 0-max_instances ({scaling.max_instances}), "
            f"got {scaling.min_instances}"
        )
    if not 1 <= scaling.idle_timeout_s <= MAX_IDLE_TIMEOUT_S:
        raise InvalidArgument(
            f"idle_timeout must be 1-{MAX_IDLE_TIMEOUT_S} seconds, got {scaling.idle_timeout_s}"
        )
    queue = scaling.queue_timeout_s
    if queue is not None and not 0 <= queue <= MAX_TIMEOUT_S:
        raise InvalidArgument(f"queue_timeout must be 0-{MAX_TIMEOUT_S} seconds, got {queue}")


def _typed(
    data: Mapping[str, Any], key: str, kind: type, default: Any, prefix: str = ""
) -> Any:
    value = data.get(key, default)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise InvalidArgument(f"lambda.toml: {prefix}{key} must be a{'n' if kind is int else ''} "
                              f"{kind.__name__}, got {value!r}")
    return value


def _env_value(key: object, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidArgument(f"lambda.toml: env.{key} must be a string or number")
