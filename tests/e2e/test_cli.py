"""The real lambdactl against a real lambdad: `version` and contexts."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.daemon import Lambdad

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _create_key(daemon: Lambdad, name: str, role: str) -> str:
    created = daemon.cli("keys", "create", "--name", name, "--role", role)
    assert created.code == 0, created.stderr
    return created.stdout.strip()


def _no_host_env(daemon: Lambdad, config_home: Path, **extra: str) -> dict[str, str]:
    env = daemon.env(XDG_CONFIG_HOME=str(config_home), **extra)
    del env["LAMBDA_HOST"]
    return env


# -- version -----------------------------------------------------------------------------


def test_version_over_the_socket_and_tcp(lambdad: Lambdad) -> None:
    text = lambdad.cli("version")
    assert text.code == 0, text.stderr
    assert text.stdout.splitlines() == [
        "client 0.1.0", f"daemon 0.1.0 (api v1) at unix://{lambdad.socket_path}"]
    shown = lambdad.cli("version", "-o", "json").json()
    assert shown["client"]["version"] == "0.1.0"
    daemon = shown["daemon"]
    assert (daemon["version"], daemon["api_version"]) == ("0.1.0", "v1")
    assert re.fullmatch(r"3\.\d+\.\d+", daemon["python_version"])
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", daemon["docker_version"])
    assert RFC3339_UTC.fullmatch(daemon["started_at"])
    assert daemon["domain"] == "localhost"
    assert daemon["url_template"] == f"http://{{name}}.localhost:{lambdad.gateway_port}"
    # Any valid key may ask, the least role included; no key may not.
    invoker = _create_key(lambdad, "version-reader", "invoker")
    tcp = lambdad.env(LAMBDA_HOST=f"127.0.0.1:{lambdad.grpc_port}")
    remote = lambdad.cli("version", env={**tcp, "LAMBDA_API_KEY": invoker})
    assert remote.code == 0, remote.stderr
    assert remote.stdout.endswith(f"at 127.0.0.1:{lambdad.grpc_port}\n")
    denied = lambdad.cli("version", env=tcp)
    assert denied.code == 77 and denied.stdout == "client 0.1.0\n"


def test_version_without_a_daemon_still_prints_the_client(lambdad: Lambdad) -> None:
    env = lambdad.env(LAMBDA_HOST="unix:///tmp/lambdactl-no-such.sock")
    text = lambdad.cli("version", env=env)
    assert text.code == 69
    assert text.stdout == "client 0.1.0\n"
    assert text.stderr.startswith("error: lambdad is not running: no socket at ")
    as_json = lambdad.cli("version", "-o", "json", env=env)
    assert as_json.code == 69 and as_json.json()["daemon"] is None
    assert as_json.json()["client"]["version"] == "0.1.0"


# -- contexts ----------------------------------------------------------------------------


def test_context_reaches_a_tcp_daemon_with_its_key_file(lambdad: Lambdad, tmp_path: Path) -> None:
    config_home = tmp_path / "config"
    env = _no_host_env(lambdad, config_home)
    tcp = f"127.0.0.1:{lambdad.grpc_port}"
    added = lambdad.cli("context", "add", "vm", "--host", tcp, "--api-key-file",
                        str(lambdad.key_file), env=env)
    assert added.code == 0, added.stderr
    config_file = config_home / "lambdactl" / "config.toml"
    assert lambdad.api_key not in config_file.read_text()  # the path, never the key
    assert (config_file.stat().st_mode & 0o777) == 0o600
    assert lambdad.cli("context", "use", "vm", env=env).code == 0
    listed = lambdad.cli("list", "-o", "json", env=env)
    assert listed.code == 0, listed.stderr
    assert isinstance(listed.json(), list)
    assert lambdad.cli("version", env=env).stdout.endswith(f"at {tcp}\n")
    table = lambdad.cli("context", "list", env=env).stdout.splitlines()
    assert table[1].split()[:3] == ["*", "vm", tcp]

    # A key file with a wrong key: the daemon refuses it (77).
    wrong = tmp_path / "wrong.key"
    wrong.write_text("lk_000000000000_" + "x" * 40 + "\n")
    lambdad.cli("context", "add", "bad", "--host", tcp, "--api-key-file", str(wrong), env=env)
    refused = lambdad.cli("--context", "bad", "list", env=env)
    assert refused.code == 77 and "invalid or revoked API key" in refused.stderr
    assert lambdad.cli("list", env={**env, "LAMBDA_CONTEXT": "bad"}).code == 77
    # A key file that cannot be read, or an unknown context: configuration errors (78).
    wrong.unlink()
    unreadable = lambdad.cli("list", "--context", "bad", env=env)
    assert unreadable.code == 78 and str(wrong) in unreadable.stderr
    unknown = lambdad.cli("list", "--context", "nope", env=env)
    assert unknown.code == 78 and str(config_file) in unknown.stderr
    # LAMBDA_HOST still wins over the current context.
    assert lambdad.cli("list", env={**env, "LAMBDA_HOST": f"unix://{lambdad.socket_path}",
                                    "LAMBDA_CONTEXT": "bad"}).code == 0
