"""Where the daemon listens and how to authenticate to it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdactl import contexts
from lambdactl.contexts import Context
from lambdactl.exitcodes import CliError, ExitCode

SYSTEMD_SOCKET = Path("/run/lambdad/lambdad.sock")


@dataclass(frozen=True)
class Target:
    address: str  # grpc target: unix:///abs/path or host:port
    is_unix: bool
    api_key: str | None = None  # only ever set for TCP targets
    tls: bool = False  # tls://host:port: TLS, verified against tls_ca or the system CAs
    tls_ca: bytes | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the bearer token on TCP; the Unix socket needs none."""
        if self.api_key is None:
            return ()
        return (("authorization", f"Bearer {self.api_key}"),)


def candidate_sockets(env: Mapping[str, str]) -> list[Path]:
    """Sockets to try, in order, when no host is given."""
    paths = []
    if env.get("LAMBDA_STATE_DIR"):
        paths.append(Path(env["LAMBDA_STATE_DIR"]) / "run" / "lambdad.sock")
    state_home = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")) / ".local/state")
    paths.append(Path(state_home).expanduser() / "lambdad" / "run" / "lambdad.sock")
    paths.append(SYSTEMD_SOCKET)
    return paths


def _not_running(paths: list[Path]) -> CliError:
    where = ", ".join(str(p) for p in paths)
    return CliError(
        f"lambdad is not running: no socket at {where}; "
        "start it with `make run` or set LAMBDA_HOST",
        ExitCode.UNREACHABLE,
    )


def _unix_target(path_text: str) -> Target:
    path = Path(path_text).expanduser().absolute()
    if not path.exists():
        raise _not_running([path])
    return Target(f"unix://{path}", is_unix=True)


def read_api_key(key_file: str | None, env: Mapping[str, str],
                 context_key_file: str | None = None) -> str | None:
    """LAMBDA_API_KEY wins, then --api-key-file, LAMBDA_API_KEY_FILE, the context's file."""
    key = env.get("LAMBDA_API_KEY", "").strip()
    if key:
        return key
    key_file = key_file or env.get("LAMBDA_API_KEY_FILE") or context_key_file
    if not key_file:
        return None
    try:
        key = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f"cannot read API key file {key_file}: {why}", ExitCode.CONFIG) from None
    if not key:
        raise CliError(f"API key file {key_file} is empty", ExitCode.CONFIG)
    return key


def _read_ca(ca_file: str) -> bytes:
    try:
        return Path(ca_file).expanduser().read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read TLS CA file {ca_file}: {exc.strerror}",
                       ExitCode.CONFIG) from None


def pick_context(name: str | None, env: Mapping[str, str],
                 config: Mapping[str, Any] | None = None) -> Context | None:
    """The named context, else the file's current one, else None (no file is fine).

    `config` is the file's parsed TOML, for tests; by default the file is read."""
    path = contexts.config_path(env)
    found = contexts.load(path) if config is None else contexts.parse(config, path)
    if name:
        return found.get(name)
    if found.current is None:
        return None
    if found.current not in found.contexts:
        raise CliError(f"the current context {found.current!r} is not defined in {path}; "
                       "pick one with `lambdactl context use NAME`", ExitCode.CONFIG)
    return found.contexts[found.current]


def _local_socket(env: Mapping[str, str]) -> Target:
    paths = candidate_sockets(env)
    for path in paths:
        if path.exists():
            return Target(f"unix://{path.absolute()}", is_unix=True)
    raise _not_running(paths)


def check_host(host: str) -> tuple[str, bool]:
    """(grpc address, tls) of a TCP host, or a usage error saying what is accepted."""
    tls = host.startswith("tls://")
    address = host.removeprefix("tcp://").removeprefix("tls://")
    name, sep, port = address.rpartition(":")
    if not sep or not name or not port.isdigit():
        raise CliError(
            f"invalid host {host!r}: expected unix:///path/to.sock, host:port or "
            "tls://host:port", ExitCode.USAGE
        )
    return address, tls


def resolve_target(
    host: str | None,
    key_file: str | None,
    env: Mapping[str, str] | None = None,
    *,
    context: str | None = None,
    tls_ca: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Target:
    """--host > LAMBDA_HOST > --context / LAMBDA_CONTEXT > the current context > local sockets.

    A context's key and CA files apply only when its host is the one used, so a key
    is never sent to a host given some other way."""
    env = os.environ if env is None else env
    host = host or env.get("LAMBDA_HOST") or None
    chosen: Context | None = None
    if host is None:
        chosen = pick_context(context or env.get("LAMBDA_CONTEXT") or None, env, config)
        if chosen is None:
            return _local_socket(env)
        host = chosen.host
    if host.startswith("unix:"):
        # unix:///abs/path, unix:/abs/path and unix:relative/path all work.
        rest = host.removeprefix("unix:")
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise CliError(f"invalid host {host!r}: no socket path", ExitCode.USAGE)
        return _unix_target(rest)
    address, tls = check_host(host)
    ca_file = tls_ca or env.get("LAMBDA_TLS_CA") or (chosen.tls_ca if chosen else None)
    ca = _read_ca(ca_file) if ca_file else None
    key = read_api_key(key_file, env, chosen.api_key_file if chosen else None)
    return Target(address, is_unix=False, api_key=key, tls=tls or ca is not None, tls_ca=ca)
