"""The real lambdactl against a real lambdad: `version`, contexts and the JSON conventions."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from lambdactl.parser import build_parser
from tests.support.daemon import CliResult, Lambdad

SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
USER_DATA = {"env", "payload", "result", "data"}  # their keys are the user's, not ours
OLD_UNITS = ("_seconds", "_mb", "_size", "_s")
LISTS = {"list", "versions", "stats", "invocations", "schedules", "keys list", "context list",
         "nodes"}
STREAMS = {"logs"}  # JSON Lines: one object per line, so `logs -f -o json` can stream


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


# -- JSON output -------------------------------------------------------------------------


def _check_keys(value: Any, where: str) -> None:
    """snake_case keys; `_at` RFC 3339 UTC, `_ms` numbers, `_bytes` integers, no old units."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_keys(item, f"{where}[{index}]")
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        at = f"{where}.{key}"
        assert SNAKE.fullmatch(key), f"{at}: not snake_case"
        assert not key.endswith(OLD_UNITS), f"{at}: use _ms for durations, _bytes for sizes"
        if key.endswith("_at"):
            assert item is None or RFC3339_UTC.fullmatch(item), f"{at}: {item!r}"
        elif isinstance(item, str):
            assert not RFC3339_UTC.fullmatch(item), f"{at}: a timestamp key must end in _at"
        if key.endswith("_ms"):
            assert isinstance(item, int | float) and not isinstance(item, bool), at
        if key.endswith("_bytes"):
            assert isinstance(item, int) and not isinstance(item, bool), at
        if key in ("name", "function"):
            assert isinstance(item, str) and item, at
        if key not in USER_DATA:
            _check_keys(item, at)


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every runnable command of the parser: `list`, `keys create`, `context use`, ..."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= _leaf_commands(child, f"{prefix}{name} ")
    return found or {prefix.strip()}


class JsonRun:
    """Runs commands with -o json and checks each output against the convention."""

    def __init__(self, daemon: Lambdad, env: dict[str, str]) -> None:
        self.daemon = daemon
        self.env = env
        self.ran: set[str] = set()

    def __call__(self, command: str, *args: str) -> Any:
        result: CliResult = self.daemon.cli(*command.split(), *args, "-o", "json",
                                            env=self.env)
        assert result.code == 0, f"{command}: {result.stderr}"
        self.ran.add(command)
        if command in STREAMS:
            values = [json.loads(line) for line in result.stdout.splitlines()]
            assert values and all(isinstance(v, dict) for v in values), result.stdout
            _check_keys(values, command)
            return values
        value = json.loads(result.stdout)  # one JSON value, nothing else on stdout
        if command in LISTS:
            assert isinstance(value, list) and all(isinstance(v, dict) for v in value), value
        else:
            assert isinstance(value, dict), f"{command}: {value!r}"
        _check_keys(value, command)
        return value


def test_every_command_follows_the_json_conventions(lambdad: Lambdad, tmp_path: Path) -> None:
    run = JsonRun(lambdad, lambdad.env(XDG_CONFIG_HOME=str(tmp_path / "config")))
    deployed = run("deploy", "functions/greet", "--name", "jsonfn")
    assert (deployed["name"], deployed["version"]) == ("jsonfn", 1)
    invoked = run("invoke", "jsonfn", "--data", '{"name": "J"}')
    assert (invoked["function"], invoked["version"]) == ("jsonfn", 1)
    assert invoked["payload"] == {"message": "Hello, J!"}
    queued = run("invoke", "jsonfn", "--async")
    assert (queued["function"], queued["status"]) == ("jsonfn", "queued")
    assert [f["name"] for f in run("list") if f["name"] == "jsonfn"] == ["jsonfn"]
    got = run("get", "jsonfn")
    assert got["config"]["timeout_ms"] == 10_000 and got["code_size_bytes"] > 0
    assert got["config"]["memory_bytes"] == 128 * 1024 * 1024
    configured = run("config", "jsonfn", "--timeout", "12")
    assert (configured["name"], configured["version"]) == ("jsonfn", 2)
    rolled = run("rollback", "jsonfn")
    assert (rolled["version"], rolled["previous_version"]) == (1, 2)
    versions = run("versions", "jsonfn")
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["active_periods"][0]["deactivated_at"] is not None
    assert all(line["function"] == "jsonfn" for line in run("logs", "jsonfn"))
    assert run("stats", "jsonfn")[0]["name"] == "jsonfn"
    assert any(i["id"] == queued["id"] for i in run("invocations", "jsonfn"))
    assert run("invocation", queued["id"][:8])["id"] == queued["id"]
    assert run("redrive", "--all-failed", "jsonfn")["redriven"] == 0
    schedule = run("schedule", "jsonfn", "--cron", "0 0 1 1 *")
    assert schedule["function"] == "jsonfn"
    assert [s["id"] for s in run("schedules", "jsonfn")] == [schedule["id"]]
    unscheduled = run("unschedule", schedule["id"])
    assert (unscheduled["id"], unscheduled["deleted"]) == (schedule["id"], True)
    created = run("keys create", "--name", "json-key")
    assert created["name"] == "json-key" and created["secret"].startswith("lk_")
    assert "json-key" in [k["name"] for k in run("keys list")]
    assert run("keys revoke", "json-key")["revoked_at"] is not None
    assert run("version")["daemon"]["api_version"] == "v1"
    assert [(n["state"], n["self"]) for n in run("nodes")] == [("up", True)]
    added = run("context add", "here", "--host", f"unix://{lambdad.socket_path}")
    assert (added["name"], added["current"]) == ("here", False)
    assert run("context use", "here")["current"] is True
    assert [c["name"] for c in run("context list")] == ["here"]
    assert run("context show")["name"] == "here"
    assert run("context remove", "here")["removed"] is True
    deleted = run("delete", "jsonfn", "-y")
    assert deleted["name"] == "jsonfn" and deleted["versions_removed"] == 2

    assert run.ran == _leaf_commands(build_parser()), "a command is not covered here"
