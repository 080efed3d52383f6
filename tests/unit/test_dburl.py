"""The `database` setting: what it accepts, the URL's only printable form, and the
placeholder rewrite that lets one SQL text run on both engines."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from lambdad.config import ConfigError
from lambdad.config.resolve import resolve
from lambdad.dburl import is_postgres, parse_setting, redacted, scrub
from lambdad.main import check_config
from lambdad.store.database import qmark_to_format

SECRET = "s3cr%t-P@ss"
URL = "postgresql://lambda:s3cr%25t-P%40ss@db.example:5432/lambda?sslmode=verify-full"


def test_sqlite_and_postgresql_urls_are_accepted_anything_else_is_not() -> None:
    assert parse_setting("sqlite") == "sqlite"
    assert parse_setting(URL) == URL
    assert is_postgres(URL) and is_postgres("postgres://h/d") and not is_postgres("sqlite")
    with pytest.raises(ValueError, match="expected 'sqlite'"):
        parse_setting("mysql://root:hunter2@h/d")
    with pytest.raises(ValueError) as caught:
        parse_setting("postgresql://u:hunter2@h:notaport/d")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", [
    URL,
    "postgresql://lambda:pw-in-userinfo@/lambda?host=/run/postgresql",
    "postgresql://lambda@/lambda?host=/run/postgresql&password=pw-in-query",
    "host=/run/postgresql dbname=lambda password=pw-in-keywords",
])
def test_redacted_hides_the_password_wherever_the_url_puts_it(url: str) -> None:
    shown = redacted(url)
    for secret in (SECRET, "s3cr%25t-P%40ss", "pw-in-userinfo", "pw-in-query",
                   "pw-in-keywords"):
        assert secret not in shown
    assert "***" in shown
    assert "lambda" in shown  # the user and the database still show where it points


def test_scrub_removes_the_password_from_a_drivers_message() -> None:
    message = f'connection to "db.example" failed for {URL} (password {SECRET})'
    cleaned = scrub(message, URL)
    assert SECRET not in cleaned and "s3cr%25t-P%40ss" not in cleaned
    assert "db.example" in cleaned


def test_placeholders_are_rewritten_outside_quoted_text_only() -> None:
    assert qmark_to_format("SELECT a FROM t WHERE b = ? AND c = '?' AND d LIKE '50%'") == (
        "SELECT a FROM t WHERE b = %s AND c = '?' AND d LIKE '50%%'")
    assert qmark_to_format('SELECT "we?ird" FROM t WHERE x = ?') == (
        'SELECT "we?ird" FROM t WHERE x = %s')


def test_check_config_never_prints_the_password(tmp_path: Path) -> None:
    """Attack: the password given with --database must not reach --check-config's output,
    whether the database answers or not (here: no server on that socket)."""
    url = f"postgresql://lambda:{SECRET}@/lambda?host={tmp_path}"
    env = {"HOME": str(tmp_path)}
    resolved, _ = resolve(["--database", url, "--state-dir", str(tmp_path / "s")],
                          {**env, "PATH": os.environ.get("PATH", "")}, lambda _: None)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(resolved, out, err) != 0  # nothing listens there
    printed = out.getvalue() + err.getvalue()
    assert SECRET not in printed
    assert "database = \"postgresql://lambda:***@/lambda" in out.getvalue()
    assert "database: cannot use postgresql://lambda:***@" in err.getvalue()


def test_a_bad_url_in_the_environment_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve([], {"HOME": "/h", "LAMBDAD_DATABASE": "mysql://u:hunter2@h/d"},
                lambda _: None)
    assert "hunter2" not in str(caught.value)
