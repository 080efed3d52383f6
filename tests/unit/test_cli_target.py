"""Where lambdactl looks for the daemon, and the API key it sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.target import Target, resolve_target


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home")}


def test_no_socket_anywhere_is_exit_69_listing_the_paths(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["LAMBDA_STATE_DIR"] = str(tmp_path / "state")
    with pytest.raises(CliError) as info:
        resolve_target(None, None, env)
    assert info.value.code == ExitCode.UNREACHABLE
    message = info.value.message
    assert message.startswith("lambdad is not running: no socket at ")
    assert str(tmp_path / "state/run/lambdad.sock") in message
    assert str(tmp_path / "home/.local/state/lambdad/run/lambdad.sock") in message
    assert "/run/lambdad/lambdad.sock" in message
    assert message.endswith("start it with `make run` or set LAMBDA_HOST")


def test_state_dir_socket_comes_first(env: dict[str, str], tmp_path: Path) -> None:
    state = touch(tmp_path / "state/run/lambdad.sock")
    touch(tmp_path / "home/.local/state/lambdad/run/lambdad.sock")
    env["LAMBDA_STATE_DIR"] = str(tmp_path / "state")
    assert resolve_target(None, None, env) == Target(f"unix://{state}", is_unix=True)


def test_xdg_state_home_then_home(env: dict[str, str], tmp_path: Path) -> None:
    home_sock = touch(tmp_path / "home/.local/state/lambdad/run/lambdad.sock")
    assert resolve_target(None, None, env).address == f"unix://{home_sock}"
    xdg_sock = touch(tmp_path / "xdg/lambdad/run/lambdad.sock")
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    assert resolve_target(None, None, env).address == f"unix://{xdg_sock}"
    # LAMBDA_STATE_DIR set but without a socket: fall through to the next candidate.
    env["LAMBDA_STATE_DIR"] = str(tmp_path / "empty")
    assert resolve_target(None, None, env).address == f"unix://{xdg_sock}"


def test_host_flag_beats_env(env: dict[str, str], tmp_path: Path) -> None:
    flag_sock = touch(tmp_path / "flag.sock")
    env_sock = touch(tmp_path / "env.sock")
    env["LAMBDA_HOST"] = f"unix://{env_sock}"
    assert resolve_target(None, None, env).address == f"unix://{env_sock}"
    assert resolve_target(f"unix://{flag_sock}", None, env).address == f"unix://{flag_sock}"


def test_unix_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = touch(tmp_path / "d.sock")
    monkeypatch.chdir(tmp_path)
    for host in (f"unix://{sock}", f"unix:{sock}", "unix:d.sock"):
        target = resolve_target(host, None, {})
        assert target == Target(f"unix://{sock}", is_unix=True)
        assert target.metadata() == ()


def test_explicit_missing_socket_is_exit_69(tmp_path: Path) -> None:
    with pytest.raises(CliError) as info:
        resolve_target(f"unix://{tmp_path}/nope.sock", None, {"LAMBDA_API_KEY": "k"})
    assert info.value.code == ExitCode.UNREACHABLE
    assert f"no socket at {tmp_path}/nope.sock;" in info.value.message


def test_tcp_sends_bearer_key_from_env() -> None:
    target = resolve_target("lambda.example:7070", None, {"LAMBDA_API_KEY": " s3cret\n"})
    assert target.address == "lambda.example:7070" and not target.is_unix
    assert target.metadata() == (("authorization", "Bearer s3cret"),)
    assert resolve_target("tcp://[::1]:7070", None, {}).address == "[::1]:7070"


def test_tcp_key_file_flag_then_env(tmp_path: Path) -> None:
    flag_file = tmp_path / "flag.key"
    flag_file.write_text("from-flag\n")
    env_file = tmp_path / "env.key"
    env_file.write_text("  from-env  \n")
    env = {"LAMBDA_API_KEY_FILE": str(env_file)}
    assert resolve_target("h:1", None, env).api_key == "from-env"
    assert resolve_target("h:1", str(flag_file), env).api_key == "from-flag"
    env["LAMBDA_API_KEY"] = "direct"
    assert resolve_target("h:1", str(flag_file), env).api_key == "direct"
    assert resolve_target("h:1", None, {}).api_key is None


@pytest.mark.parametrize("content", [None, "  \n"])
def test_bad_key_file_is_exit_78_naming_the_file(tmp_path: Path, content: str | None) -> None:
    key_file = tmp_path / "k"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(CliError) as info:
        resolve_target("h:1", str(key_file), {})
    assert info.value.code == ExitCode.CONFIG == 78
    assert str(key_file) in info.value.message


@pytest.mark.parametrize("host", ["localhost", "h:port", ":80", "unix://"])
def test_invalid_host_is_usage_error(host: str) -> None:
    with pytest.raises(CliError) as info:
        resolve_target(host, None, {})
    assert info.value.code == ExitCode.USAGE
