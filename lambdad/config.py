"""lambdad's settings: one table, read from flags, the environment and a TOML file.

Every setting has one name in three spellings: the flag `--gateway-listen`, the
environment variable `LAMBDAD_GATEWAY_LISTEN` and the key `gateway_listen` in
lambdad.toml. Precedence is flags > environment > file > defaults, so a unit
file's `Environment=` or a one-off flag beats the operator's config file.

Resolution is pure (argv, env and the file's text in, a Config or ConfigError
out) so it is unit tested without touching the machine; `check` holds the
checks that look at files and is what `lambdad --check-config` runs.

This module imports neither grpc nor docker: argparse-manpage imports it to write
lambdad.8 from the real parser.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
ENV_PREFIX = "LAMBDAD_"
# /etc/lambdad/lambdad.toml is read when it exists and no other file is named.
SYSTEM_CONFIG = Path("/etc/lambdad/lambdad.toml")
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
    build_timeout: float = 600.0
    build_memory_bytes: int = 2048 * MIB
    build_user: int = 65534
    build_max_image_bytes: int = 4096 * MIB
    build_min_free_disk_bytes: int = 1024 * MIB
    build_cache_bytes: int = 2048 * MIB
    pid_file: Path | None = None
    config_file: Path | None = None


# Value parsers: text in (a flag, a variable, or a TOML value turned into text), value out.
# They raise ValueError with a message that reads well after "SOURCE: ".


def _mib(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a size in MiB, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"expected a positive size in MiB, got {text!r}")
    return int(value * MIB)


def _mib_or_zero(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a size in MiB, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"expected a size in MiB >= 0, got {text!r}")
    return int(value * MIB)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise ValueError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    value = _count(1)(text)
    if value > 65535:
        raise ValueError(f"expected a port 1-65535, got {text!r}")
    return value


def _optional_listen(text: str) -> Listen | None:
    return None if text.lower() in ("", "none", "off", "false") else Listen.parse(text)


def _path(text: str) -> Path:
    if not text:
        raise ValueError("expected a path, got an empty string")
    return Path(text).expanduser()


NO_FILE = "none"


def _path_or_none(text: str) -> str:
    """A path, or NO_FILE for 'none' (kept apart from unset, whose default is derived)."""
    if text.strip().lower() in ("none", "off", "false"):
        return NO_FILE
    return str(_path(text))


_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def _domain(text: str) -> str:
    domain = text.strip(".").lower()
    if not domain or len(domain) > 253 or not all(_LABEL.match(p) for p in domain.split(".")):
        raise ValueError(f"expected a DNS name such as example.com, got {text!r}")
    return domain


def _image_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*(:[\w][\w.-]{0,127})?", text):
        raise ValueError(f"expected a Docker image name, got {text!r}")
    return text


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    key: str
    group: str
    parse: Callable[[str], Any]
    default: Raw | None  # as written in lambdad.toml; None: unset or derived (see help)
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    numeric: bool = False  # accepts TOML numbers besides strings

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


def _s(key: str, group: str, parse: Callable[[str], Any], default: Raw | None, help: str,
       **extra: Any) -> Setting:
    return Setting(key, group, parse, default, help, **extra)


SETTINGS: tuple[Setting, ...] = (
    _s("state_dir", "state", _path, None,
       "folder for lambda.db, the build spool, logs and instance sockets (default: "
       "$STATE_DIRECTORY under systemd, else $LAMBDA_STATE_DIR, else "
       "${XDG_STATE_HOME:-~/.local/state}/lambdad)", metavar="PATH"),
    _s("socket", "control API", _path, None,
       "Unix socket of the control API; its folder is made 0750 and is its access control "
       "(default: $RUNTIME_DIRECTORY/lambdad.sock under systemd, else STATE_DIR/run/lambdad.sock)",
       metavar="PATH"),
    _s("grpc_listen", "control API", _optional_listen, "127.0.0.1:50051",
       "TCP address of the control API, or 'none'; every call there needs an API key "
       "(default: 127.0.0.1:50051)", metavar="HOST:PORT"),
    _s("api_key_file", "control API", _path, None,
       "file holding the bootstrap admin key(s) accepted on TCP, one per line; without it "
       "(and without keys made by `lambdactl keys create`) TCP refuses everything but health "
       "checks (default: $CREDENTIALS_DIRECTORY/api-key when systemd passes that credential)",
       metavar="PATH"),
    _s("tcp_reflection", "control API", _choice("key", "open"), "key",
       "gRPC server reflection on TCP: needs a key (default) or open to anyone who can "
       "connect; always open on the Unix socket", choices=("key", "open")),
    _s("tls_cert", "control API", _path, None,
       "serve the TCP control API over TLS with this PEM certificate chain", metavar="PEM"),
    _s("tls_key", "control API", _path, None,
       "the PEM private key of tls_cert", metavar="PEM"),
    _s("gateway_listen", "gateway", Listen.parse, "127.0.0.1:8080",
       "HTTP gateway address (default: 127.0.0.1:8080)", metavar="HOST:PORT"),
    _s("admin_listen", "gateway", _optional_listen, "127.0.0.1:8081",
       "admin listener with /metrics (Prometheus) and /healthz, or 'none' "
       "(default: 127.0.0.1:8081)", metavar="HOST:PORT"),
    _s("domain", "gateway", _domain, "localhost",
       "functions answer at NAME.DOMAIN (default: localhost)"),
    _s("public_port", "gateway", _port, None,
       "port shown in function URLs, e.g. 443 behind a TLS proxy (default: the gateway's port)",
       metavar="PORT", numeric=True),
    _s("max_connections", "gateway", _count(1), 1024,
       "open client connections the gateway accepts; more are closed at once (default: 1024)",
       metavar="N", numeric=True),
    _s("max_body_size", "gateway", _mib, 6,
       "largest request body the gateway accepts, in MiB (default: 6)", metavar="MiB",
       numeric=True),
    _s("max_buffered_bodies", "gateway", _mib, 256,
       "request-body bytes the gateway holds in memory at once, all connections together, "
       "in MiB; a request whose body would not fit is answered 503 with Retry-After before "
       "its body is read, and an eighth is kept for bodies up to 64 KiB (default: 256)",
       metavar="MiB", numeric=True),
    _s("body_timeout", "gateway", _positive_seconds, 60,
       "a client has this many seconds to send a whole request body, however it trickles "
       "it in, then gets 408 (default: 60, about 100 KiB/s for the largest body)",
       metavar="SECONDS", numeric=True),
    _s("runtime_image", "build", _image_name, "lambda-runtime/python:3.11",
       "base image of Python functions (default: lambda-runtime/python:3.11)", metavar="IMAGE"),
    _s("image_prefix", "build", _image_name, "lambda-fn",
       "repository prefix of function images (default: lambda-fn)", metavar="PREFIX"),
    _s("wheelhouse", "build", _path, None,
       "resolve requirements.txt offline from this folder of wheels (default: PyPI)",
       metavar="PATH"),
    _s("keep_versions", "build", _count(1), 10,
       "keep the images of the newest K versions of each function; older ones are pruned, "
       "their rows kept as history (default: 10)", metavar="K", numeric=True),
    _s("max_code_size", "build", _mib, 50,
       "largest uploaded code archive, in MiB (default: 50)", metavar="MiB", numeric=True),
    _s("max_unpacked_size", "build", _mib, 250,
       "largest unpacked code size, in MiB (default: 250, as AWS Lambda)", metavar="MiB",
       numeric=True),
    _s("build_timeout", "build", _positive_seconds, 600,
       "how long one build may take, pip and `docker build` together, in seconds; a "
       "build that overruns is stopped and the deploy fails, leaving nothing behind "
       "(default: 600)", metavar="SECONDS", numeric=True),
    _s("build_memory", "build", _mib, 2048,
       "memory of one build, in MiB: the address-space limit of pip and the memory "
       "(without swap) of `docker build` steps (default: 2048)", metavar="MiB",
       numeric=True),
    _s("build_user", "build", _count(0), 65534,
       "when lambdad runs as root, pip resolves requirements.txt as this uid and gid, "
       "without supplementary groups, so it cannot read lambdad's files or reach Docker; "
       "0 keeps root (not recommended) (default: 65534, nobody)", metavar="UID",
       numeric=True),
    _s("build_max_image_size", "build", _mib, 4096,
       "largest image a build may produce, in MiB, its base image included; a larger one "
       "is removed with its layers and the deploy fails (default: 4096)", metavar="MiB",
       numeric=True),
    _s("build_min_free_disk", "build", _mib_or_zero, 1024,
       "free space, in MiB, a build must leave on the Docker data root (docker info's "
       "DockerRootDir) and on the file systems pip writes to (its work folder, the state "
       "folder): a build is not started below it and is stopped when it falls below; 0 "
       "disables (default: 1024)", metavar="MiB", numeric=True),
    _s("build_cache_size", "build", _mib_or_zero, 2048,
       "space, in MiB, for resolved requirements kept under the state folder so a redeploy "
       "with the same requirements.txt skips pip (least recently used go first); 0 "
       "disables (default: 2048)", metavar="MiB", numeric=True),
    _s("start_timeout", "runtime", _seconds, 30,
       "how long an instance may take to open its socket, in seconds (default: 30)",
       metavar="SECONDS", numeric=True),
    _s("drain_grace", "runtime", _seconds, 10,
       "on SIGTERM, how long in-flight requests may finish, in seconds; keep the unit's "
       "TimeoutStopSec above it (default: 10)", metavar="SECONDS", numeric=True),
    _s("cell_pool_size", "runtime", _count(0), 2,
       "stem cells: pre-started generic instances kept ready per resource class in use, "
       "so a cold start of a standard-runtime function only loads its code; 0 disables "
       "(default: 2)", metavar="N", numeric=True),
    _s("pause_after", "runtime", _seconds, 5,
       "idle instances of Dockerfile functions are paused (cgroup freezer) after this many "
       "seconds and unpaused by the next request; 0 disables (default: 5)",
       metavar="SECONDS", numeric=True),
    _s("function_log_size", "runtime", _mib, 4,
       "size at which a function's log file rotates, in MiB (default: 4)", metavar="MiB",
       numeric=True),
    _s("function_log_files", "runtime", _count(2), 5,
       "log files kept per function, the current one included; the cap per function is "
       "about N x size (default: 5)", metavar="N", numeric=True),
    _s("async_backoff", "runtime", _seconds, 60,
       "asynchronous invocations: attempt N waits N x this many seconds before the next "
       "(default: 60, so retries come after 1 and 2 more minutes)", metavar="SECONDS",
       numeric=True),
    _s("max_queued_events", "runtime", _count(1), 1000,
       "asynchronous invocations waiting per function; more are refused (429 with "
       "Retry-After at the gateway, RESOURCE_EXHAUSTED over gRPC) and schedule runs are "
       "skipped (default: 1000)", metavar="N", numeric=True),
    _s("max_event_size", "runtime", _mib, 0.25,
       "largest asynchronous invocation payload, in MiB; with max_queued_events it bounds "
       "the disk one function's queue can take (default: 0.25, as AWS Lambda)",
       metavar="MiB", numeric=True),
    _s("schedule_catch_up", "runtime", _seconds, 3600,
       "a schedule run missed while lambdad was down runs once at start if it was due within "
       "this many seconds; 0 disables (default: 3600)", metavar="SECONDS", numeric=True),
    _s("log_level", "daemon", _choice("debug", "info", "warning", "error"), "info",
       "daemon log level (default: info)", choices=("debug", "info", "warning", "error")),
    _s("pid_file", "daemon", _path_or_none, None,
       "file holding lambdad's process id, written once it is ready and removed when it "
       "stops, for scripts that signal it (under `make run`, make is its parent); 'none' "
       "writes none (default: $RUNTIME_DIRECTORY/lambdad.pid under systemd, else "
       "STATE_DIR/run/lambdad.pid)", metavar="PATH"),
)
BY_KEY = {s.key: s for s in SETTINGS}

EPILOG = """\
configuration:
  Every setting above has three spellings: the flag --gateway-listen, the environment
  variable LAMBDAD_GATEWAY_LISTEN and the key gateway_listen in the TOML config file.
  Precedence: flags > environment > config file > defaults. The config file is --config,
  else $LAMBDAD_CONFIG, else $CONFIGURATION_DIRECTORY/lambdad.toml under systemd, else
  /etc/lambdad/lambdad.toml when it exists; 'none' reads no file. Sizes are MiB, times
  are seconds, listen addresses are HOST:PORT or 'none'.

