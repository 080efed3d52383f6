"""A deployer's upload is an attack on the host. requirements.txt: encodings, line
separators, pip options, URLs and paths, each refused before pip runs, with the bad line
named, no host file's content in the output and nothing left in the state folder. The
archive: header bombs that claim gigabytes of extended header, refused while the daemon's
memory stays flat; symlink chains and duplicate members that would make lambdad (root on
the host) read or write a host file. The image: labels that are lambdad's own.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import archives
from tests.support.daemon import ROOT, Lambdad, wait_for

PASSWD_MARKERS = ("root:x:0:0", "/bin/bash", "/usr/sbin/nologin", "daemon:x:")


def _case(text: str, line: int) -> tuple[bytes, int]:
    return text.encode(), line


SEPARATORS = {
    "U+2028": "\u2028", "U+2029": "\u2029", "NEL U+0085": "\x85", "VT": "\v", "FF": "\f",
    "lone CR": "\r", "FS": "\x1c", "GS": "\x1d", "RS": "\x1e",
}

OPTION_LINES = [
    "-r /etc/passwd", "-r/etc/passwd", "--requirement=/etc/passwd",
    "--requirement /etc/passwd", "-c /etc/passwd", "--constraint=/etc/passwd", "-e .",
    "--editable=.", "-i http://127.0.0.1:9/simple", "--index-url=http://127.0.0.1:9/simple",
    "--extra-index-url http://127.0.0.1:9/simple", "-f .", "--find-links=.",
    "--no-binary :all:", "--no-binary=:all:", "--only-binary=:none:", "--pre",
    "--trusted-host 127.0.0.1", "--use-feature=truststore", "--no-index", "--prefer-binary",
    "lambdahelper --hash=sha256:" + "0" * 64,
    "lambdahelper --config-settings=editable_mode=compat",
    "lambdahelper --install-option=--prefix=/tmp", "lambdahelper --global-option=--quiet",
    "lambdahelper -r /etc/passwd",
]

CORPUS: dict[str, tuple[bytes, int]] = {
    # The reported attack: pip honours a PEP 263 coding line; +ICg- is U+2028 in UTF-7.
    "utf-7 coding line hides -r": _case(
        "# -*- coding: utf-7 -*-\nlambdahelper\n# +ICg--r /etc/passwd\n", 1),
    "utf-7 coding line, sdist trick": _case(
        "# vim: set fileencoding=utf-7 :\nlambdahelper  # +ICg---no-binary :all: "
        "--find-links .\n", 1),
    "BOM": (b"\xef\xbb\xbflambdahelper\n", 1),
    "UTF-16 with BOM": ("lambdahelper\n-r /etc/passwd\n".encode("utf-16"), 1),
    "UTF-16-LE without BOM": ("lambdahelper\n".encode("utf-16-le"), 1),
    "latin-1 bytes": ("lambdahelper\n# caf\u00e9\n".encode("latin-1"), 2),
    "overlong UTF-8 slash": (b"lambdahelper\n-r \xc0\xafetc\xc0\xafpasswd\n", 2),
    "NUL": (b"lambdahelper\n\x00-r /etc/passwd\n", 2),
    "pkg @ file URL": _case("lambdahelper\npkg @ file:///etc/passwd\n", 2),
    "pkg@file no spaces": _case("pkg@file:///etc/passwd\n", 1),
    "relative wheel": _case("./x.whl\n", 1),
    "absolute wheel": _case("/abs/x.whl\n", 1),
    "bare wheel file name": _case("lambdahelper-1.2.3-py3-none-any.whl\n", 1),
    "sdist file name": _case("evil.tar.gz\n", 1),
    "git URL": _case("git+https://127.0.0.1:9/x.git\n", 1),
    "https URL": _case("https://127.0.0.1:9/x.whl\n", 1),
    "backslash continuation": _case("lambdahelper \\\n-r /etc/passwd\n", 1),
    "env var": _case("${HOME}\n", 1),
    "env var in a marker": _case("lambdahelper; os_name == '${HOME}'\n", 1),
    "arbitrary equality with a path": _case("lambdahelper===/etc/passwd\n", 1),
}
for label, sep in SEPARATORS.items():
    CORPUS[f"{label} in a requirement"] = _case(f"lambdahelper\nsix{sep}-r /etc/passwd\n", 2)
    CORPUS[f"{label} in a comment"] = _case(f"# fine{sep}-r /etc/passwd\nlambdahelper\n", 1)
for option in OPTION_LINES:
    CORPUS[f"option {option[:40]}"] = _case(f"lambdahelper\n{option}\n", 2)


def _state_files(daemon: Lambdad, name: str) -> set[str]:
    """Every file in the state folder but the daemon's own log and database, and what
    earlier tests' instances change meanwhile: instance and cell folders, other logs."""
    skip = {"lambdad.log", "lambda.db", "lambda.db-wal", "lambda.db-shm"}
    found = set()
    for path in daemon.state_dir.rglob("*"):
        relative = path.relative_to(daemon.state_dir)
        top = relative.parts[0]
        if path.name in skip or top in ("i", "c") or (
                top == "logs" and len(relative.parts) > 1 and relative.parts[1] != name):
            continue
        found.add(str(relative))
    return found


