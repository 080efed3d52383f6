"""Contexts: the config file's format, and which daemon, key and CA lambdactl picks."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lambdactl import contexts
from lambdactl.contexts import Context, ContextsFile
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.target import resolve_target


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}


def key_file(tmp_path: Path, name: str, key: str) -> str:
    path = tmp_path / name
    path.write_text(key + "\n")
    return str(path)


def config(current: str | None = None, **named: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {"contexts": named}
    if current is not None:
        data["current"] = current
    return data


def config_error(call: Any) -> str:
    with pytest.raises(CliError) as info:
        call()
    assert info.value.code == ExitCode.CONFIG == 78
    return info.value.message


def test_config_path_follows_xdg(tmp_path: Path) -> None:
    assert contexts.config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/lambdactl/config.toml")
    assert contexts.config_path({"HOME": "/h"}) == Path("/h/.config/lambdactl/config.toml")


def test_current_context_gives_host_key_and_ca(env: dict[str, str], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"PEM")
    data = config("prod", prod={"host": "vm:50051", "tls_ca": str(ca),
                                "api_key_file": key_file(tmp_path, "prod.key", "k-prod")})
    target = resolve_target(None, None, env, config=data)
    assert (target.address, target.api_key, target.tls, target.tls_ca) == (
        "vm:50051", "k-prod", True, b"PEM")


def test_host_precedence(env: dict[str, str], tmp_path: Path) -> None:
    data = config("prod", prod={"host": "prod:1"}, dev={"host": "dev:2"})
    assert resolve_target(None, None, env, config=data).address == "prod:1"
    assert resolve_target(None, None, {**env, "LAMBDA_CONTEXT": "dev"},
                          config=data).address == "dev:2"
    # --context beats LAMBDA_CONTEXT; LAMBDA_HOST beats both; --host beats everything.
    both = {**env, "LAMBDA_CONTEXT": "dev"}
    assert resolve_target(None, None, both, context="prod", config=data).address == "prod:1"
    with_host = {**both, "LAMBDA_HOST": "env:3"}
    assert resolve_target(None, None, with_host, context="prod", config=data).address == "env:3"
    assert resolve_target("flag:4", None, with_host, context="prod",
                          config=data).address == "flag:4"


def test_no_context_falls_back_to_local_sockets(env: dict[str, str], tmp_path: Path) -> None:
    sock = tmp_path / "home/.local/state/lambdad/run/lambdad.sock"
    sock.parent.mkdir(parents=True)
    sock.touch()
    assert resolve_target(None, None, env, config={}).address == f"unix://{sock}"
    # Nor does a missing config file matter.
    assert resolve_target(None, None, env).address == f"unix://{sock}"


def test_key_precedence(env: dict[str, str], tmp_path: Path) -> None:
    data = config("prod", prod={"host": "vm:1",
                                "api_key_file": key_file(tmp_path, "ctx.key", "from-context")})
    assert resolve_target(None, None, env, config=data).api_key == "from-context"
    env["LAMBDA_API_KEY_FILE"] = key_file(tmp_path, "env.key", "from-env-file")
    assert resolve_target(None, None, env, config=data).api_key == "from-env-file"
    flag = key_file(tmp_path, "flag.key", "from-flag")
    assert resolve_target(None, flag, env, config=data).api_key == "from-flag"
    env["LAMBDA_API_KEY"] = "from-env"
    assert resolve_target(None, flag, env, config=data).api_key == "from-env"


def test_context_key_is_never_sent_to_another_host(env: dict[str, str], tmp_path: Path) -> None:
    data = config("prod", prod={"host": "vm:1",
                                "api_key_file": key_file(tmp_path, "ctx.key", "secret")})
    assert resolve_target("elsewhere:1", None, env, config=data).api_key is None
    assert resolve_target(None, None, {**env, "LAMBDA_HOST": "other:2"},
                          config=data).api_key is None


def test_tls_ca_precedence(env: dict[str, str], tmp_path: Path) -> None:
    for name in ("flag", "env", "ctx"):
        (tmp_path / f"{name}.pem").write_bytes(name.encode())
    data = config("prod", prod={"host": "vm:1", "tls_ca": str(tmp_path / "ctx.pem")})
    assert resolve_target(None, None, env, config=data).tls_ca == b"ctx"
    env["LAMBDA_TLS_CA"] = str(tmp_path / "env.pem")
    assert resolve_target(None, None, env, config=data).tls_ca == b"env"
    assert resolve_target(None, None, env, config=data,
                          tls_ca=str(tmp_path / "flag.pem")).tls_ca == b"flag"


def test_unknown_or_dangling_context_is_exit_78(env: dict[str, str]) -> None:
    data = config("gone", prod={"host": "vm:1"})
    message = config_error(lambda: resolve_target(None, None, env, config=data))
    assert "current context 'gone' is not defined in" in message
    assert str(contexts.config_path(env)) in message
    message = config_error(lambda: resolve_target(None, None, env, context="nope", config=data))
    assert message.startswith("unknown context 'nope' in ") and "(known: prod)" in message
    # With no file at all, naming a context is still an error.
    config_error(lambda: resolve_target(None, None, {**env, "LAMBDA_CONTEXT": "x"}))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"current": 3}, "`current` must be a string"),
        ({"contexts": "x"}, "`contexts` must be a table"),
        ({"contexts": {"a": {"host": 1}}}, "contexts.a.host must be a string"),
        ({"contexts": {"a": {"hots": "h:1"}}}, "unknown key 'hots' in contexts.a"),
        ({"contexts": {"a": {}}}, "contexts.a has no host"),
        ({"colour": "x"}, "unknown key 'colour'"),
    ],
)
def test_invalid_config_is_exit_78_naming_the_file(
    env: dict[str, str], data: dict[str, Any], needle: str
) -> None:
    message = config_error(lambda: resolve_target(None, None, env, config=data))
    assert message.startswith(f"invalid lambdactl config {contexts.config_path(env)}: ")
    assert needle in message


def test_broken_toml_and_unreadable_files_are_exit_78(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = contexts.config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text('current = "prod\n')
    assert str(path) in config_error(lambda: resolve_target(None, None, env))
    # A broken file does not matter when the host is given.
    assert resolve_target("h:1", None, env).address == "h:1"
    missing = str(tmp_path / "missing.key")
    data = config("p", p={"host": "vm:1", "api_key_file": missing})
    assert missing in config_error(lambda: resolve_target(None, None, env, config=data))
    data = config("p", p={"host": "vm:1", "tls_ca": str(tmp_path / "missing.pem")})
    assert "missing.pem" in config_error(lambda: resolve_target(None, None, env, config=data))


def test_unix_context(env: dict[str, str], tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    sock.touch()
    data = config("local", local={"host": f"unix://{sock}",
                                  "api_key_file": str(tmp_path / "never-read")})
    target = resolve_target(None, None, env, config=data)
    assert target.address == f"unix://{sock}" and target.api_key is None


@pytest.mark.parametrize("text", ["plain", 'q"uote', "back\\slash", "tab\tnew\nline",
                                  "bell\x07del\x7f", "ünïcødé ✓", ""])
def test_serializer_round_trips_through_tomllib(tmp_path: Path, text: str) -> None:
    original = ContextsFile(tmp_path / "c.toml", "we.ird", {
        "we.ird": Context(f"h{text}:1", f"/k/{text}", None),
        "prod": Context("vm:50051", None, f"/ca/{text}"),
    })
    parsed = contexts.parse(tomllib.loads(contexts.dumps(original)), original.path)
    assert parsed == original


def test_dumps_uses_the_documented_layout(tmp_path: Path) -> None:
    text = contexts.dumps(ContextsFile(tmp_path / "c", "prod", {
        "prod": Context("vm:50051", "/keys/prod", "/ca.pem")}))
    assert '\ncurrent = "prod"\n\n[contexts.prod]\nhost = "vm:50051"\n' in text
    assert 'api_key_file = "/keys/prod"\ntls_ca = "/ca.pem"\n' in text


def test_save_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "lambdactl" / "config.toml"
    saved = ContextsFile(path, "a", {"a": Context("h:1")})
    contexts.save(saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert contexts.load(path) == saved
    saved.contexts["b"] = Context("h:2")
    contexts.save(saved)
    assert contexts.load(path) == saved
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left


def test_context_names_are_checked() -> None:
    assert contexts.check_name("prod-1.eu") == "prod-1.eu"
    for bad in ("", "-x", "a b", "x" * 64, 'q"'):
        with pytest.raises(CliError) as info:
            contexts.check_name(bad)
        assert info.value.code == ExitCode.USAGE
