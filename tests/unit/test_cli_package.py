"""Packing a function folder: .lambdaignore semantics, symlinks, determinism."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.package import function_name, is_ignored, pack, parse_ignore, walk


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def packed_names(root: Path) -> list[str]:
    return [entry.rel for entry in walk(root)]


def ignored(patterns: str, rel: str, is_dir: bool = False) -> bool:
    return is_ignored(parse_ignore(patterns.splitlines()), rel, is_dir)


@pytest.mark.parametrize(
    ("patterns", "rel", "is_dir", "expected"),
    [
        ("*.pyc", "a.pyc", False, True),
        ("*.pyc", "deep/er/a.pyc", False, True),
        ("*.pyc", "a.py", False, False),
        ("# comment\n\n*.log", "x.log", False, True),
        ("# comment", "# comment", False, False),
        ("\\#hash", "#hash", False, True),
        ("build/", "build", True, True),
        ("build/", "build", False, False),  # dir-only pattern, file of that name stays
        ("build/", "src/build", True, True),
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),  # leading slash anchors
        ("docs/*.md", "docs/a.md", False, True),
        ("docs/*.md", "x/docs/a.md", False, False),  # a middle slash anchors too
        ("docs/*.md", "docs/sub/a.md", False, False),  # * does not cross /
        ("**/tmp", "tmp", True, True),
        ("**/tmp", "a/b/tmp", True, True),
        ("a/**/z", "a/z", False, True),
        ("a/**/z", "a/b/c/z", False, True),
        ("logs/**", "logs/x/y.txt", False, True),
        ("logs/**", "logs", True, False),
        ("data?.csv", "data1.csv", False, True),
        ("data?.csv", "data10.csv", False, False),
        ("[ab].txt", "a.txt", False, True),
        ("[!ab].txt", "a.txt", False, False),
        ("[!ab].txt", "c.txt", False, True),
        ("*.txt\n!keep.txt", "keep.txt", False, False),
        ("*.txt\n!keep.txt", "other.txt", False, True),
        ("!keep.txt\n*.txt", "keep.txt", False, True),  # the last match wins
        ("secret.env   ", "secret.env", False, True),  # trailing spaces dropped
    ],
)
def test_ignore_patterns(patterns: str, rel: str, is_dir: bool, expected: bool) -> None:
    assert ignored(patterns, rel, is_dir) is expected


def test_walk_prunes_ignored_dirs_and_always_skips_git_and_pycache(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "fn",
        {
            "handler.py": "",
            "lambda.toml": 'name = "greet"\n',
            ".lambdaignore": "*.pyc\nbuild/\n!build/keep.txt\n*.toml\n",
            ".git/HEAD": "",
            "__pycache__/handler.cpython-311.pyc": "",
            "pkg/__pycache__/m.pyc": "",
            "pkg/__init__.py": "",
            "pkg/m.pyc": "",
            "build/keep.txt": "",  # its folder is excluded: no way back in, as in git
            "empty/.keep": "",
        },
    )
    (root / "empty/.keep").unlink()
    assert packed_names(root) == [
        ".lambdaignore",
        "empty",
        "handler.py",
        "lambda.toml",  # the manifest is always sent; the daemon reads it
        "pkg",
        "pkg/__init__.py",
    ]


def test_tarball_members_and_headers(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": "def handler(e, c):\n    return e\n"})
    make_tree(root, {"lib/util.py": "X = 1\n"})
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    (root / "handler.py").chmod(0o600)
    os.symlink("lib/util.py", root / "alias.py")
    os.symlink(root / "lib", root / "abs_lib")
    package = pack(root)
    with package.file, tarfile.open(fileobj=package.file, mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        # Files and folders sorted, then the links: each after what it names (lambdad
        # accepts no link to a later member).
        assert list(members) == [
            "handler.py", "lib", "lib/util.py", "run.sh", "abs_lib", "alias.py",
        ]  # fmt: skip
        for m in members.values():
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
            assert not m.name.startswith(("./", "/"))
        assert members["handler.py"].mode == 0o644
        assert members["run.sh"].mode == 0o755
        assert members["lib"].isdir() and members["lib"].mode == 0o755
        assert members["alias.py"].issym() and members["alias.py"].linkname == "lib/util.py"
        assert members["abs_lib"].issym() and members["abs_lib"].linkname == "lib"
        assert members["handler.py"].mtime == int((root / "handler.py").stat().st_mtime)
        extracted = tar.extractfile("handler.py")
        assert extracted is not None and extracted.read().startswith(b"def handler")


def test_size_and_sha256_describe_the_bytes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": "x" * 200_000})
    package = pack(root)
    data = package.file.read()
    package.file.close()
    assert len(data) == package.size
    assert hashlib.sha256(data).hexdigest() == package.sha256
    assert data[:2] == b"\x1f\x8b"


def test_same_folder_same_digest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a", {"handler.py": "print(1)\n", "sub/x.txt": "x"})
    first = pack(root)
    first.file.close()
    copy = tmp_path / "b"
    shutil.copytree(root, copy, copy_function=shutil.copy2)
    for path in [copy, *copy.rglob("*")]:  # copytree keeps file but not all dir mtimes
        src = root / path.relative_to(copy)
        st = src.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(copy / "handler.py", 0o600)  # modes are normalised anyway
    second = pack(copy)
    second.file.close()
    assert second.sha256 == first.sha256
    assert pack(root).sha256 == first.sha256
    os.utime(root / "handler.py", (0, 0))
    assert pack(root).sha256 != first.sha256  # mtimes are kept, so they count


@pytest.mark.parametrize("target", ["../outside.py", "/etc/passwd"])
def test_symlink_leaving_the_folder_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.py").write_text("")
    root = make_tree(tmp_path / "fn", {"handler.py": ""})
    os.symlink(target, root / "link.py")
    with pytest.raises(CliError) as info:
        pack(root)
    assert info.value.code == ExitCode.INVALID
    assert "link.py" in info.value.message and "outside the function folder" in info.value.message


def test_a_link_chain_is_packed_as_links_to_the_final_target(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": "", "lib/util.py": "X = 1\n"})
    os.symlink("lib", root / "vendor")
    os.symlink("vendor/util.py", root / "a.py")  # through a linked folder
    os.symlink("a.py", root / "b.py")  # a link to a link
    package = pack(root)
    with package.file, tarfile.open(fileobj=package.file, mode="r:gz") as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert links == {"a.py": "lib/util.py", "b.py": "lib/util.py", "vendor": "lib"}


def _ignored_target(root: Path) -> None:
    (root / ".lambdaignore").write_text("secret.py\n")
    (root / "secret.py").write_text("")
    os.symlink("secret.py", root / "link.py")


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: os.symlink("missing.py", root / "link.py"),
     "names missing.py, which is not packed"),
    (lambda root: os.symlink(".", root / "link.py"), "points at the function folder itself"),
    (lambda root: _ignored_target(root), "names secret.py, which is not packed"),
])
def test_links_lambdad_would_refuse_are_refused_when_packing(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": ""})
    make(root)
    with pytest.raises(CliError) as info:
        pack(root)
    assert info.value.code == ExitCode.INVALID
    assert "link.py" in info.value.message and message in info.value.message


def test_what_the_packer_sends_lambdad_accepts_and_extracts(tmp_path: Path) -> None:
    from lambdad.build import extraction, tarball

    root = make_tree(tmp_path / "fn", {"handler.py": "", "lib/util.py": "X = 1\n",
                                       "lib/sub/deep.py": ""})
    os.symlink("lib", root / "vendor")
    os.symlink("vendor/util.py", root / "a.py")
    os.symlink("../util.py", root / "lib" / "sub" / "up.py")
    os.symlink("..", root / "lib" / "sub" / "parent")
    package = pack(root)
    archive = tmp_path / "code.tar.gz"
    with package.file:
        archive.write_bytes(package.file.read())
    summary = tarball.validate(archive)
    out = tmp_path / "out"
    extraction.extract(archive, out, summary.format)
    assert (out / "a.py").read_text() == "X = 1\n"
    assert (out / "lib" / "sub" / "up.py").read_text() == "X = 1\n"
    assert (out / "vendor").is_symlink() and (out / "lib" / "sub" / "parent").is_symlink()


def test_ignored_outside_symlink_is_fine(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": "", ".lambdaignore": "link.py\n"})
    os.symlink("/etc/passwd", root / "link.py")
    assert packed_names(root) == [".lambdaignore", "handler.py"]


def test_special_files_are_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "fn", {"handler.py": ""})
    os.mkfifo(root / "pipe")
    with pytest.raises(CliError, match="pipe is not a regular file"):
        pack(root)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CliError) as info:
        pack(tmp_path / "missing")
    assert info.value.code == ExitCode.INVALID


def test_function_name(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "hello-fn", {"handler.py": ""})
    assert function_name(root, None) == "hello-fn"
    (root / "lambda.toml").write_text('name = "greet"\n[scaling]\nmax = 2\n')
    assert function_name(root, None) == "greet"
    assert function_name(root, "explicit") == "explicit"
    (root / "lambda.toml").write_text("name = [")
    with pytest.raises(CliError) as info:
        function_name(root, None)
    assert info.value.code == ExitCode.INVALID and "lambda.toml" in info.value.message
    (root / "lambda.toml").write_text("name = 3\n")
    with pytest.raises(CliError, match="non-empty string"):
        function_name(root, None)


def test_function_name_of_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "greet", {"handler.py": ""})
    monkeypatch.chdir(root)
    assert function_name(Path("."), None) == "greet"


def test_big_file_spools_to_disk(tmp_path: Path) -> None:
    root = tmp_path / "fn"
    root.mkdir()
    (root / "blob.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    package = pack(root)
    with package.file:
        assert package.size > 9 * 1024 * 1024
        assert hashlib.sha256(package.file.read()).hexdigest() == package.sha256
