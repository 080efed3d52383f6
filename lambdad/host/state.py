"""The state folder and the control socket's place in it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
from pathlib import Path

from lambdad.build import sandbox
from lambdad.config import MAX_SOCKET_PATH, Config
from lambdad.host import StartupError


def prepare_state_dir(config: Config) -> str:
    """Creates the state folders and returns this daemon's id (stable across restarts)."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.state_dir, 0o750)
    run_dir = config.socket.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o750)  # the socket's folder is its access control
    spool = config.state_dir / "spool"
    spool.mkdir(exist_ok=True)
    for leftover in spool.iterdir():  # uploads and build contexts of a killed daemon
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    sandbox.remove_leftover_workdirs(spool)  # and pip's work folders, when it ran as root
    instances = config.state_dir / "i"
    instances.mkdir(exist_ok=True)
    os.chmod(instances, 0o711)  # containers' users reach their own socket folder, list none
    longest = len(str(instances)) + len("/0123456789ab/invoke.sock")
    if longest > MAX_SOCKET_PATH or len(str(config.socket)) > MAX_SOCKET_PATH:
        raise StartupError(
            f"state folder {config.state_dir} is too deep for Unix socket paths "
            f"({MAX_SOCKET_PATH} bytes max); choose a shorter --state-dir"
        )
    id_file = config.state_dir / "daemon-id"
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(8) + "\n")
    return id_file.read_text().strip()


def claim_socket(path: Path) -> None:
    """Refuses to start beside a live daemon; removes a stale socket file.

    gRPC would silently bind over an existing socket file, so two daemons could
    share one state folder; a connect test tells a live socket from a stale one.
    """
    if not path.exists():
        return
    if not stat.S_ISSOCK(path.stat().st_mode):
        raise StartupError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise StartupError(f"another lambdad is already running on {path}")


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
