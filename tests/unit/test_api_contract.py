"""The names both ends of the control API share, derived from the proto's enum."""

from __future__ import annotations

from lambdad.api.contract import function_status, function_status_name
from lambdad.api.v1 import functions_pb2 as pb


def test_every_status_lambdad_sends_is_named_back_by_the_cli() -> None:
    for name in ("ready", "idle", "deploying"):
        assert function_status_name(function_status(name)) == name
    assert function_status("ready") == pb.FUNCTION_STATUS_READY


def test_a_status_the_cli_does_not_know_is_unknown() -> None:
    assert function_status_name(pb.FUNCTION_STATUS_UNSPECIFIED) == "unknown"
    assert function_status_name(99) == "unknown"