exit codes:
  0   stopped cleanly
  1   could not start or failed while running (the log says why)
  2   usage error on the command line
  78  configuration error (EX_CONFIG); the unit does not restart on it"""


def _flag_type(setting: Setting) -> Callable[[str], Any]:
    """argparse wants ArgumentTypeError to print a usage error instead of a traceback."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.key
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambdad",
        description="The lambda daemon: builds functions into images, runs them in hardened "
        "containers, serves them through an HTTP gateway and exposes a gRPC control API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # one name per setting; --check-config reports flags as given
    )
    parser.add_argument("--version", action="version", version=f"lambdad {_version()}")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="TOML config file, or 'none' (default: $LAMBDAD_CONFIG, else "
                        "/etc/lambdad/lambdad.toml when it exists)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration from all sources, print the "
                        "effective settings as TOML with where each came from, and exit "
                        "(0: valid, 78: not)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in SETTINGS:
        group = groups.get(setting.group)
        if group is None:
            group = groups[setting.group] = parser.add_argument_group(setting.group)
        group.add_argument(setting.flag, dest=setting.key, type=_flag_type(setting),
                           default=argparse.SUPPRESS, help=setting.help,
                           metavar=_metavar(setting))
    return parser


def _metavar(setting: Setting) -> str | None:
    if setting.choices:
        return "{" + ",".join(setting.choices) + "}"
    return setting.metavar


