"""The pip sandbox: what pip's process sees and how it is stopped."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lambdad.build import pipcommand, pipdiagnosis, piprun, sandbox
from lambdad.build.limits import BuildLimits, OutputCap
from lambdad.build.pipcommand import WorkDirs
from lambdad.build.wheeltags import TargetPlatform
from lambdad.errors import BuildFailed

BOOKWORM = TargetPlatform(python=(3, 11), machine="x86_64", libc="glibc", libc_version=(2, 36))


def test_environment_keeps_pip_settings_and_drops_the_rest(tmp_path: Path) -> None:
    work = WorkDirs(tmp_path)
    parent = {
        "PATH": "/usr/bin", "HOME": "/root", "PIP_FIND_LINKS": "/opt/wheels",
        "PIP_INDEX_URL": "https://mirror/simple", "https_proxy": "http://proxy:3128",
        "XDG_CONFIG_DIRS": "/etc/xdg", "SSL_CERT_FILE": "/etc/ssl/x.pem",
        "LAMBDAD_API_KEY_FILE": "/etc/lambdad/key", "AWS_SECRET_ACCESS_KEY": "s",
        "DOCKER_HOST": "unix:///var/run/docker.sock", "PYTHONPATH": "/evil",
        "PIP_CACHE_DIR": "/root/.cache/pip", "PIP_TARGET": "/", "XDG_CONFIG_HOME": "/root/x",
        "CREDENTIALS_DIRECTORY": "/run/credentials/lambdad.service",
    }
    env = pipcommand.pip_environment(parent, work)
    assert env["PIP_FIND_LINKS"] == "/opt/wheels"
    assert env["PIP_INDEX_URL"] == "https://mirror/simple"
    assert env["https_proxy"] == "http://proxy:3128"
    assert env["XDG_CONFIG_DIRS"] == "/etc/xdg" and env["SSL_CERT_FILE"] == "/etc/ssl/x.pem"
    for gone in ("LAMBDAD_API_KEY_FILE", "AWS_SECRET_ACCESS_KEY", "DOCKER_HOST", "PYTHONPATH",
                 "PIP_TARGET", "CREDENTIALS_DIRECTORY"):
        assert gone not in env
    assert env["HOME"] == str(work.home) and env["TMPDIR"] == str(work.tmp)
    assert env["PIP_CACHE_DIR"] == str(work.cache)
    assert env["XDG_CONFIG_HOME"] == str(work.home / ".config")
    assert "PIP_CONFIG_FILE" not in env


def test_a_named_pip_config_file_is_copied_in_and_devnull_kept(tmp_path: Path) -> None:
    work = WorkDirs(tmp_path)
    env = pipcommand.pip_environment({"PIP_CONFIG_FILE": "/etc/pip-ops.conf"}, work)
    assert env["PIP_CONFIG_FILE"] == str(work.home / "pip-config-file.conf")
    assert ("/etc/pip-ops.conf" in str(pipcommand.user_config_files(
        {"PIP_CONFIG_FILE": "/etc/pip-ops.conf", "HOME": "/h"})))
    assert pipcommand.pip_environment({"PIP_CONFIG_FILE": os.devnull}, work)[
        "PIP_CONFIG_FILE"] == os.devnull


def test_user_config_files_follow_xdg_and_home() -> None:
    found = pipcommand.user_config_files({"HOME": "/h", "XDG_CONFIG_HOME": "/x"})
    assert found == [(Path("/x/pip/pip.conf"), ".config/pip/pip.conf"),
                     (Path("/h/.pip/pip.conf"), ".pip/pip.conf")]


def test_command_is_wheels_only_and_requirements_come_after_the_end_of_options() -> None:
    command = pipcommand.pip_command(["six==1.16.0", "attrs"], Path("/w/target"), BuildLimits(),
                                  target=BOOKWORM, wheelhouse=Path("/wheels"),
                                  python="/usr/bin/python3", pip_path="/site")
    assert command[:3] == ["/usr/bin/python3", "-I", "-c"]
    assert command[-3:] == ["--", "six==1.16.0", "attrs"]
    assert "--only-binary=:all:" in command
    platforms = [command[i + 1] for i, word in enumerate(command) if word == "--platform"]
    assert platforms == BOOKWORM.platform_tags()
    assert "manylinux2014_x86_64" in platforms and platforms[-1] == "any"
    assert command[command.index("--find-links") + 1] == "/wheels"
    assert "-r" not in command and "--requirement" not in command
    limits = BuildLimits()
    assert command[4:8] == [str(limits.memory_bytes), str(int(limits.timeout_s)),
                            str(limits.file_bytes), "/site"]


def test_output_is_capped_but_the_tail_kept() -> None:
    shown: list[str] = []
    cap = OutputCap(shown.append, lines=3, chars=10, tail=2)
    for i in range(10):
        cap.line(f"line {i}\n")
    cap.line("x" * 50)
    assert shown == ["line 0", "line 1", "line 2", "(further output is not shown)"]
    assert cap.dropped == 8
    assert list(cap.tail) == ["line 9", "x" * 10 + " …"]


def _work(tmp_path: Path) -> WorkDirs:
    work = WorkDirs(tmp_path / "w")
    for folder in (work.root, *work.all()):
        folder.mkdir()
    return work


def _limits() -> BuildLimits:
    return BuildLimits(user=os.geteuid())  # no uid change: these run any command


def test_run_stops_at_the_deadline_with_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(300)\n"
    )
    started = time.monotonic()
    result = piprun.run_pip([sys.executable, "-c", script], _work(tmp_path), _limits(),
                             time.monotonic() + 2, OutputCap(lambda _: None, 10, 100))
    assert result.timed_out and time.monotonic() - started < 30
    assert result.tail == ["started"]
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        status = Path(f"/proc/{grandchild}/status").read_text(errors="replace")
        if "State:\tZ" in status:
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{grandchild}").exists() or \
        "State:\tZ" in Path(f"/proc/{grandchild}/status").read_text()
    assert "did not finish within the build timeout" in pipdiagnosis.explain_failure(
        result, BuildLimits(), BOOKWORM)


def test_run_stops_when_a_watched_file_system_falls_below_the_floor(tmp_path: Path) -> None:
    # A floor above what is free now: as if the process had just filled the disk.
    info = os.statvfs(tmp_path)
    free = info.f_bavail * info.f_frsize
    limits = BuildLimits(user=os.geteuid(), min_free_disk_bytes=free + 1024 * 1024 * 1024)
    script = "print('started', flush=True)\nimport time\ntime.sleep(300)\n"
    started = time.monotonic()
    result = piprun.run_pip([sys.executable, "-c", script], _work(tmp_path), limits,
                             time.monotonic() + 60, OutputCap(lambda _: None, 10, 100),
                             watch=[tmp_path])
    assert time.monotonic() - started < 30 and not result.timed_out
    assert f"{tmp_path} has " in result.disk_short
    assert "builds must leave (build_min_free_disk)" in result.disk_short
    assert pipdiagnosis.explain_failure(result, limits, BOOKWORM).startswith(
        f"requirements.txt: resolving stopped: {tmp_path} has ")
    # Floor 0 disables the watch; no folder to watch, no watch.
    for i, (quiet, watch) in enumerate([
            (BuildLimits(user=os.geteuid(), min_free_disk_bytes=0), [tmp_path]), (limits, [])]):
        (tmp_path / str(i)).mkdir()
        done = piprun.run_pip([sys.executable, "-c", "print('ok')"], _work(tmp_path / str(i)),
                               quiet, time.monotonic() + 30,
                               OutputCap(lambda _: None, 10, 100), watch=watch)
        assert (done.code, done.disk_short) == (0, "")


def test_run_gets_a_clean_environment_an_empty_cwd_and_no_stdin(tmp_path: Path) -> None:
    work = _work(tmp_path)
    os.environ["LAMBDAD_TEST_SECRET"] = "hunter2"
    try:
        script = ("import os, sys\n"
                  "print(sorted(os.environ.get(k, '') for k in ('LAMBDAD_TEST_SECRET',)))\n"
                  "print(os.getcwd(), os.listdir('.'), repr(sys.stdin.read()))\n")
        result = piprun.run_pip([sys.executable, "-c", script], work, _limits(),
                                 time.monotonic() + 30, OutputCap(lambda _: None, 10, 500))
    finally:
        del os.environ["LAMBDAD_TEST_SECRET"]
    assert result.code == 0 and not result.timed_out
    assert result.tail == ["['']", f"{work.cwd} [] ''"]


def test_pip_runs_under_its_rlimits(tmp_path: Path) -> None:
    # The child preamble is what sets the limits: run it with a tiny address space and
    # something other than pip behind it.
    limits = BuildLimits(memory_bytes=200 * 1024 * 1024, file_bytes=4096,
                         user=os.geteuid())
    fake = tmp_path / "fakepip"
    (fake / "pip").mkdir(parents=True)
    (fake / "pip" / "__init__.py").write_text("")
    # The names the preamble wraps (see test_pip_prepares_only_wheels_found_on_the_index).
    (fake / "pip" / "_internal" / "operations").mkdir(parents=True)
    (fake / "pip" / "_internal" / "__init__.py").write_text("")
    (fake / "pip" / "_internal" / "exceptions.py").write_text(
        "class InstallationError(Exception):\n    pass\n")
    (fake / "pip" / "_internal" / "operations" / "__init__.py").write_text("")
    (fake / "pip" / "_internal" / "operations" / "prepare.py").write_text(
        "class RequirementPreparer:\n    def prepare_linked_requirement(self, req):\n"
        "        pass\n")
    (fake / "pip" / "__main__.py").write_text(
        "import resource, sys\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[0], "
        "resource.getrlimit(resource.RLIMIT_FSIZE)[0], resource.getrlimit(resource.RLIMIT_CPU)[0],"
        " resource.getrlimit(resource.RLIMIT_CORE)[0], flush=True)\n"
        "try:\n    bytearray(400 * 1024 * 1024)\nexcept MemoryError:\n    print('MemoryError')\n"
        "try:\n    open('big', 'wb').write(b'x' * 10000)\nexcept OSError as e:\n"
        "    print('fsize', e.errno)\n")
    command = pipcommand.pip_command([], tmp_path / "t", limits, target=BOOKWORM,
                                  wheelhouse=None, pip_path=str(fake), timeout_s=7)
    result = piprun.run_pip(command, _work(tmp_path), limits, time.monotonic() + 30,
                             OutputCap(lambda _: None, 10, 500))
    assert result.tail[0] == f"{200 * 1024 * 1024} 4096 7 0"
    assert "MemoryError" in result.tail
    assert "fsize 27" in result.tail  # EFBIG: SIGXFSZ is ignored by Python
    assert "ran out of memory" in pipdiagnosis.explain_failure(
        pipdiagnosis.PipResult(1, ["MemoryError"], False), limits, BOOKWORM)


def test_the_work_folder_is_the_build_uids_and_outside_the_state_folder_as_root(
    tmp_path: Path,
) -> None:
    limits = BuildLimits(user=65534)
    work = sandbox.make_workdirs(tmp_path, limits)
    try:
        if os.geteuid() != 0:  # pip runs as lambdad's own user, in the build folder
            assert work.root == tmp_path / "pip"
            return
        assert not str(work.root).startswith(str(tmp_path))
        for folder in (work.root, *work.all()):
            assert folder.stat().st_uid == 65534 and folder.stat().st_mode & 0o777 == 0o700
        sandbox.reclaim(work)
        assert work.root.stat().st_uid == 0 and work.root.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(work.root)


def test_a_start_removes_only_its_own_spools_leftover_work_folders(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "a" / "spool", tmp_path / "b" / "spool"
    assert sandbox.workdir_prefix(mine) != sandbox.workdir_prefix(theirs)
    assert sandbox.workdir_prefix(mine).startswith("lambdad-pip-")
    left = [Path(tempfile.mkdtemp(prefix=sandbox.workdir_prefix(spool)))
            for spool in (mine, mine, theirs)]
    (left[0] / "target").mkdir()
    try:
        assert sandbox.remove_leftover_workdirs(mine) == 2
        assert [p.exists() for p in left] == [False, False, True]
    finally:
        for path in left:
            shutil.rmtree(path, ignore_errors=True)


def test_only_plain_files_and_folders_leave_pip(tmp_path: Path) -> None:
    tree = tmp_path / "target"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("")
    sandbox.check_plain_tree(tree)  # what pip makes of wheels
    outside = tmp_path / "secret"
    outside.write_text("key")
    for name, make in (("link", lambda p: p.symlink_to(outside)),
                       ("hard", lambda p: os.link(outside, p)),
                       ("fifo", os.mkfifo)):
        made = tree / "pkg" / name
        make(made)
        with pytest.raises(BuildFailed, match=f"pkg/{name}"):
            sandbox.check_plain_tree(tree)
        made.unlink()
    (tree / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(BuildFailed, match="dirlink"):
        sandbox.check_plain_tree(tree)
