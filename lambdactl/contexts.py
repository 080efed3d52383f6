"""Named daemons (contexts) in `$XDG_CONFIG_HOME/lambdactl/config.toml`.

The file holds where a daemon is and the *paths* of its key and CA files, never a
key: it may end up in a dotfiles repository. Read with tomllib; written by the
small serializer below (only strings occur) to a temporary file that replaces the
old one, so a crash never leaves half a file. Free of grpc and rich, like the parser.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdactl.exitcodes import CliError, ExitCode

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTEXT_KEYS = ("host", "api_key_file", "tls_ca")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


@dataclass(frozen=True)
class Context:
    host: str
    api_key_file: str | None = None
    tls_ca: str | None = None


@dataclass
class ContextsFile:
    path: Path
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def get(self, name: str) -> Context:
        """The named context; an unknown name is a configuration error (78)."""
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise CliError(f"unknown context {name!r} in {self.path} (known: {known})",
                           ExitCode.CONFIG)
        return self.contexts[name]


def config_path(env: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME/lambdactl/config.toml, else ~/.config/lambdactl/config.toml."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "lambdactl" / "config.toml"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise CliError(f"invalid context name {name!r}: use letters, digits, '.', '_' and '-' "
                       "(at most 63, starting with a letter or digit)", ExitCode.USAGE)
    return name


def _broken(path: Path, why: str) -> CliError:
    return CliError(f"invalid lambdactl config {path}: {why}", ExitCode.CONFIG)


def parse(data: Mapping[str, Any], path: Path) -> ContextsFile:
    """Validate what tomllib read; every mistake names the file and the key."""
    unknown = set(data) - {"current", "contexts"}
    if unknown:
        raise _broken(path, f"unknown key {sorted(unknown)[0]!r}")
    current = data.get("current")
    if current is not None and not isinstance(current, str):
        raise _broken(path, "`current` must be a string")
    tables = data.get("contexts", {})
    if not isinstance(tables, dict):
        raise _broken(path, "`contexts` must be a table")
    contexts = {name: _context(name, table, path) for name, table in tables.items()}
    return ContextsFile(path, current or None, contexts)


def _context(name: str, table: object, path: Path) -> Context:
    if not isinstance(table, dict):
        raise _broken(path, f"contexts.{name} must be a table")
    for key, value in table.items():
        if key not in _CONTEXT_KEYS:
            raise _broken(path, f"unknown key {key!r} in contexts.{name}")
        if not isinstance(value, str):
            raise _broken(path, f"contexts.{name}.{key} must be a string")
    if not table.get("host"):
        raise _broken(path, f"contexts.{name} has no host")
    return Context(table["host"], table.get("api_key_file") or None, table.get("tls_ca") or None)


def load(path: Path) -> ContextsFile:
    """The file's contexts; a missing file is an empty one."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        return ContextsFile(path)
    except OSError as exc:
        raise CliError(f"cannot read lambdactl config {path}: {exc.strerror}",
                       ExitCode.CONFIG) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _broken(path, str(exc)) from None
    return parse(data, path)


def _string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def dumps(config: ContextsFile) -> str:
    lines = ["# lambdactl contexts: written by `lambdactl context`; key files are paths."]
    if config.current:
        lines.append(f"current = {_string(config.current)}")
    for name in sorted(config.contexts):
        context = config.contexts[name]
        lines += ["", f"[contexts.{_key(name)}]", f"host = {_string(context.host)}"]
        if context.api_key_file:
            lines.append(f"api_key_file = {_string(context.api_key_file)}")
        if context.tls_ca:
            lines.append(f"tls_ca = {_string(context.tls_ca)}")
    return "\n".join(lines) + "\n"


def save(config: ContextsFile) -> None:
    """Write atomically with mode 0600: a temporary file in the same folder, then rename."""
    folder = config.path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CliError(f"cannot write lambdactl config {config.path}: {exc.strerror}",
                       ExitCode.CONFIG) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:  # mkstemp makes it 0600
            file.write(dumps(config))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, config.path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise CliError(f"cannot write lambdactl config {config.path}: {exc.strerror}",
                       ExitCode.CONFIG) from None