def _version() -> str:
    from lambdad import __version__

    return __version__


# Resolution


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
            if setting.parse is _optional_listen and value is False:
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


def _text(value: Raw) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
                                   else setting.parse(_text(setting.default)))
            continue
        source, value = candidate
        try:
            values[setting.key] = setting.parse(_text(value))
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
        build_timeout=values["build_timeout"],
        build_memory_bytes=values["build_memory"],
        build_user=values["build_user"],
        build_max_image_bytes=values["build_max_image_size"],
        build_min_free_disk_bytes=values["build_min_free_disk"],
        build_cache_bytes=values["build_cache_size"],
        pid_file=pid_file,
        config_file=config_file,
    )


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


# Checks that look at the machine: what --check-config adds to parsing.


def check(config: Config) -> list[str]:
    """Problems that would stop lambdad or make it misbehave, each naming the setting."""
    problems: list[str] = []
    for key, path in (("api_key_file", config.api_key_file), ("tls_cert", config.tls_cert),
                      ("tls_key", config.tls_key)):
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{key}: cannot read {path}")
    if config.api_key_file is not None and os.access(config.api_key_file, os.R_OK):
        try:
            lines = config.api_key_file.read_text(errors="replace").splitlines()
        except OSError as exc:  # e.g. a folder
            problems.append(f"api_key_file: cannot read {config.api_key_file}: {exc.strerror}")
        else:
            if not any(line.strip() and not line.startswith("#") for line in lines):
                problems.append(f"api_key_file: {config.api_key_file} holds no key")
    from lambdad.gateway.budget import largest_body

    largest = largest_body(config.max_buffered_body_bytes)
    if config.max_body_bytes > largest:
        problems.append(
            f"max_buffered_bodies ({config.max_buffered_body_bytes / MIB:g} MiB) cannot hold "
            f"one body of max_body_size ({config.max_body_bytes / MIB:g} MiB) besides its "
            f"reserve for small bodies: make it at least "
            f"{config.max_body_bytes * 8 / 7 / MIB:.2f} MiB")
    if (config.tls_cert is None) != (config.tls_key is None):
        problems.append("tls_cert and tls_key go together: set both or neither")
    if config.tls_cert is not None and config.grpc_listen is None:
        problems.append("tls_cert is set but grpc_listen is 'none': nothing would use it")
    if config.wheelhouse is not None and not config.wheelhouse.is_dir():
        problems.append(f"wheelhouse: {config.wheelhouse} is not a folder")
    if len(str(config.state_dir)) + INSTANCE_SOCKET_SUFFIX > MAX_SOCKET_PATH:
        problems.append(f"state_dir: {config.state_dir} is too deep for Unix socket paths "
                        f"({MAX_SOCKET_PATH - INSTANCE_SOCKET_SUFFIX} characters at most)")
    if len(str(config.socket)) > MAX_SOCKET_PATH:
        problems.append(f"socket: {config.socket} is longer than {MAX_SOCKET_PATH} bytes")
    folders = [("state_dir", config.state_dir), ("socket", config.socket.parent)]
    if config.pid_file is not None:
        folders.append(("pid_file", config.pid_file.parent))
    for key, folder in folders:
        problem = _writable_folder(folder)
        if problem:
            problems.append(f"{key}: {problem}")
    listens = [(k, v) for k, v in (("gateway_listen", config.gateway_listen),
                                   ("grpc_listen", config.grpc_listen),
                                   ("admin_listen", config.admin_listen)) if v is not None]
    for i, (key, listen) in enumerate(listens):
        for other_key, other in listens[:i]:
            if listen.port == other.port and listen.port != 0 and _overlap(listen, other):
                problems.append(f"{key} and {other_key} both use port {listen.port}")
    return problems


