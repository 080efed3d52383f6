"""Property-based tests of the pure parsers: whatever the input, a clean answer or a
LambdaError, never a crash or an accepted hostile value."""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdad.build import extraction, tarball
from lambdad.errors import InvalidArgument, LambdaError
from lambdad.functions import validate_name
from lambdad.scheduler.cron import validate as validate_cron

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging/runtime/python"))
import contextlib

from lambda_runtime import events

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.text(max_size=80))
def test_names_are_dns_labels_or_refused(name: str) -> None:
    try:
        validate_name(name)
    except InvalidArgument:
        return
    assert 1 <= len(name) <= 63 and name[0] != "-" and name[-1] != "-"
    assert all(c.islower() or c.isdigit() or c == "-" for c in name) and name.isascii()


member_names = st.one_of(
    st.text(alphabet="ab./-_", min_size=1, max_size=30),
    st.sampled_from(["/etc/passwd", "../x", "a/../../b", "./ok.py", "a//b", "..", "."]),
)
kinds = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.FIFOTYPE])


@SETTINGS
@given(st.lists(st.tuples(member_names, kinds, member_names), min_size=1, max_size=8))
def test_tar_validator_never_lets_a_member_escape(members: list[tuple[str, bytes, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "code.tar"
        with tarfile.open(path, "w") as archive:
            for name, kind, link in members:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = link
                archive.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        dest = Path(tmp) / "out"
        try:
            summary = tarball.validate(path)
        except LambdaError:
            return
        # Accepted: it extracts, and everything extracted stays inside the destination.
        extraction.extract(path, dest, summary.format)
        root = str(dest.resolve())
        for found in dest.rglob("*"):
            if found.is_symlink():  # names an existing file or folder of the tree, not a link
                target = os.path.normpath(os.path.join(found.parent, os.readlink(found)))
                assert target.startswith(root + os.sep), (found, target)
                assert os.path.exists(target) and not os.path.islink(target), (found, target)
                assert os.path.realpath(found) == target
            else:
                assert str(found.resolve()).startswith(root + os.sep)


@SETTINGS
@given(st.text(max_size=60), st.sampled_from(["UTC", "Europe/Berlin", "Nowhere/X", ""]))
def test_cron_input_is_validated_without_crashing(cron: str, tz: str) -> None:
    with contextlib.suppress(InvalidArgument):
        validate_cron(cron, tz or "UTC", b"{}", "skip")


header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    path=st.text(alphabet="abc/%20?&=+", max_size=40),
    headers=st.lists(st.tuples(header_names, st.text(max_size=20)), max_size=6),
    body=st.binary(max_size=64),
)
def test_http_event_mapping_is_total(method: str, path: str, headers: list[tuple[str, str]],
                                     body: bytes) -> None:
    target = "/" + path.lstrip("/")
    event = events.http_event(method, target, headers, body, "rid", 0)
    assert event["requestContext"]["http"]["method"] == method
    assert event["rawPath"].startswith("/")
    if body:
        assert "body" in event


@SETTINGS
@given(st.one_of(st.none(), st.integers(), st.text(max_size=20),
                 st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)))
def test_any_handler_result_maps_to_a_response(result: object) -> None:
    status, _headers, body = events.http_response(result)
    assert 100 <= status <= 599 and isinstance(body, bytes)
