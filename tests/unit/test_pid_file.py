"""Attacks on lambdad's pid file by someone who can write in its folder (pid_file may be set
to a shared one, e.g. under /tmp), against the real functions on a real file system. lambdad
often runs as root: it must never write through a link there, nor block reading one."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from lambdad.host import StartupError
from lambdad.host.pidfile import clear_stale_pid_file, remove_pid_file, write_pid_file


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    pid_file = shared / "lambdad.pid"
    # The name the old code wrote through: ".<name>.<pid>", guessable from `ps`.
    (shared / f".{pid_file.name}.{os.getpid()}").symlink_to(victim)
    write_pid_file(pid_file)
    assert victim.read_text() == "root:secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not pid_file.is_symlink() and pid_file.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o644


def test_a_fifo_in_place_of_the_pid_file_does_not_block_the_stop(tmp_path: Path) -> None:
    pid_file = tmp_path / "lambdad.pid"
    os.mkfifo(pid_file)
    done = threading.Event()

    def remove() -> None:
        remove_pid_file(pid_file)
        done.set()

    threading.Thread(target=remove, daemon=True).start()
    finished = done.wait(5)
    if not finished:  # unblock the old code's open() so the thread can end
        fd = os.open(pid_file, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert finished, "remove_pid_file blocked on a FIFO"
    assert stat.S_ISFIFO(os.lstat(pid_file).st_mode)  # not ours: left alone


def test_only_a_pid_file_holding_this_pid_is_removed(tmp_path: Path) -> None:
    pid_file = tmp_path / "lambdad.pid"
    pid_file.write_text("1\n")
    remove_pid_file(pid_file)
    assert pid_file.exists()
    write_pid_file(pid_file)
    remove_pid_file(pid_file)
    assert not pid_file.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_a_stale_pid_file_or_a_link_in_its_place_is_removed_at_start(tmp_path: Path) -> None:
    pid_file = tmp_path / "lambdad.pid"
    pid_file.write_text("4242\n")  # a killed lambdad's
    clear_stale_pid_file(pid_file)
    assert not pid_file.exists()
    target = tmp_path / "kept"
    target.write_text("data")
    pid_file.symlink_to(target)
    clear_stale_pid_file(pid_file)
    assert not pid_file.is_symlink() and target.read_text() == "data"


@pytest.mark.parametrize("content", [b"SQLite format 3\x00", b"4242\nmore\n"])
def test_a_pid_file_setting_that_names_another_file_is_refused_and_the_file_kept(
    tmp_path: Path, content: bytes
) -> None:
    database = tmp_path / "lambda.db"
    database.write_bytes(content)
    with pytest.raises(StartupError, match="is not a pid file"):
        clear_stale_pid_file(database)
    assert database.read_bytes() == content
    with pytest.raises(StartupError, match="is not a pid file"):
        clear_stale_pid_file(tmp_path)  # a folder
