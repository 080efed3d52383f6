"""Checks that look at the machine: what `lambdad --check-config` adds to parsing."""

from __future__ import annotations

import os
from pathlib import Path

from lambdad.config import INSTANCE_SOCKET_SUFFIX, MAX_SOCKET_PATH, MIB, Config, Listen


def check(config: Config, *, reach_database: bool = False) -> list[str]:
    """Problems that would stop lambdad or make it misbehave, each naming the setting.

    `reach_database` (--check-config): also connect to a PostgreSQL database. Not at a
    start: a database that is down for a moment is not a configuration error (exit 78
    would keep systemd from restarting the node); the store says so and lambdad exits 1."""
    problems: list[str] = []
    for key, path in (("api_key_file", config.api_key_file), ("tls_cert", config.tls_cert),
                      ("tls_key", config.tls_key)):
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{key}: cannot read {path}")
    if config.api_key_file is not None and os.access(config.api_key_file, os.R_OK):
        try:
            lines = config.api_key_file.read_text(errors="replace").splitlines()
        except OSError as exc:  # e.g. a folder
            problems.append(f"api_key_file: cannot read {config.api_key_file}: {exc.strerror}")
        else:
            if not any(line.strip() and not line.startswith("#") for line in lines):
                problems.append(f"api_key_file: {config.api_key_file} holds no key")
    from lambdad.gateway.budget import largest_body

    largest = largest_body(config.max_buffered_body_bytes)
    if config.max_body_bytes > largest:
        problems.append(
            f"max_buffered_bodies ({config.max_buffered_body_bytes / MIB:g} MiB) cannot hold "
            f"one body of max_body_size ({config.max_body_bytes / MIB:g} MiB) besides its "
            f"reserve for small bodies: make it at least "
            f"{config.max_body_bytes * 8 / 7 / MIB:.2f} MiB")
    if (config.tls_cert is None) != (config.tls_key is None):
        problems.append("tls_cert and tls_key go together: set both or neither")
    if config.tls_cert is not None and config.grpc_listen is None:
        problems.append("tls_cert is set but grpc_listen is 'none': nothing would use it")
    if config.wheelhouse is not None and not config.wheelhouse.is_dir():
        problems.append(f"wheelhouse: {config.wheelhouse} is not a folder")
    if len(str(config.state_dir)) + INSTANCE_SOCKET_SUFFIX > MAX_SOCKET_PATH:
        problems.append(f"state_dir: {config.state_dir} is too deep for Unix socket paths "
                        f"({MAX_SOCKET_PATH - INSTANCE_SOCKET_SUFFIX} characters at most)")
    if len(str(config.socket)) > MAX_SOCKET_PATH:
        problems.append(f"socket: {config.socket} is longer than {MAX_SOCKET_PATH} bytes")
    folders = [("state_dir", config.state_dir), ("socket", config.socket.parent)]
    if config.pid_file is not None:
        folders.append(("pid_file", config.pid_file.parent))
    for key, folder in folders:
        problem = _writable_folder(folder)
        if problem:
            problems.append(f"{key}: {problem}")
    problem = _database(config.database) if reach_database else None
    if problem:
        problems.append(f"database: {problem}")
    listens = [(k, v) for k, v in (("gateway_listen", config.gateway_listen),
                                   ("grpc_listen", config.grpc_listen),
                                   ("admin_listen", config.admin_listen)) if v is not None]
    for i, (key, listen) in enumerate(listens):
        for other_key, other in listens[:i]:
            if listen.port == other.port and listen.port != 0 and _overlap(listen, other):
                problems.append(f"{key} and {other_key} both use port {listen.port}")
    return problems


def _database(database: str) -> str | None:
    """A PostgreSQL database is reachable (3 s at most) and its schema not newer than this
    lambdad's; every message names it without its password."""
    from lambdad import dburl

    if not dburl.is_postgres(database):
        return None
    import psycopg

    from lambdad.store.migrations import SCHEMA_VERSION

    where = dburl.redacted(database)
    try:
        with psycopg.connect(database, connect_timeout=3,
                             application_name="lambdad:check-config") as conn:
            migrated = conn.execute(
                "SELECT to_regclass('lambda_schema') IS NOT NULL").fetchone() == (True,)
            row = (conn.execute("SELECT version FROM lambda_schema").fetchone() if migrated
                   else None)
    except psycopg.Error as exc:
        reason = dburl.scrub(str(exc).strip().replace("\n", " "), database)
        return f"cannot use {where}: {reason}"
    found = int(row[0]) if row is not None else 0
    if found > SCHEMA_VERSION:
        return (f"{where} has schema version {found}, newer than this lambdad "
                f"({SCHEMA_VERSION})")
    return None


def _overlap(a: Listen, b: Listen) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a.host == b.host or a.host in wildcard or b.host in wildcard


def _writable_folder(folder: Path) -> str | None:
    """A folder lambdad can use: writable if it exists, else creatable under its parent."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None
