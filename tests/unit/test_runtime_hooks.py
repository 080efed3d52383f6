"""Runtime hooks (snapshot_restore_py, Lambda SnapStart's API) in memory: the registry, the
order and arguments the runtime calls them with, how their failures are reported, and where
their time shows (the /init answer, REPORT, Server-Timing). The zygote and workers running
them for real: tests/e2e/test_runtime_hooks.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdad.gateway.client import _server_timing
from lambdad.runtime.invocation import InvocationResponse
from lambdad.runtime.readiness import hooks_duration, init_duration

sys.path.insert(0, str(Path(__file__).parents[2] / "packaging" / "runtime" / "python"))

import snapshot_restore_py as hooks
from lambda_runtime import logs
from lambda_runtime.supervisor import hooks_duration as claimed_hooks
from lambda_runtime.worker import (
    LOAD_ERRORS,
    HandlerLoadError,
    run_after_restore,
    run_before_snapshot,
)


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    hooks.get_before_snapshot().clear()
    hooks.get_after_restore().clear()
    yield
    hooks.get_before_snapshot().clear()
    hooks.get_after_restore().clear()


def test_the_api_is_lambdas_functions_and_decorators_that_return_the_function() -> None:
    def one() -> int:
        return 1

    assert hooks.register_before_snapshot(one) is one
    decorated = hooks.register_after_restore(one)
    assert decorated is one and decorated() == 1
    assert hooks.register_after_restore(print, 2, arg1="Lambda") is print
    assert hooks.get_before_snapshot() == [(one, (), {})]
    assert hooks.get_after_restore() == [(one, (), {}), (print, (2,), {"arg1": "Lambda"})]


def test_before_snapshot_runs_in_reverse_order_after_restore_in_order_with_their_args() -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def record(name: str) -> Any:
        return lambda *args, **kwargs: calls.append((name, args, kwargs))

    hooks.register_before_snapshot(record("b1"))
    hooks.register_before_snapshot(record("b2"), 1, 2, key="v")
    hooks.register_after_restore(record("a1"), "x")
    hooks.register_after_restore(record("a2"))
    assert run_before_snapshot() == 2
    assert calls == [("b2", (1, 2), {"key": "v"}), ("b1", (), {})]
    calls.clear()
    assert run_after_restore() == 2
    assert calls == [("a1", ("x",), {}), ("a2", (), {})]


def test_without_the_module_imported_no_hook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    hooks.register_before_snapshot(lambda: ran.append(1))
    monkeypatch.delitem(sys.modules, "snapshot_restore_py")
    assert run_before_snapshot() == 0 and run_after_restore() == 0
    assert ran == []


def test_a_failing_before_snapshot_hook_is_an_init_error_and_stops_the_rest() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ConnectionError("no database")

    hooks.register_before_snapshot(lambda: ran.append("first registered"))
    hooks.register_before_snapshot(broken)
    with pytest.raises(HandlerLoadError) as failed:
        run_before_snapshot()
    assert failed.value.error_type == "Runtime.BeforeSnapshotError"
    assert failed.value.error_type in LOAD_ERRORS  # the supervisor reports it as such
    assert "before-snapshot hook" in failed.value.message
    assert "broken" in failed.value.message and "ConnectionError: no database" in (
        failed.value.message)
    assert isinstance(failed.value.__cause__, ConnectionError)
    assert ran == []  # the later-registered hook ran first and failed: the init is over


def test_a_hook_that_exits_fails_too_and_after_restore_has_its_own_type() -> None:
    hooks.register_before_snapshot(sys.exit, 3)
    with pytest.raises(HandlerLoadError) as failed:
        run_before_snapshot()
    assert failed.value.error_type == "Runtime.BeforeSnapshotError"
    hooks.register_after_restore(int, "not a number")
    with pytest.raises(HandlerLoadError) as restore:
        run_after_restore()
    assert restore.value.error_type == "Runtime.AfterRestoreError"
    assert "after-restore hook 'int' failed: ValueError" in restore.value.message


def test_a_registry_of_the_wrong_shape_is_the_functions_error(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "get_before_snapshot", lambda: [print])
    with pytest.raises(HandlerLoadError) as failed:
        run_before_snapshot()
    assert failed.value.error_type == "Runtime.BeforeSnapshotError"
    assert "cannot read the before-snapshot hooks" in failed.value.message


@pytest.mark.parametrize(("claimed", "expected"), [
    (40.5, 40.5), (0, 0.0), (None, 0.0), ("12", 0.0), (True, 0.0), (-1, 0.0),
    (float("nan"), 0.0), (5000.0, 100.0),  # never more than the init the supervisor timed
])
def test_the_zygotes_hook_time_is_bounded_by_the_supervisors_clock(
    claimed: object, expected: float
) -> None:
    assert claimed_hooks(claimed, 100.0) == expected


def test_the_first_report_says_the_hooks_share_of_init() -> None:
    end = logs.end_lines("req-h", 1_000_000, 128, 30, 512.5, "cell", 40.25).decode()
    assert ("\tInit Duration: 512.50 ms\tBefore Snapshot Duration: 40.25 ms\tStart: cell\n"
            in end)
    assert "Before Snapshot" not in logs.end_lines("req-h", 1_000_000, 128, 30, 512.5).decode()
    assert "Before Snapshot" not in logs.end_lines("req-h", 1_000_000, 128, 30).decode()


@pytest.mark.parametrize(("reply", "loaded", "hooks_ms"), [
    (b'{"initDurationMs": 700.5, "hooksDurationMs": 40.25}', 700.5, 40.25),
    (b'{"initDurationMs": 700.5}', 700.5, 0.0),  # no hooks, or an older runtime image
    (b'{"initDurationMs": 700.5, "hooksDurationMs": "40"}', 700.5, 0.0),
    (b'{"initDurationMs": 700.5, "hooksDurationMs": NaN}', 700.5, 0.0),
])
def test_the_init_answer_splits_the_import_from_the_hooks(
    reply: bytes, loaded: float, hooks_ms: float
) -> None:
    assert init_duration(reply) == loaded
    assert hooks_duration(reply) == hooks_ms


def test_server_timing_shows_the_hooks_after_the_import_within_init() -> None:
    response = InvocationResponse(status=200, headers=[], version=1, cold_start=True,
                                  function_ms=2.0, init_ms=780.0, import_ms=700.0,
                                  hooks_ms=40.25)
    assert _server_timing(790.0, response) == (
        b"gateway;dur=8.00, function;dur=2.00, init;dur=780.00, import;dur=700.00, "
        b"hooks;dur=40.25")
    response.hooks_ms = 500.0  # two clocks: import plus hooks never exceed init
    assert _server_timing(790.0, response).endswith(b"import;dur=700.00, hooks;dur=80.00")
    response.hooks_ms = 0.0
    assert _server_timing(790.0, response).endswith(b"import;dur=700.00")
