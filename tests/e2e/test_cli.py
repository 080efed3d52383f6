"""The real lambdactl against a real lambdad: contexts."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import Lambdad


def _no_host_env(daemon: Lambdad, config_home: Path, **extra: str) -> dict[str, str]:
    env = daemon.env(XDG_CONFIG_HOME=str(config_home), **extra)
    del env["LAMBDA_HOST"]
    return env


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
