"""The instance folder's checks: pure verdicts in memory, then the fd-based I/O on a real
folder (no Docker): links, FIFOs and swaps never lead lambdad anywhere else."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdad.runtime.folder import (
    CONTAINER_UID,
    LOCKED_MODE,
    MAX_START_BYTES,
    MAX_START_ENTRIES,
    SOCKET_NAME,
    Entry,
    InstanceFolder,
    Refused,
    Usage,
    locked_problem,
    remove_tree,
    scan,
    socket_problem,
    start_problem,
    stored_bytes,
)

SOCK = stat.S_IFSOCK | 0o666

# Pure verdicts


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFLNK | 0o777, "a symbolic link"),
        (stat.S_IFREG | 0o644, "a regular file"),
        (stat.S_IFDIR | 0o755, "a directory"),
        (stat.S_IFIFO | 0o644, "a FIFO"),
        (stat.S_IFCHR | 0o666, "a character device"),
        (stat.S_IFBLK | 0o660, "a block device"),
    ],
)
def test_only_a_socket_is_connected_to(mode: int, kind: str) -> None:
    assert socket_problem(mode, CONTAINER_UID, 1) == f"invoke.sock is {kind}, not a socket"


def test_the_functions_own_socket_with_one_link_is_accepted() -> None:
    assert socket_problem(SOCK, CONTAINER_UID, 1) is None


def test_a_socket_of_another_user_is_refused() -> None:
    # /var/run/docker.sock is root's: a hard link to it would pass every other check.
    assert socket_problem(SOCK, 0, 1) == (
        "invoke.sock belongs to uid 0, not to the function's uid 10001")


def test_a_hard_linked_socket_is_refused() -> None:
    assert socket_problem(SOCK, CONTAINER_UID, 2) == "invoke.sock has 2 hard links"


def test_a_locked_folder_must_hold_exactly_its_socket() -> None:
    good = Entry(SOCKET_NAME, SOCK, CONTAINER_UID, 1)
    assert locked_problem([good]) is None
    assert locked_problem([]) == "the socket folder has no invoke.sock"
    assert locked_problem([good, Entry("x", stat.S_IFDIR | 0o700, CONTAINER_UID, 2)]) == (
        "the socket folder holds 'x' besides invoke.sock")
    many = [good, *(Entry(f"f{i}", stat.S_IFREG, CONTAINER_UID, 1) for i in range(7))]
    assert locked_problem(many) == (
        "the socket folder holds 'f0', 'f1', 'f2', 'f3', 'f4' and 2 more besides invoke.sock")
    link = Entry(SOCKET_NAME, stat.S_IFLNK | 0o777, CONTAINER_UID, 1)
    assert locked_problem([link]) == "invoke.sock is a symbolic link, not a socket"


def test_what_a_starting_folder_may_hold_is_bounded() -> None:
    assert start_problem(Usage(1, 0)) is None
    assert start_problem(Usage(MAX_START_ENTRIES, MAX_START_BYTES)) is None
    assert start_problem(Usage(MAX_START_ENTRIES + 1, 0)) == (
        "the socket folder holds more than 32 entries before its socket appeared")
    assert start_problem(Usage(2, MAX_START_BYTES + 1)) == (
        "the socket folder holds 1048577 bytes before its socket appeared (at most 1048576)")
    assert start_problem(Usage(2, 0, unreadable="hidden")) == (
        "the socket folder holds a folder lambdad cannot read ('hidden')")


def test_a_sparse_file_counts_at_its_size() -> None:
    assert stored_bytes(1 << 40, 8) == 1 << 40
    assert stored_bytes(10, 8) == 4096


# The same on a real folder


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def folder(parent: Path) -> Iterator[InstanceFolder]:
    # Owned by this test's user: the checks compare with the uid they are given.
    made = InstanceFolder.create(parent, "0123456789ab", owner=os.getuid())
    yield made
    made.close()


def _listen(path: Path | str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(0.2)
    return server


def _accepted(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except TimeoutError:
        return False


def test_a_new_folder_is_open_to_the_container_and_locks(folder: InstanceFolder) -> None:
    assert stat.S_IMODE(os.stat(folder.path).st_mode) == 0o777
    server = _listen(folder.path / SOCKET_NAME)
    folder.lock()
    assert stat.S_IMODE(os.stat(folder.path).st_mode) == LOCKED_MODE
    sock = asyncio.run(folder.connect())
    assert _accepted(server)
    sock.close()
    server.close()


def test_the_kernel_connects_to_the_checked_inode_after_a_swap(
        folder: InstanceFolder, tmp_path: Path) -> None:
    """What `connect` relies on: /proc/self/fd/N of an O_PATH fd names that inode, so a
    rename and a symlink put in its place after the check lead nowhere else."""
    real = _listen(folder.path / SOCKET_NAME)
    decoy = _listen(tmp_path / "decoy.sock")
    fd = folder.open_socket()
    os.rename(folder.path / SOCKET_NAME, folder.path / "moved.sock")
    os.symlink(tmp_path / "decoy.sock", folder.path / SOCKET_NAME)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(f"/proc/self/fd/{fd}")
    os.close(fd)
    assert _accepted(real) and not _accepted(decoy)
    client.close()
    real.close()
    decoy.close()


def _decoy_behind(folder: InstanceFolder, tmp_path: Path, how: str) -> socket.socket:
    """A listening socket outside the folder, and `invoke.sock` made into `how`."""
    decoy = _listen(tmp_path / "decoy.sock")
    target = folder.path / SOCKET_NAME
    if how == "symlink":
        os.symlink(tmp_path / "decoy.sock", target)
    elif how == "hardlink":
        os.link(tmp_path / "decoy.sock", target)
    elif how == "fifo":
        os.mkfifo(target)
    elif how == "directory":
        target.mkdir()
    elif how == "file":
        target.write_bytes(b"x")
    return decoy


@pytest.mark.parametrize("how", ["symlink", "hardlink", "fifo", "directory", "file"])
def test_anything_but_the_functions_socket_is_refused(
        folder: InstanceFolder, tmp_path: Path, how: str) -> None:
    decoy = _decoy_behind(folder, tmp_path, how)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(Refused):
            asyncio.run(folder.connect())
        done.set()

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(5)
    assert done.is_set(), "connect blocked"  # a FIFO is never opened for reading
    assert not _accepted(decoy)
    with pytest.raises(Refused):
        folder.lock()
    decoy.close()


def test_a_socket_of_another_owner_is_refused(parent: Path) -> None:
    other = InstanceFolder.create(parent, "ba9876543210", owner=os.getuid() + 1)
    server = _listen(other.path / SOCKET_NAME)
    with pytest.raises(Refused, match=f"belongs to uid {os.getuid()}"):
        asyncio.run(other.connect())
    assert not _accepted(server)
    other.close()
    server.close()


def test_a_stray_file_beside_the_socket_is_refused_at_the_lock(folder: InstanceFolder) -> None:
    server = _listen(folder.path / SOCKET_NAME)
    (folder.path / "pid").write_text("1")
    with pytest.raises(Refused, match=r"holds 'pid' besides invoke\.sock"):
        folder.lock()
    server.close()


def test_usage_counts_without_following_links(folder: InstanceFolder, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (2 * MAX_START_BYTES))
    os.symlink(big, folder.path / "link")  # the link's own few bytes, not its target's
    (folder.path / "sub").mkdir()
    (folder.path / "sub" / "data").write_bytes(b"y" * 10_000)
    usage = folder.usage()
    assert usage.entries == 3 and not usage.unreadable
    assert 10_000 <= usage.bytes < MAX_START_BYTES
    assert start_problem(usage) is None
    (folder.path / "sub" / "more").write_bytes(b"z" * MAX_START_BYTES)
    assert start_problem(folder.usage()) is not None


def test_usage_stops_counting_past_the_cap(folder: InstanceFolder) -> None:
    for n in range(100):
        (folder.path / f"f{n}").touch()
    assert scan(folder.fd, 10).entries == 11


def test_remove_tree_never_follows_links(parent: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    made = InstanceFolder.create(parent, "a1b2c3d4e5f6", owner=os.getuid())
    root = made.path
    made.close()
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f").write_text("x")
    os.symlink(outside, root / "d" / "to-outside")
    os.symlink(outside / "keep", root / "file-link")
    os.mkfifo(root / "d" / "fifo")
    _listen(root / SOCKET_NAME).close()
    assert remove_tree(parent, "a1b2c3d4e5f6") is True
    assert not root.exists()
    assert (outside / "keep").read_text() == "mine"
    assert remove_tree(parent, "a1b2c3d4e5f6") is True  # gone already: fine


def test_remove_tree_reports_what_it_cannot_remove(parent: Path) -> None:
    made = InstanceFolder.create(parent, "00000000beef", owner=os.getuid())
    made.close()
    deep = made.path
    for n in range(70):  # deeper than remove_tree goes: left to the cleanup container
        deep = deep / f"d{n}"
    deep.mkdir(parents=True)
    assert remove_tree(parent, "00000000beef") is False
    assert made.path.exists()
