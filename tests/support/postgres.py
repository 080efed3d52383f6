"""A private PostgreSQL server for the tests, on a Unix socket only (no TCP: the tests'
network rule), from Debian's binaries (`make postgres` installs them).

One server per test session (the `postgres` fixture in tests/conftest.py): initdb under
/tmp as the postgres user when run as root, started with fsync off. Each test gets a fresh
database copied from a migrated template (`create_database`), which takes milliseconds,
so the store's tests run on both engines without migrating each time. A missing
PostgreSQL fails the fixture, saying to run `make postgres`: it is never a skip.

Two roles: `lambda` (trusted over the socket: the harness and most tests) and `lambda_pw`
(password only, for the tests that prove a password in the URL is never shown).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

PASSWORD_ROLE = "lambda_pw"
PASSWORD = "Pw-" + uuid.uuid4().hex  # unique text, easy to search for in any output
TEMPLATE = "lt_template"


class PostgresMissing(RuntimeError):
    pass


def server_bin() -> Path:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise PostgresMissing(
            "PostgreSQL's server binaries are missing (/usr/lib/postgresql/*/bin/initdb): "
            "run make postgres")
    return Path(found[-1]).parent


class Postgres:
    """A private server: `start()`, `url(db)`, `create_database()`, `restart()`, `stop()`."""

    def __init__(self) -> None:
        self.bin = server_bin()
        self.root = Path(tempfile.mkdtemp(prefix="lt-pg-", dir="/tmp"))
        self.socket_dir = self.root  # short: a socket path holds 107 bytes
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        self._templated = False

    # running the server's tools

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_root:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True,
                              timeout=60)

    def start(self) -> None:
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o755)
        result = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                           "-U", "lambda", "-E", "UTF8", "--no-sync", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr[-2000:]}")
        # The password role first: its line must win over the catch-all trust line.
        (self.data / "pg_hba.conf").write_text(
            f"local all {PASSWORD_ROLE} scram-sha-256\nlocal all all trust\n")
        self._ctl_start()
        # A superuser like `lambda`, so it may use any test database as it is.
        self.psql("postgres",
                  f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")

    def _ctl_start(self) -> None:
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                           str(self.log), "-w", "-t", "30", "-o", options, "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.server_log()}")

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Stops the server (ending every connection) and starts it again."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self._ctl_start()

    def halt(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._ctl_start()

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text()[-4000:]
        return ""

    def psql(self, db: str, sql: str) -> str:
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-U", "lambda", "-d", db, "-c", sql],
            check=False, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr}")
        return result.stdout.strip()

    # databases

    def url(self, db: str, *, password: bool = False) -> str:
        host = quote(str(self.socket_dir), safe="")
        if password:
            return f"postgresql://{PASSWORD_ROLE}:{PASSWORD}@/{db}?host={host}"
        return f"postgresql://lambda@/{db}?host={host}"

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database (its name): a copy of the migrated template, or empty."""
        name = "t_" + uuid.uuid4().hex[:16]
        if migrated:
            self._ensure_template()
            self.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        else:
            self.psql("postgres", f"CREATE DATABASE {name}")
        return name

    def _ensure_template(self) -> None:
        if self._templated:
            return
        from lambdad.store.pg_migrations import pg_migrate

        self.psql("postgres", f"CREATE DATABASE {TEMPLATE}")
        pg_migrate(self.url(TEMPLATE))
        self._templated = True

    def drop_database(self, name: str) -> None:
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def kill_backends(self, db: str) -> int:
        """Ends every connection to `db` (as a crashed network would); how many."""
        return int(self.psql("postgres", "SELECT count(pg_terminate_backend(pid)) FROM "
                                         f"pg_stat_activity WHERE datname = '{db}' "
                                         "AND pid <> pg_backend_pid()") or 0)
