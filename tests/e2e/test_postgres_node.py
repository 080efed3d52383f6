"""One lambdad on PostgreSQL (`--database postgresql://...`): everything it stores lives
in the database (no lambda.db), works as on SQLite and survives a restart; the password of
the URL appears in no log line, no CLI output, no error and no --check-config output.

The password role of the private server (tests/support/postgres.py) really needs its
password, so a daemon that did not pass it on could not work at all."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Lambdad, daemon_env, wait_for
from tests.support.postgres import PASSWORD, Postgres

pytestmark = pytest.mark.slow

ECHO = "def handler(event, context):\n    print('got', event)\n    return event\n"


def _deploy_echo(daemon: Lambdad, tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(ECHO)
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\n[scaling]\nconcurrency = 4\nmax_instances = 1\n')
    assert daemon.deploy(folder).code == 0


def _on_postgres(url: str) -> Lambdad:
    """A daemon on PostgreSQL (cluster mode: it needs a cluster key)."""
    daemon = Lambdad(extra_args=["--database", url])
    key = daemon.state_dir / "cluster-key"
    key.write_text(secrets.token_urlsafe(32) + "\n")
    daemon.extra_args += ["--cluster-key-file", str(key)]
    return daemon


def _tcp(daemon: Lambdad, key: str) -> dict[str, str]:
    return daemon.env(LAMBDA_HOST=f"127.0.0.1:{daemon.grpc_port}", LAMBDA_API_KEY=key)


def _succeeded(daemon: Lambdad, name: str, source: str) -> list[dict[str, object]]:
    listed = daemon.cli("invocations", name, "--status", "succeeded", "-o", "json")
    assert listed.code == 0, listed.stderr
    return [i for i in listed.json() if i["source"] == source]


def _check_config(daemon: Lambdad, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambdad", "--config", "none", "--state-dir",
         str(daemon.state_dir), "--database", url, "--check-config"],
        capture_output=True, text=True, cwd=ROOT, env=daemon_env(), timeout=60)


def test_one_lambdad_on_postgresql_serves_and_keeps_everything_across_a_restart(
        postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.url(postgres.create_database(migrated=False), password=True)
    daemon = _on_postgres(url)
    outputs: list[str] = []
    try:
        daemon.start()  # migrates the empty database
        assert "database=postgresql://lambda_pw:***@" in daemon.log()
        assert daemon.deploy("greet", "--name", "greet").code == 0
        assert daemon.http("greet", "/?name=pg").json() == {"message": "Hello, pg!"}
        _deploy_echo(daemon, tmp_path, "ticker")
        queued = daemon.cli("invoke", "ticker", "--async", "--data", '{"tag": "async"}')
        assert queued.code == 0, queued.stderr
        event_id = queued.stdout.strip()
        assert wait_for(lambda: [i for i in _succeeded(daemon, "ticker", "api")
                                 if i["id"] == event_id])
        scheduled = daemon.cli("schedule", "ticker", "--cron", "*/2 * * * * *",
                               "--overlap", "allow")
        assert scheduled.code == 0, scheduled.stderr
        assert wait_for(lambda: _succeeded(daemon, "ticker", "schedule"))
        key = daemon.cli("keys", "create", "--name", "reader", "--role", "invoker")
        assert key.code == 0, key.stderr
        secret = key.stdout.strip()
        assert daemon.cli("list", env=_tcp(daemon, secret)).code == 0
        # It is all in PostgreSQL: no SQLite file, and the rows are there.
        assert not (daemon.state_dir / "lambda.db").exists()
        db = url.rsplit("/", 1)[1].split("?")[0]
        assert postgres.psql(db, "SELECT string_agg(name, ',' ORDER BY name) "
                                 "FROM functions") == "greet,ticker"
        assert postgres.psql(db, "SELECT count(*) FROM api_keys") == "1"

        daemon.stop()
        daemon.start()
        listed = daemon.cli("list", "-o", "json", env=_tcp(daemon, secret))
        assert listed.code == 0, listed.stderr
        assert [(f["name"], f["version"]) for f in listed.json()] == [
            ("greet", 1), ("ticker", 1)]
        assert daemon.http("greet", "/?name=again").json() == {"message": "Hello, again!"}
        kept = daemon.cli("invocation", event_id, "-o", "json")
        assert kept.code == 0 and kept.json()["result"] == {"tag": "async"}
        fired = len(_succeeded(daemon, "ticker", "schedule"))
        assert wait_for(lambda: len(_succeeded(daemon, "ticker", "schedule")) > fired)
        schedules = daemon.cli("schedules", "ticker", "-o", "json")
        outputs += [listed.stdout, listed.stderr, kept.stdout, schedules.stdout,
                    queued.stdout, queued.stderr, scheduled.stdout, scheduled.stderr]

        # Attack: the password is in argv, but nowhere lambdad writes.
        checked = _check_config(daemon, url)
        assert checked.returncode == 0, checked.stderr
        assert 'database = "postgresql://lambda_pw:***@' in checked.stdout
        outputs += [checked.stdout, checked.stderr]
        assert PASSWORD not in daemon.log()
        for text in outputs:
            assert PASSWORD not in text
    finally:
        daemon.close()


def test_a_wrong_password_fails_without_showing_either_password(
        postgres: Postgres, tmp_path: Path) -> None:
    """Attack: a daemon and --check-config given a wrong password say the database
    refused them, naming it redacted, and print neither the wrong password nor the URL."""
    wrong = "Wrong-" + PASSWORD[::-1]
    url = postgres.url(postgres.create_database(), password=True).replace(PASSWORD, wrong)
    daemon = _on_postgres(url)
    try:
        checked = _check_config(daemon, url)
        assert checked.returncode != 0
        assert "database: cannot use postgresql://lambda_pw:***@" in checked.stderr
        assert "password authentication failed" in checked.stderr
        with pytest.raises(RuntimeError):
            daemon.start(timeout=60)
        log = daemon.log()  # the store's DatabaseUnavailable, not a configuration error
        assert "is unavailable" in log and "lambda_pw:***@" in log
        assert "password authentication failed" in log
        for text in (log, checked.stdout, checked.stderr):
            assert wrong not in text and PASSWORD not in text
            assert json.dumps(url) not in text and url not in text
    finally:
        daemon.close()