@pytest.mark.parametrize("content,line", CORPUS.values(), ids=list(CORPUS))
def test_hostile_requirements_are_refused_naming_the_line(
    lambdad: Lambdad, tmp_path: Path, content: bytes, line: int
) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(e, c):\n    return 1\n")
    (folder / "requirements.txt").write_bytes(content)
    before = _state_files(lambdad, "reqattack")
    result = lambdad.cli("deploy", str(folder), "--name", "reqattack")
    output = result.stdout + result.stderr
    assert result.code == 5, output
    assert f"requirements.txt line {line}:" in result.stderr, result.stderr
    assert not any(marker in output for marker in PASSWD_MARKERS), output
    assert not any(marker in lambdad.log() for marker in PASSWD_MARKERS)
    assert "Traceback" not in output
    assert _state_files(lambdad, "reqattack") == before
    assert lambdad.images("reqattack") == []
    assert lambdad.cli("get", "reqattack").code == 4


def test_plain_requirements_with_crlf_comments_and_markers_install(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import lambdahelper\n\ndef handler(e, c):\n    return lambdahelper.shout('ok')\n")
    (folder / "requirements.txt").write_bytes(
        b"# -*- coding: utf-8 -*-\r\n# deps \xe2\x80\x94 pinned\r\n\r\n"
        b"LambdaHelper == 1.2.3 ; python_version >= '3'  # the shouter\r\n"
        b"lambdahelper[extra-stuff]>=1.0,<2\r\n")
    lambdad.deploy(folder, "--name", "reqok")
    result = lambdad.cli("invoke", "reqok")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == "OK!"


# Tar header bombs. lambdactl only packs folders, so the attacker's client is lambdactl with
# its packer swapped for the bomb: the real CLI's upload, error mapping and exit code.

_CLI_WITH_BOMB = """
import hashlib, sys
from pathlib import Path
import lambdactl.package as package
from lambdactl.main import main
bomb = Path(sys.argv[1])
def pack(root):
    data = bomb.read_bytes()
    return package.Package(open(bomb, "rb"), len(data), hashlib.sha256(data).hexdigest(), 2)
package.pack = pack
sys.exit(main(["deploy", sys.argv[2], "--name", sys.argv[3]]))
"""


def _bomb(path: Path, kind: bytes, size: int = 400 * 1024 * 1024) -> Path:
    """A gzip tar whose first record claims `size` bytes of GNU long name or PAX header.

    Written as many gzip members (one compressed MiB, repeated): the same stream to a
    reader, made in no time."""
    header = tarfile.TarInfo("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "p")
    header.type = kind
    header.size = size
    handler = b"def handler(e, c):\n    return 1\n"
    info = tarfile.TarInfo("handler.py")
    info.size = len(handler)
    mib = gzip.compress(b"a" * (1 << 20), mtime=0)
    with path.open("wb") as out:
        out.write(gzip.compress(header.tobuf(
            format=tarfile.GNU_FORMAT if kind == tarfile.GNUTYPE_LONGNAME
            else tarfile.USTAR_FORMAT), mtime=0))
        for _ in range(size >> 20):
            out.write(mib)
        out.write(gzip.compress(info.tobuf() + handler.ljust(512, b"\0") + bytes(1024),
                                mtime=0))
    return path


def _peak_rss_kib(daemon: Lambdad) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmHWM:")))


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE],
                         ids=["gnu-longname", "pax"])
