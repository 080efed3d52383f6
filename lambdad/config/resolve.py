"""Resolution: argv, the environment and the config file's text in, a Config (with
where each value came from) or a ConfigError out. Pure but for `read_existing` and
`default_state_dir`'s home folder, so it is unit tested in memory."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdad.config import Config, ConfigError, Listen, Raw
from lambdad.config.parser import build_parser
from lambdad.config.settings import BY_KEY, SETTINGS, Setting
from lambdad.config.values import NO_FILE, as_text, optional_listen

# /etc/lambdad/lambdad.toml is read when it exists and no other file is named.
SYSTEM_CONFIG = Path("/etc/lambdad/lambdad.toml")


@dataclass(frozen=True)
class Resolved:
    """The effective configuration and, for --check-config, where each setting came from."""

    config: Config
    sources: dict[str, str]  # key -> "flag", "env LAMBDAD_X", "file PATH", "default"
    raw: dict[str, Raw | None]  # key -> value as it would be written in lambdad.toml


def config_file_path(flag: str | None, env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The file to read and whether it was named explicitly (a named file must exist)."""
    named = flag if flag is not None else env.get("LAMBDAD_CONFIG")
    if named is not None:
        if named.strip().lower() in ("", "none"):
            return None, True
        return Path(named).expanduser(), True
    if env.get("CONFIGURATION_DIRECTORY"):
        first = env["CONFIGURATION_DIRECTORY"].split(":")[0]
        return Path(first) / "lambdad.toml", False
    return SYSTEM_CONFIG, False


def parse_file(text: str, where: str) -> dict[str, Raw]:
    """The TOML file's settings; unknown keys and wrong types are errors, not ignored."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: not valid TOML: {exc}"]) from None
    problems = []
    values: dict[str, Raw] = {}
    for key, value in data.items():
        setting = BY_KEY.get(key)
        if setting is None:
            hint = _closest(key)
            problems.append(f"{where}: unknown setting {key!r}" +
                            (f" (did you mean {hint!r}?)" if hint else ""))
        elif isinstance(value, bool):
            if setting.parse is optional_listen and value is False:
                values[key] = "none"
            else:
                problems.append(f"{where}: {key}: expected a string, got a boolean")
        elif isinstance(value, int | float) and not setting.numeric:
            problems.append(f"{where}: {key}: expected a string, got a number")
        elif not isinstance(value, str | int | float):
            problems.append(f"{where}: {key}: expected a string or number, got "
                            f"{type(value).__name__}")
        else:
            values[key] = value
    if problems:
        raise ConfigError(problems)
    return values


def _closest(key: str) -> str | None:
    import difflib

    found = difflib.get_close_matches(key.replace("-", "_"), list(BY_KEY), n=1)
    return found[0] if found else None


def resolve(
    argv: list[str] | None,
    env: Mapping[str, str],
    read_file: Callable[[Path], str | None],
) -> tuple[Resolved, argparse.Namespace]:
    """Flags > env > file > defaults. `read_file` returns None when the file does not exist."""
    parser = build_parser()
    args = parser.parse_args(argv)
    path, named = config_file_path(args.config, env)
    file_values: dict[str, Raw] = {}
    used_file: Path | None = None
    if path is not None:
        try:
            text = read_file(path)
        except OSError as exc:
            raise ConfigError([f"cannot read config file {path}: {exc.strerror}"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"config file {path} is not UTF-8 text"]) from None
        if text is None:
            if named:
                raise ConfigError([f"config file {path} does not exist"])
        else:
            used_file = path
            file_values = parse_file(text, str(path))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    raw: dict[str, Raw | None] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        if hasattr(args, setting.key):  # given on the command line; 'none' parses to None
            values[setting.key] = getattr(args, setting.key)
            sources[setting.key] = "flag"
            raw[setting.key] = _flag_raw(argv, setting)
            continue
        candidate: tuple[str, Raw] | None = None
        if setting.env in env:
            candidate = (f"env {setting.env}", env[setting.env])
        elif setting.key in file_values:
            candidate = (f"file {used_file}", file_values[setting.key])
        if candidate is None:
            sources[setting.key] = "default"
            raw[setting.key] = setting.default
            values[setting.key] = (None if setting.default is None
                                   else setting.parse(as_text(setting.default)))
            continue
        source, value = candidate
        try:
            values[setting.key] = setting.parse(as_text(value))
        except ValueError as exc:
            where = source.removeprefix("env ").removeprefix("file ")
            key = "" if source.startswith("env ") else f": {setting.key}"
            problems.append(f"{where}{key}: {exc}")
            continue
        sources[setting.key] = source
        raw[setting.key] = value
    if problems:
        raise ConfigError(problems)
    config = _build(values, env, used_file)
    derived_values: dict[str, Raw | None] = {
        "state_dir": str(config.state_dir),
        "socket": str(config.socket),
        "public_port": config.public_port,
        "api_key_file": None if config.api_key_file is None else str(config.api_key_file),
        "pid_file": NO_FILE if config.pid_file is None else str(config.pid_file),
        "node_name": config.node_name,
    }
    for key, derived in derived_values.items():
        if sources[key] == "default":
            raw[key] = derived
    return Resolved(config, sources, raw), args


def _flag_raw(argv: list[str] | None, setting: Setting) -> Raw | None:
    """The flag's text as given, for printing; argparse keeps only the parsed value."""
    import sys

    words = sys.argv[1:] if argv is None else argv
    found: str | None = None
    for i, word in enumerate(words):
        if word == setting.flag and i + 1 < len(words):
            found = words[i + 1]
        elif word.startswith(setting.flag + "="):
            found = word.split("=", 1)[1]
    if found is not None and setting.numeric:
        try:
            return int(found)
        except ValueError:
            return float(found)
    return found


