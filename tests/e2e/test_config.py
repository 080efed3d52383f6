"""lambdad read from a real TOML file, environment and flags; --check-config; exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad, daemon_env

pytestmark = pytest.mark.docker


def lambdad(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lambdad", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**daemon_env(), **(env or {})})


def test_check_config_prints_the_effective_settings_and_their_sources(tmp_path: Path) -> None:
    config = tmp_path / "lambdad.toml"
    config.write_text('domain = "file.test"\nmax_body_size = 2\nkeep_versions = 4\n')
    result = lambdad("--config", str(config), "--check-config", "--keep-versions", "7",
                     "--state-dir", str(tmp_path / "state"),
                     env={"LAMBDAD_MAX_BODY_SIZE": "3"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "lambdad: configuration OK"
    assert f'domain = "file.test"  # file {config}' in result.stdout
    assert 'max_body_size = "3"  # env LAMBDAD_MAX_BODY_SIZE' in result.stdout
    assert "keep_versions = 7  # flag" in result.stdout
    assert 'gateway_listen = "127.0.0.1:8080"  # default' in result.stdout
    assert not (tmp_path / "state").exists()  # checking touches nothing


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("gateway_listen = 'nowhere'\n", {},
         "gateway_listen: expected HOST:PORT, got 'nowhere'"),
        ("tls_cert = '/nonexistent/cert.pem'\n", {},
         "tls_cert: cannot read /nonexistent/cert.pem"),
        ("", {"LAMBDAD_DRAIN_GRACE": "soon"},
         "LAMBDAD_DRAIN_GRACE: expected a number of seconds, got 'soon'"),
        ("colour = 'blue'\n", {}, "unknown setting 'colour'"),
    ],
)
def test_bad_configuration_exits_78_before_touching_anything(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "lambdad.toml"
    config.write_text(text)
    state = tmp_path / "state"
    for extra in (["--check-config"], []):  # the check and a real start refuse alike
        result = lambdad("--config", str(config), "--state-dir", str(state), *extra, env=env)
        assert result.returncode == 78, result.stderr
        assert "lambdad: configuration error: " in result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert not state.exists()


def test_a_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    result = lambdad("--check-config", env={"LAMBDAD_CONFIG": str(tmp_path / "no.toml")})
    assert result.returncode == 78
    assert f"config file {tmp_path / 'no.toml'} does not exist" in result.stderr


@pytest.mark.slow
def test_daemon_serves_with_settings_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "lambdad.toml"
    config.write_text('domain = "file.test"\nmax_body_size = 0.5\npublic_port = 443\n')
    daemon = Lambdad(extra_args=["--config", str(config)])
    daemon.start_env = {"LAMBDAD_DOMAIN": "env.test"}  # the environment beats the file
    try:
        daemon.start()
        deployed = daemon.deploy("echo", "--name", "echo")
        assert "http://echo.env.test:443" in deployed.stdout + deployed.stderr
        ok = daemon.http("echo", "/", method="POST", body=b"x" * 1000,
                         host=f"echo.env.test:{daemon.gateway_port}")
        assert ok.status == 200, ok.body
        too_big = daemon.http("echo", "/", method="POST", body=b"x" * (600 * 1024),
                              host=f"echo.env.test:{daemon.gateway_port}")
        assert too_big.status == 413
        # The file's domain lost to the environment: its hosts are not ours.
        other = daemon.http("echo", "/", host=f"echo.file.test:{daemon.gateway_port}")
        assert other.status in (400, 404, 421)
    finally:
        daemon.close()