def _overlap(a: Listen, b: Listen) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a.host == b.host or a.host in wildcard or b.host in wildcard


def _writable_folder(folder: Path) -> str | None:
    """A folder lambdad can use: writable if it exists, else creatable under its parent."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


# TOML output: the effective settings (--check-config) and the example file.


def toml_value(value: Raw) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _text(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def effective_toml(resolved: Resolved) -> str:
    """The configuration as a TOML file that would reproduce it, with each value's source."""
    path = resolved.config.config_file
    lines = [f"# lambdad {_version()}; config file: {path if path else 'none'}"]
    for setting in SETTINGS:
        value = resolved.raw[setting.key]
        source = resolved.sources[setting.key]
        if value is None:
            lines.append(f"# {setting.key} is not set ({source})")
        else:
            lines.append(f"{setting.key} = {toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"


def example_toml() -> str:
    """packaging/lambdad.toml: every setting, commented out at its default."""
    import textwrap

    lines = [
        "# /etc/lambdad/lambdad.toml: lambdad's configuration.",
        "#",
        "# Every key is also a flag (--gateway-listen) and an environment variable",
        "# (LAMBDAD_GATEWAY_LISTEN); flags > environment > this file > defaults.",
        "# Sizes are MiB, times are seconds. `lambdad --check-config` validates the",
        "# result and prints where each value came from. Generated by `make config-example`.",
    ]
    group = None
    for setting in SETTINGS:
        if setting.group != group:
            group = setting.group
            lines += ["", f"# --- {group} ---"]
        lines.append("")
        lines += textwrap.wrap(setting.help, 86, initial_indent="# ", subsequent_indent="# ")
        default = "..." if setting.default is None else toml_value(setting.default)
        lines.append(f"#{setting.key} = {default}")
    return "\n".join(lines) + "\n"