def _build(values: dict[str, Any], env: Mapping[str, str], config_file: Path | None) -> Config:
    state_dir: Path = values["state_dir"] or default_state_dir(env)
    state_dir = state_dir.expanduser().absolute()
    socket: Path | None = values["socket"]
    runtime_dir = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if socket is None:
        socket = (Path(runtime_dir) / "lambdad.sock" if runtime_dir
                  else state_dir / "run" / "lambdad.sock")
    pid_file: Path | None = None
    if values["pid_file"] is None:  # beside the socket when it is where lambdad puts it
        pid_file = (Path(runtime_dir) / "lambdad.pid" if runtime_dir
                    else state_dir / "run" / "lambdad.pid")
    elif values["pid_file"] != NO_FILE:
        pid_file = Path(values["pid_file"]).absolute()
    api_key_file: Path | None = values["api_key_file"]
    if api_key_file is None and env.get("CREDENTIALS_DIRECTORY"):
        credential = Path(env["CREDENTIALS_DIRECTORY"]) / "api-key"
        api_key_file = credential if credential.exists() else None
    gateway: Listen = values["gateway_listen"]
    public_port: int | None = values["public_port"]
    return Config(
        state_dir=state_dir,
        database=values["database"],
        socket=socket.expanduser().absolute(),
        grpc_listen=values["grpc_listen"],
        api_key_file=api_key_file,
        gateway_listen=gateway,
        admin_listen=values["admin_listen"],
        tcp_reflection=values["tcp_reflection"],
        max_connections=values["max_connections"],
        tls_cert=values["tls_cert"],
        tls_key=values["tls_key"],
        domain=values["domain"],
        public_port=public_port if public_port is not None else gateway.port,
        runtime_image=values["runtime_image"],
        image_prefix=values["image_prefix"],
        wheelhouse=values["wheelhouse"],
        max_code_bytes=values["max_code_size"],
        keep_versions=values["keep_versions"],
        max_unpacked_bytes=values["max_unpacked_size"],
        max_body_bytes=values["max_body_size"],
        start_timeout=values["start_timeout"],
        drain_grace=values["drain_grace"],
        log_file_bytes=values["function_log_size"],
        log_files=values["function_log_files"],
        async_backoff=values["async_backoff"],
        catch_up_window=values["schedule_catch_up"],
        body_timeout=values["body_timeout"],
        max_buffered_body_bytes=values["max_buffered_bodies"],
        max_queued_events=values["max_queued_events"],
        max_event_bytes=values["max_event_size"],
        log_level=values["log_level"],
        cell_pool_size=values["cell_pool_size"],
        pause_after=values["pause_after"],
        freeze_window=values["freeze_window"],
        frozen_memory_bytes=values["frozen_memory_mb"],
        build_timeout=values["build_timeout"],
        build_memory_bytes=values["build_memory"],
        build_user=values["build_user"],
        build_max_image_bytes=values["build_max_image_size"],
        build_min_free_disk_bytes=values["build_min_free_disk"],
        build_cache_bytes=values["build_cache_size"],
        pid_file=pid_file,
        config_file=config_file,
        node_name=values["node_name"] or _host_name(),
        advertise_address=values["advertise_address"],
        node_down_after=values["node_down_after"],
        cluster_key_file=values["cluster_key_file"],
    )


def _host_name() -> str:
    """The default node name: the host's short name, made fit for the setting."""
    import re
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:63]
    return name.lstrip("._-") or "node"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """systemd's StateDirectory, else $LAMBDA_STATE_DIR, else the XDG state folder."""
    env = os.environ if env is None else env
    for name in ("STATE_DIRECTORY", "LAMBDA_STATE_DIR"):
        if env.get(name):
            return Path(env[name].split(":")[0])
    xdg = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(xdg) / "lambdad"


def read_existing(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