def test_tar_header_bomb_is_refused_with_the_daemons_memory_flat(
    lambdad: Lambdad, tmp_path: Path, kind: bytes
) -> None:
    bomb = _bomb(tmp_path / "bomb.tar.gz", kind)
    assert bomb.stat().st_size < 1024 * 1024  # about 408 KB, as reported
    folder = tmp_path / "fn"
    folder.mkdir()
    before_files = _state_files(lambdad, "tarbomb")
    before_peak = _peak_rss_kib(lambdad)
    done = subprocess.run([sys.executable, "-c", _CLI_WITH_BOMB, str(bomb), str(folder),
                           "tarbomb"], env=lambdad.env(), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "archive has an extended header" in done.stderr
    assert "the limit is 64 KiB" in done.stderr
    # The old validator took the daemon from about 100 MiB to 845 MiB here.
    assert _peak_rss_kib(lambdad) - before_peak < 64 * 1024
    assert _state_files(lambdad, "tarbomb") == before_files
    assert lambdad.images("tarbomb") == []
    assert lambdad.cli("get", "tarbomb").code == 4


# Symlink chains and duplicate members (attack/attacks/deploy_symlink_escape.py). Judged one
# at a time, each link stayed inside, yet afterwards `requirements.txt` or a second
# `Dockerfile` was a host file: lambdad read it (and echoed its first line in the deploy
# error, or pip did) or appended its LABEL line to it.

def _deploy_archive(daemon: Lambdad, archive: Path, folder: Path, name: str
                    ) -> subprocess.CompletedProcess[str]:
    folder.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", _CLI_WITH_BOMB, str(archive), str(folder), name],
                          env=daemon.env(), capture_output=True, text=True, timeout=180, cwd=ROOT)


def _secret_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if len(line.strip()) >= 4]


@pytest.mark.parametrize("target", ["/etc/shadow", "api-key"])
def test_a_symlink_chain_cannot_make_lambdad_read_a_host_file(
    lambdad: Lambdad, tmp_path: Path, target: str
) -> None:
    secret = lambdad.key_file if target == "api-key" else Path(target)
    lines = _secret_lines(secret)
    assert lines  # the test runs as root, as lambdad does here: it could read them
    archive = archives.write(tmp_path / "code.tar.gz", [
        ("lambda.toml", b'name = "leak"\nhandler = "app.handler"\n'),
        ("app.py", b"def handler(e, c):\n    return 1\n"),
        *archives.order_trick("requirements.txt", str(secret)),
    ])
    before = _state_files(lambdad, "leak")
    done = _deploy_archive(lambdad, archive, tmp_path / "fn", "leak")
    output = done.stdout + done.stderr
    log = lambdad.log()
    for line in lines:
        assert line not in output and line not in log, \
            "a line of the host file leaked"
    assert done.returncode == 5, output
    assert "archive member 'requirements.txt': symlink" in done.stderr, done.stderr
    assert "is not an earlier file or folder" in done.stderr
    assert "Traceback" not in output
    assert _state_files(lambdad, "leak") == before
    assert lambdad.images("leak") == []
    assert lambdad.cli("get", "leak").code == 4


@pytest.fixture
def victim() -> Iterator[Path]:
    """A root-only host file outside every folder lambdad uses."""
    fd, name = tempfile.mkstemp(prefix="lt-victim-", dir="/tmp")
    os.write(fd, b"do not touch\n")
    os.close(fd)
    path = Path(name)
    path.chmod(0o600)
    yield path
    path.unlink()


def test_a_duplicate_dockerfile_cannot_make_lambdad_append_to_a_host_file(
    lambdad: Lambdad, tmp_path: Path, victim: Path
) -> None:
    before_stat = victim.stat()
    archive = archives.write(tmp_path / "code.tar.gz", [
        ("lambda.toml", b'name = "append"\nruntime = "docker"\n'),
        ("Dockerfile", b"FROM scratch\n"),  # what the validator counted ...
        *archives.order_trick("Dockerfile", str(victim)),  # ... then a link of that name
    ])
    done = _deploy_archive(lambdad, archive, tmp_path / "fn", "append")
    assert victim.read_bytes() == b"do not touch\n"
    assert victim.stat().st_mtime_ns == before_stat.st_mtime_ns
    assert done.returncode == 5, done.stdout + done.stderr
    assert "archive member 'Dockerfile': 'Dockerfile' is in the archive more than once" \
        in done.stderr, done.stderr
    assert lambdad.images("append") == []
    assert lambdad.cli("get", "append").code == 4


# lambda.* labels are lambdad's: instances inherit their image's labels, and reconcile reads
# lambda.cell and lambda.cleanup back (a cell is never adopted, a cleanup container removed).

def test_an_image_carrying_lambdads_own_labels_is_refused(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    folder = tmp_path / "labelled"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(e, c):\n    return 1\n")
    (folder / "Dockerfile").write_text(
        "FROM lambda-runtime/python:3.11\n"
        'LABEL lambda.cell="small" lambda.cleanup="1" lambda.note="x"\n'
        "COPY handler.py /var/task/handler.py\n")
    result = lambdad.cli("deploy", str(folder), "--name", "labelled")
    assert result.code == 5, result.stderr
    assert "the image carries label(s) lambda.cell, lambda.cleanup, lambda.note" \
        in result.stderr, result.stderr
    assert lambdad.images("labelled") == []
    assert wait_for(lambda: lambdad.containers("labelled") == [], 10)
    assert lambdad.cli("get", "labelled").code == 4
