"""`make install` and `make uninstall` for real, and the installed unit under systemd-analyze."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def make(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


def test_install_runs_verifies_and_uninstalls(tmp_path: Path) -> None:
    prefix, etc = tmp_path / "usr", tmp_path / "etc"
    make("install", f"PREFIX={prefix}", f"SYSCONFDIR={etc}")

    for command in ("lambdad", "lambdactl"):
        result = subprocess.run([prefix / "bin" / command, "--version"], capture_output=True,
                                text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0 and "0.1.0" in result.stdout, result.stderr
    check = subprocess.run(
        [prefix / "bin" / "lambdad", "--check-config", "--config", etc / "lambdad/lambdad.toml",
         "--state-dir", tmp_path / "state"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert f"config file: {etc / 'lambdad/lambdad.toml'}" in check.stdout

    key = etc / "lambdad" / "api-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) >= 32
    for path in ("share/man/man1/lambdactl.1", "share/man/man8/lambdad.8",
                 "share/bash-completion/completions/lambdactl",
                 "share/zsh/site-functions/_lambdactl", "share/doc/lambda/operations.md",
                 "lib/sysusers.d/lambdad.conf"):
        assert (prefix / path).is_file(), path

    unit = prefix / "lib/systemd/system/lambdad.service"
    text = unit.read_text()
    assert f"ExecStart={prefix}/bin/lambdad\n" in text
    assert f"LoadCredential=api-key:{etc}/lambdad/api-key\n" in text
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "MANPATH": str(prefix / "share/man")})
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for lambdad.service: ([\d.]+)", security.stdout)
    assert score and float(score.group(1)) <= 2.5, security.stdout[-2000:]

    # A second install keeps the operator's config and key.
    (etc / "lambdad/lambdad.toml").write_text('domain = "mine.test"\n')
    secret = key.read_text()
    make("install", f"PREFIX={prefix}", f"SYSCONFDIR={etc}")
    assert (etc / "lambdad/lambdad.toml").read_text() == 'domain = "mine.test"\n'
    assert key.read_text() == secret

    make("uninstall", f"PREFIX={prefix}", f"SYSCONFDIR={etc}")
    assert files_under(prefix) == []
    assert sorted(p.name for p in files_under(etc)) == ["api-key", "lambdad.toml"]


def test_destdir_stages_with_final_paths(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    make("install", f"DESTDIR={stage}", "PREFIX=/opt/lambda", "SYSCONFDIR=/etc")
    root = stage / "opt/lambda"
    for script in (root / "lib/lambda/bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert str(stage) not in script.read_text(errors="replace"), script
    assert (root / "lib/lambda/bin/lambdactl").read_text().startswith(
        "#!/opt/lambda/lib/lambda/bin/python")
    assert os.readlink(root / "bin/lambdad") == "../lib/lambda/bin/lambdad"
    assert (stage / "etc/lambdad/lambdad.toml").is_file()
    assert not (stage / "etc/lambdad/api-key").exists()  # secrets are made on the machine
    # The staged interpreter runs the staged package.
    result = subprocess.run([root / "lib/lambda/bin/python", "-m", "lambdad", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "lambdad 0.1.0" in result.stdout
