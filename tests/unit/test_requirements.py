"""requirements.txt parsing: plain requirements become pip arguments, everything else is
refused naming its line (the bytes, the line breaks, pip's options, URLs and paths)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement

from lambdad.build.requirements import MAX_REQUIREMENTS, parse_requirements
from lambdad.errors import InvalidArgument, LambdaError, PayloadTooLarge


def test_plain_requirements_become_normalized_strings() -> None:
    data = (
        b"# deps\nrequests==2.31.0\nsix\nattrs>=22,<24  # pinned\n"
        b"foo[bar]~=1.0; python_version>'3'\n"
        b"  Spaced  [ a , b ]  >=  1.0 ,  != 1.5  \n\t# indented comment\n\n"
    )
    assert parse_requirements(data) == [
        "requests==2.31.0", "six", "attrs<24,>=22", 'foo[bar]~=1.0; python_version > "3"',
        "Spaced[a,b]!=1.5,>=1.0",
    ]


@pytest.mark.parametrize("data", [
    b"six\r\nattrs\r\n", b"six\nattrs", b"six\r\nattrs", b"# -*- coding: utf-8 -*-\nsix\n",
    b"#!/nothing\n# vim: set fileencoding=UTF-8 :\nsix\n", b"# caf\xc3\xa9 \xe2\x80\x94 ok\nsix\n",
    b"six; sys_platform == 'linux' and platform_machine != 'arm64'\n",
    b"six>=1.0.post1,<2.0a1\n", b"six==1.*\n", b"six==1.0+local.1\n", b"six\t# tab comment\n",
])
def test_accepted_shapes(data: bytes) -> None:
    found = parse_requirements(data)
    assert found and all(Requirement(r) for r in found)


def test_blank_and_comment_only_files_have_no_requirements() -> None:
    assert parse_requirements(b"") == []
    assert parse_requirements(b"\n\n# nothing\r\n   \n") == []


BAD_BYTES: list[tuple[bytes, int, str]] = [
    (b"\xef\xbb\xbfsix\n", 1, "byte order mark"),
    ("six\n".encode("utf-16"), 1, "UTF-16 byte order mark"),
    ("six\n".encode("utf-16-be"), 1, "NUL byte"),
    ("six\n".encode("utf-32"), 1, "byte order mark"),
    (b"six\n# caf\xe9\n", 2, "not UTF-8 (byte 0xe9)"),
    (b"six\nsix\n\xc0\xaf\n", 3, "not UTF-8"),
    (b"six\n\xed\xa0\x80\n", 2, "not UTF-8"),  # a UTF-16 surrogate in UTF-8
    (b"six\n\x00\n", 2, "NUL byte"),
    (b"six\x1b[31m\n", 1, "control character U+001B"),
    (b"six\x7f\n", 1, "control character U+007F"),
    (b"six\xc2\x9b\n", 1, "control character U+009B"),
    (b"# -*- coding: utf-7 -*-\nsix\n# +ICg--r /etc/passwd\n", 1, "encoding 'utf-7'"),
    (b"#!x\n# coding=latin-1\nsix\n", 2, "encoding 'latin-1'"),
    (b"# vim: set fileencoding=utf-16 :\nsix\n", 1, "encoding 'utf-16'"),
]
BREAKS = ["\u2028", "\u2029", "\x85", "\v", "\f", "\r", "\x1c", "\x1d", "\x1e"]
for brk in BREAKS:
    BAD_BYTES.append((f"six\nattrs{brk}-r /etc/passwd\n".encode(), 2, "lines must end with"))
    BAD_BYTES.append((f"# x{brk}-r /etc/passwd\n".encode(), 1, "lines must end with"))
    BAD_BYTES.append((f"six\r\n{brk}\r\n".encode(), 2, "lines must end with"))


@pytest.mark.parametrize(("data", "line", "message"), BAD_BYTES,
                         ids=[repr(d[:24]) for d, _, _ in BAD_BYTES])
def test_bad_bytes_and_line_breaks_are_refused(data: bytes, line: int, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_requirements(data)
    assert caught.value.message.startswith(f"requirements.txt line {line}: ")
    assert message in caught.value.message
    assert "passwd" not in caught.value.message  # the hidden part is never echoed


OPTIONS = [
    "-r /etc/passwd", "-r/etc/passwd", "--requirement=/etc/passwd", "--requirement /etc/x",
    "-c /etc/passwd", "--constraint=/etc/passwd", "-e .", "-e git+https://h/x.git",
    "--editable=.", "-i http://h/simple", "--index-url=http://h/simple",
    "--extra-index-url http://h/simple", "-f .", "--find-links=/tmp", "--no-binary :all:",
    "--no-binary=:all:", "--only-binary=:none:", "--pre", "--trusted-host h",
    "--use-feature=truststore", "--no-index", "--prefer-binary", "--require-hashes",
    "six --hash=sha256:" + "0" * 64, "six --hash sha256:00", "six --config-settings=a=b",
    "six -C a=b", "six --install-option=--prefix=/tmp", "six --global-option=x",
    "six\t--no-binary=:all:", "six -r /etc/passwd", "-Z", "--", "-",
]
PATHS_AND_URLS = [
    ("pkg @ file:///etc/passwd", "URLs"), ("pkg@file:///etc/passwd", "URLs"),
    ("pkg @ https://h/x.whl", "URLs"), ("./x.whl", "not a requirement"),
    ("/abs/x.whl", "not a requirement"), ("../up", "not a requirement"),
    ("x.whl", "file name"), ("evil-1.0-py3-none-any.whl", "file name"),
    ("evil.tar.gz", "file name"), ("evil.zip", "file name"), ("evil.tgz", "file name"),
    ("six==1.0+x.whl", "file name"), ("six==1+x.tar.gz", "file name"),
    ("evil.tar.bz2", "file name"), ("evil.TAR.XZ", "file name"), ("evil.tar", "file name"),
    ("git+https://h/x.git", "not a requirement"), ("https://h/x.whl", "not a requirement"),
    ("file:///etc/passwd", "not a requirement"), ("C:\\x.whl", "backslash"),
    ("six \\", "backslash"), ("six\\", "backslash"), ("${HOME}", "environment variables"),
    ("six==${V}", "environment variables"), ("six; os_name == '${HOME}'", "environment"),
    ("six===/etc/passwd", "arbitrary equality"), ("six===1.0", "arbitrary equality"),
    ("six==1.0; python_version", "not a requirement"), ("six[", "not a requirement"),
    ("six ==", "not a requirement"), ("~six", "not a requirement"),
    ("six @", "not a requirement"), ("s/ix", "not a requirement"),
]


@pytest.mark.parametrize("line", OPTIONS)
def test_pip_options_are_refused(line: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_requirements(f"six\n{line}\n".encode())
    assert caught.value.message.startswith("requirements.txt line 2: ")
    assert "options" in caught.value.message or "not a requirement" in caught.value.message


@pytest.mark.parametrize(("line", "message"), PATHS_AND_URLS)
def test_urls_paths_continuations_and_variables_are_refused(line: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_requirements(f"# first\n{line}\nattrs\n".encode())
    assert caught.value.message.startswith("requirements.txt line 2: ")
    assert message in caught.value.message


def test_a_refusal_echoes_only_its_own_line() -> None:
    secret = "SECRET-ON-ANOTHER-LINE"
    with pytest.raises(InvalidArgument) as caught:
        parse_requirements(f"# {secret}\nsix\n-r x\n# {secret}\n".encode())
    assert secret not in caught.value.message and "'-r x'" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        parse_requirements(("-r " + "y" * 500 + "\n").encode())
    assert len(caught.value.message) < 400


def test_caps() -> None:
    with pytest.raises(InvalidArgument, match=f"more than {MAX_REQUIREMENTS} packages"):
        parse_requirements("".join(f"p{i}\n" for i in range(MAX_REQUIREMENTS + 1)).encode())
    with pytest.raises(PayloadTooLarge, match="larger than 64 KiB"):
        parse_requirements(b"# " + b"x" * 70_000 + b"\n")
    with pytest.raises(InvalidArgument, match="longer than 1000"):
        parse_requirements(b"six" + b" " * 1000 + b"\n")


# Property: whatever the bytes, either a refusal (a LambdaError naming requirements.txt)
# or a list of strings that pip can only take as plain requirements.

_ALPHABET = st.sampled_from([
    *"abcsix019._-[],<>=!~*+;@:/\\$'\" #\t\r\n{}()%&|", "\u2028", "\x85", "\x00", "\xe9",
    "-r ", "--", " @ ", "file:///", "python_version", "${X}",
])
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
_SAFE_HEAD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~*+]*$")


@SETTINGS
@given(st.lists(_ALPHABET, max_size=60).map("".join),
       st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_any_input_is_refused_or_plain(text: str, encoding: str) -> None:
    data = text.encode(encoding, errors="replace")
    try:
        found = parse_requirements(data)
    except LambdaError as exc:
        assert exc.message.startswith("requirements.txt")
        return
    for requirement in found:
        parsed = Requirement(requirement)
        assert parsed.url is None
        assert not requirement.startswith("-")
        head = requirement.split(";", 1)[0]
        assert _SAFE_HEAD.match(head), requirement
        assert not any(c in requirement for c in "\\\n\r\x00\u2028\x85")
        assert "${" not in requirement and "===" not in requirement
